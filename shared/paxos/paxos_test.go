package paxos

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	bpb "shoal/proto/blockstorepb"
	"shoal/shared/block"
)

// memStore is an in-memory Storage for unit tests.
type memStore struct {
	mu   sync.Mutex
	recs map[block.Address][]byte
}

func (m *memStore) Load(a block.Address) (*bpb.AcceptorRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.recs[a]
	if !ok {
		return nil, nil
	}
	rec := &bpb.AcceptorRecord{}
	return rec, proto.Unmarshal(b, rec)
}

func (m *memStore) Sync() error { return nil }

func (m *memStore) Store(a block.Address, rec *bpb.AcceptorRecord) error {
	b, err := proto.Marshal(rec)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[a] = b
	return nil
}

var errDown = errors.New("test: node down")

// memNet routes proposer calls to in-memory acceptors; nodes can be taken
// down, and a hook can intercept accepts.
type memNet struct {
	mu        sync.Mutex
	acc       map[string]*Acceptor
	down      map[string]bool
	onAccept  func(node string) error
	onPrepare func(node string) error
	onLearn   func(node string) error
	// onAcceptReq, if set, is asked before onAccept, with the request.
	onAcceptReq func(node string, req *bpb.AcceptRequest) error
	hung        map[string]bool // Peek never answers
}

func newNet(nodes ...string) *memNet {
	n := &memNet{acc: map[string]*Acceptor{}, down: map[string]bool{}}
	for _, id := range nodes {
		n.acc[id] = NewAcceptor(&memStore{recs: map[block.Address][]byte{}}, 1<<20)
	}
	return n
}

func (n *memNet) get(node string) (*Acceptor, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down[node] || n.acc[node] == nil {
		return nil, errDown
	}
	return n.acc[node], nil
}

func (n *memNet) hook(f func(string) error) {
	n.mu.Lock()
	n.onAccept = f
	n.mu.Unlock()
}

func (n *memNet) setDown(node string, down bool) {
	n.mu.Lock()
	n.down[node] = down
	n.mu.Unlock()
}

func (n *memNet) Prepare(_ context.Context, node string, req *bpb.PrepareRequest) (*bpb.PrepareResponse, error) {
	a, err := n.get(node)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	hook := n.onPrepare
	n.mu.Unlock()
	if hook != nil {
		if err := hook(node); err != nil {
			return nil, err
		}
	}
	return a.Prepare(proto.Clone(req).(*bpb.PrepareRequest))
}

func (n *memNet) Accept(_ context.Context, node string, req *bpb.AcceptRequest) (*bpb.AcceptResponse, error) {
	a, err := n.get(node)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	hook, reqHook := n.onAccept, n.onAcceptReq
	n.mu.Unlock()
	if reqHook != nil {
		if err := reqHook(node, req); err != nil {
			return nil, err
		}
	}
	if hook != nil {
		if err := hook(node); err != nil {
			return nil, err
		}
	}
	return a.Accept(proto.Clone(req).(*bpb.AcceptRequest))
}

func (n *memNet) Learn(_ context.Context, node string, req *bpb.LearnRequest) error {
	a, err := n.get(node)
	if err != nil {
		return err
	}
	n.mu.Lock()
	hook := n.onLearn
	n.mu.Unlock()
	if hook != nil {
		if err := hook(node); err != nil {
			return err
		}
	}
	return a.Learn(proto.Clone(req).(*bpb.LearnRequest))
}

func (n *memNet) Peek(ctx context.Context, node string, req *bpb.PeekRequest) (*bpb.PeekResponse, error) {
	a, err := n.get(node)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	hung := n.hung[node]
	n.mu.Unlock()
	if hung {
		// A paused process: no answer until the caller gives up.
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return a.Peek(req)
}

type key struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newKey(t testing.TB) key {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return key{pub, priv}
}

func genesis(k key, salt string, payload []byte) *bpb.MutableState {
	a := block.MutableAddress(k.pub, []byte(salt))
	st := &bpb.MutableState{Address: a[:], Owner: k.pub, Derivation: []byte(salt), Version: 1, Payload: payload}
	block.Sign(st, k.priv)
	return st
}

// next returns a Change that writes payload as the next version.
func next(k key, payload []byte) Change {
	return func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil {
			return nil, block.ErrNotFound
		}
		st := proto.Clone(cur).(*bpb.MutableState)
		st.Version++
		st.Payload = payload
		block.Sign(st, k.priv)
		return st, nil
	}
}

func create(st *bpb.MutableState) Change {
	return func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur != nil {
			return nil, errors.New("exists")
		}
		return st, nil
	}
}

var nodes3 = []string{"a", "b", "c"}

func TestCreateUpdateRead(t *testing.T) {
	net := newNet(nodes3...)
	k := newKey(t)
	p := NewProposer("p1", net)
	ctx := context.Background()
	g := genesis(k, "s1", []byte("v1"))
	addr, _ := block.FromBytes(g.Address)
	if _, err := p.Propose(ctx, addr, nodes3, create(g)); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 5; i++ {
		st, err := p.Propose(ctx, addr, nodes3, next(k, fmt.Appendf(nil, "v%d", i)))
		if err != nil || st.Version != uint64(i) {
			t.Fatalf("update %d: %v %v", i, st, err)
		}
	}
	// Another proposer reads the latest version.
	st, err := NewProposer("p2", net).Read(ctx, addr, nodes3)
	if err != nil || string(st.Payload) != "v5" || st.Version != 5 {
		t.Fatalf("read: %v %v", st, err)
	}
	// One acceptor down: still works.
	net.setDown("b", true)
	if _, err := p.Propose(ctx, addr, nodes3, next(k, []byte("v6"))); err != nil {
		t.Fatal(err)
	}
	net.setDown("c", true)
	_, err = p.Propose(ctx, addr, nodes3, next(k, []byte("v7")))
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("two of three down: %v", err)
	}
	// The update went straight to the accept phase (p decided v6), so v7
	// reached a: the failure is reported as uncertain, and a later round
	// may still choose v7. Without that report, v7 must never appear.
	uncertain := errors.Is(err, ErrIndeterminate)
	net.setDown("b", false)
	net.setDown("c", false)
	st, err = NewProposer("p3", net).Read(ctx, addr, nodes3)
	if err != nil || string(st.Payload) != "v6" && (!uncertain || string(st.Payload) != "v7") {
		t.Fatalf("read after recovery (uncertain=%v): %v %v", uncertain, st, err)
	}
	if _, err := p.Read(ctx, block.Sum([]byte("none")), nodes3); !errors.Is(err, block.ErrNotFound) {
		t.Fatalf("missing block: %v", err)
	}
}

func TestDuellingProposers(t *testing.T) {
	net := newNet(nodes3...)
	k := newKey(t)
	ctx := context.Background()
	g := genesis(k, "duel", []byte("0"))
	addr, _ := block.FromBytes(g.Address)
	if _, err := NewProposer("init", net).Propose(ctx, addr, nodes3, create(g)); err != nil {
		t.Fatal(err)
	}
	// 8 proposers each add 25 increments to a counter: no update is lost and
	// everyone finishes (no livelock).
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := NewProposer(fmt.Sprintf("w%d", w), net)
			for range each {
				_, err := p.Propose(ctx, addr, nodes3, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
					var n int
					_, _ = fmt.Sscan(string(cur.Payload), &n)
					return next(k, fmt.Append(nil, n+1))(cur)
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st, err := NewProposer("r", net).Read(ctx, addr, nodes3)
	if err != nil || string(st.Payload) != fmt.Sprint(writers*each) || st.Version != writers*each+1 {
		t.Fatalf("counter = %s (version %d), want %d: %v", st.GetPayload(), st.GetVersion(), writers*each, err)
	}
}

func TestHalfAcceptedValueRecovered(t *testing.T) {
	net := newNet(nodes3...)
	k := newKey(t)
	ctx := context.Background()
	g := genesis(k, "half", []byte("v1"))
	addr, _ := block.FromBytes(g.Address)
	p1 := NewProposer("p1", net)
	if _, err := p1.Propose(ctx, addr, nodes3, create(g)); err != nil {
		t.Fatal(err)
	}
	// p1's accept of v2 reaches only "a", then p1 dies.
	net.hook(func(node string) error {
		if node != "a" {
			return errDown
		}
		return nil
	})
	if _, err := p1.Propose(ctx, addr, nodes3, next(k, []byte("v2"))); err == nil {
		t.Fatal("accept on one of three acceptors reported success")
	}
	net.hook(nil)
	// p2 prepares on a majority that includes "a": it must carry v2 forward
	// (it is the highest accepted value it sees) before writing v3.
	net.setDown("c", true)
	var sawCur string
	st, err := NewProposer("p2", net).Propose(ctx, addr, nodes3, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		sawCur = string(cur.Payload)
		return next(k, []byte("v3"))(cur)
	})
	if err != nil || sawCur != "v2" || st.Version != 3 {
		t.Fatalf("recovery: saw %q, got %v, %v", sawCur, st, err)
	}
}

func TestRejections(t *testing.T) {
	net := newNet(nodes3...)
	owner, other := newKey(t), newKey(t)
	ctx := context.Background()
	g := genesis(owner, "acl", []byte("v1"))
	addr, _ := block.FromBytes(g.Address)
	p := NewProposer("p", net)
	if _, err := p.Propose(ctx, addr, nodes3, create(g)); err != nil {
		t.Fatal(err)
	}
	// Wrong writer.
	if _, err := p.Propose(ctx, addr, nodes3, next(other, []byte("evil"))); !errors.Is(err, block.ErrBadSignature) {
		t.Fatalf("wrong writer: %v", err)
	}
	// Forged signature.
	forged := func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		st, _ := next(owner, []byte("v2"))(cur)
		st.Payload = []byte("tampered")
		return st, nil
	}
	if _, err := p.Propose(ctx, addr, nodes3, forged); !errors.Is(err, block.ErrBadSignature) {
		t.Fatalf("forged: %v", err)
	}
	// Address not derived from the owner.
	bad := genesis(owner, "x", nil)
	bad.Address = addr[:]
	bad.Derivation = []byte("y")
	block.Sign(bad, owner.priv)
	if _, err := net.acc["a"].Accept(&bpb.AcceptRequest{Ballot: &bpb.Ballot{Round: 1000}, State: withQuorum(bad), Quorum: nodes3}); !errors.Is(err, block.ErrBadDerivation) {
		t.Fatalf("bad derivation: %v", err)
	}
	// Version replay: write v2, v3, then replay v2's signed state at a high ballot.
	v2, err := p.Propose(ctx, addr, nodes3, next(owner, []byte("v2")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Propose(ctx, addr, nodes3, next(owner, []byte("v3"))); err != nil {
		t.Fatal(err)
	}
	// At an acceptor that holds v3 (a majority does; the third may still
	// be at v2, where re-accepting v2 is legitimate Paxos).
	holder := ""
	for _, n := range nodes3 {
		if r, err := net.acc[n].Peek(&bpb.PeekRequest{Address: addr[:]}); err == nil && r.State.GetVersion() == 3 {
			holder = n
		}
	}
	if holder == "" {
		t.Fatal("no acceptor holds v3")
	}
	if _, err := net.acc[holder].Accept(&bpb.AcceptRequest{Ballot: &bpb.Ballot{Round: 1 << 40}, State: v2, Quorum: nodes3}); !errors.Is(err, ErrStaleVersion) {
		t.Fatalf("replay: %v", err)
	}
	// Stale ballot.
	resp, err := net.acc["a"].Prepare(&bpb.PrepareRequest{Address: addr[:], Ballot: &bpb.Ballot{Round: 1}, Quorum: nodes3})
	if err != nil || resp.Outcome != bpb.Outcome_OUTCOME_STALE_BALLOT {
		t.Fatalf("stale prepare: %v %v", resp, err)
	}
	aresp, err := net.acc["a"].Accept(&bpb.AcceptRequest{Ballot: &bpb.Ballot{Round: 1}, State: v2, Quorum: nodes3})
	if err != nil || aresp.Outcome != bpb.Outcome_OUTCOME_STALE_BALLOT {
		t.Fatalf("stale accept: %v %v", aresp, err)
	}
	st, _ := p.Read(ctx, addr, nodes3)
	if string(st.Payload) != "v3" {
		t.Fatalf("after rejections: %q", st.Payload)
	}
}

func withQuorum(st *bpb.MutableState) *bpb.MutableState {
	st.Quorum = nodes3
	return st
}

func TestQuorumChange(t *testing.T) {
	net := newNet("a", "b", "c", "d")
	k := newKey(t)
	ctx := context.Background()
	g := genesis(k, "move", []byte("v1"))
	addr, _ := block.FromBytes(g.Address)
	p := NewProposer("p", net)
	if _, err := p.Propose(ctx, addr, nodes3, create(g)); err != nil {
		t.Fatal(err)
	}
	// "c" dies; the block moves to a, b, d through a decision on the block.
	net.setDown("c", true)
	newSet := []string{"a", "b", "d"}
	st, err := p.Propose(ctx, addr, nodes3, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		n := proto.Clone(cur).(*bpb.MutableState)
		n.Quorum = newSet
		return n, nil
	})
	if err != nil || !SameSet(st.Quorum, newSet) {
		t.Fatalf("move: %v %v", st, err)
	}
	// A client whose view still says a, b, c is redirected and converges.
	stale := NewProposer("stale", net)
	st, err = stale.Propose(ctx, addr, nodes3, next(k, []byte("v2")))
	if err != nil || st.Version != 2 || !SameSet(st.Quorum, newSet) {
		t.Fatalf("stale-view client: %v %v", st, err)
	}
	if stale.Stats.QuorumMoves.Load() == 0 {
		t.Fatal("stale client was not redirected")
	}
	// c comes back with its old state: a client asking only c and a is
	// still sent to the new set and reads the latest version.
	net.setDown("c", false)
	st, err = NewProposer("late", net).Read(ctx, addr, []string{"c", "a", "b"})
	if err != nil || st.Version != 2 {
		t.Fatalf("read via old set: %v %v", st, err)
	}
	// The new member holds the state: with a and b down, d alone is not a
	// majority, but with only b down, a and d suffice.
	net.setDown("b", true)
	if _, err := p.Propose(ctx, addr, newSet, next(k, []byte("v3"))); err != nil {
		t.Fatalf("write on new set with b down: %v", err)
	}
}

// An acceptor may hold a higher version accepted at a lower ballot that
// was never chosen; a proposer whose prepare majority missed it must win at
// a higher ballot instead of failing on the acceptor's version check.
func TestUnchosenHigherVersionIsOvertaken(t *testing.T) {
	net := newNet(nodes3...)
	// The test drives c by hand right after p's rounds, whose accept at c
	// may still be on its way when p returns (it needs two of three):
	// c's round lease would then refuse the hand-made prepare. The lease
	// only orders rounds; this test is about safety.
	for _, a := range net.acc {
		a.RoundLease = 0
	}
	k := newKey(t)
	ctx := context.Background()
	g := genesis(k, "s", []byte("v1"))
	addr, _ := block.FromBytes(g.Address)
	p := NewProposer("p", net)
	if _, err := p.Propose(ctx, addr, nodes3, create(g)); err != nil {
		t.Fatal(err)
	}
	v2, err := p.Propose(ctx, addr, nodes3, next(k, []byte("v2")))
	if err != nil {
		t.Fatal(err)
	}
	// c alone accepts a v4 (built on a v3 that was never chosen) from
	// proposer "0" at a ballot just above v2's.
	v3, _ := next(k, []byte("lost"))(v2)
	lone, _ := next(k, []byte("lone"))(v3)
	b := &bpb.Ballot{Round: p.round.Load() + 1, Proposer: "0"}
	if r, err := net.acc["c"].Prepare(&bpb.PrepareRequest{Address: addr[:], Ballot: b, Quorum: nodes3}); err != nil || r.Outcome != bpb.Outcome_OUTCOME_OK {
		t.Fatalf("prepare at c: %v %v", r, err)
	}
	if r, err := net.acc["c"].Accept(&bpb.AcceptRequest{Ballot: b, State: lone, Quorum: nodes3}); err != nil || r.Outcome != bpb.Outcome_OUTCOME_OK {
		t.Fatalf("accept at c: %v %v", r, err)
	}
	// p's next prepare misses c, and b loses the first accept: p's v3
	// reaches a only, and c answers that it holds a newer version.
	net.mu.Lock()
	net.onPrepare = func(node string) error {
		if node == "c" {
			return errDown
		}
		return nil
	}
	net.mu.Unlock()
	var once sync.Once
	net.hook(func(node string) error {
		var err error
		if node == "b" {
			once.Do(func() { err = errDown })
		}
		return err
	})
	st, err := p.Propose(ctx, addr, nodes3, next(k, []byte("v3")))
	t.Logf("rounds %d conflicts %d err %v", p.Stats.Rounds.Load(), p.Stats.Conflicts.Load(), err)
	if err != nil {
		t.Fatalf("update with an unchosen newer version at c: %v", err)
	}
	if st.Version != 3 || string(st.Payload) != "v3" {
		t.Fatalf("decided %d %q, want 3 \"v3\"", st.Version, st.Payload)
	}
	got, err := NewProposer("r", net).Read(ctx, addr, nodes3)
	if err != nil || string(got.Payload) != "v3" {
		t.Fatalf("read after: %v %v", got, err)
	}
}

// A read asks a bare majority first; when one of those acceptors hangs
// (a paused process), the read still completes by asking the others.
func TestReadAroundHungAcceptor(t *testing.T) {
	net := newNet(nodes3...)
	k := newKey(t)
	ctx := context.Background()
	g := genesis(k, "h", []byte("v1"))
	addr, _ := block.FromBytes(g.Address)
	p := NewProposer("p", net)
	if _, err := p.Propose(ctx, addr, nodes3, create(g)); err != nil {
		t.Fatal(err)
	}
	for _, hung := range nodes3 {
		net.mu.Lock()
		net.hung = map[string]bool{hung: true}
		net.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := NewProposer("r", net).Read(rctx, addr, nodes3)
		cancel()
		if err != nil || string(st.Payload) != "v1" {
			t.Fatalf("read with %s hung: %v %v", hung, st, err)
		}
	}
}

// A proposer's consecutive changes to one block skip the prepare phase;
// another proposer in between makes the next one fall back to a full
// round, and every change still lands exactly once.
func TestFastPathAndFallback(t *testing.T) {
	net := newNet(nodes3...)
	k := newKey(t)
	ctx := context.Background()
	g := genesis(k, "f", []byte("0"))
	addr, _ := block.FromBytes(g.Address)
	p, q := NewProposer("p", net), NewProposer("q", net)
	if _, err := p.Propose(ctx, addr, nodes3, create(g)); err != nil {
		t.Fatal(err)
	}
	var prepares atomic.Int64
	net.mu.Lock()
	net.onPrepare = func(string) error { prepares.Add(1); return nil }
	net.mu.Unlock()
	for i := 1; i <= 5; i++ {
		if _, err := p.Propose(ctx, addr, nodes3, next(k, fmt.Appendf(nil, "p%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := prepares.Load(); n != 0 || p.Stats.FastRounds.Load() != 5 {
		t.Fatalf("5 consecutive updates sent %d prepares, %d fast rounds", n, p.Stats.FastRounds.Load())
	}
	if _, err := q.Propose(ctx, addr, nodes3, next(k, []byte("q"))); err != nil {
		t.Fatal(err)
	}
	// p's promised ballot is now below q's: its next change must not
	// land on the stale state it holds.
	st, err := p.Propose(ctx, addr, nodes3, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		return next(k, append(append([]byte(nil), cur.Payload...), '+'))(cur)
	})
	if err != nil || string(st.Payload) != "q+" || st.Version != 8 {
		t.Fatalf("after another proposer: %q v%d %v", st.Payload, st.Version, err)
	}
	got, err := NewProposer("r", net).Read(ctx, addr, nodes3)
	if err != nil || string(got.Payload) != "q+" {
		t.Fatalf("read: %v %v", got, err)
	}
}
