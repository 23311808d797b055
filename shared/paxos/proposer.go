package paxos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bpb "shoal/proto/blockstorepb"
	"shoal/shared/block"
)

var (
	// ErrNoQuorum means too few acceptors answered.
	ErrNoQuorum = errors.New("paxos: acceptor quorum not reached")
	// ErrContended means the round limit was reached under contention.
	ErrContended = errors.New("paxos: too much contention, gave up")
	// ErrIndeterminate wraps an error returned after an earlier round of
	// the same proposal reached some acceptors: that earlier value may
	// still be chosen later, so the caller cannot assume nothing changed.
	ErrIndeterminate = errors.New("paxos: outcome unknown, an earlier attempt may take effect")
)

// Transport reaches one acceptor by node id.
type Transport interface {
	Prepare(ctx context.Context, node string, req *bpb.PrepareRequest) (*bpb.PrepareResponse, error)
	Accept(ctx context.Context, node string, req *bpb.AcceptRequest) (*bpb.AcceptResponse, error)
	Learn(ctx context.Context, node string, req *bpb.LearnRequest) error
	Peek(ctx context.Context, node string, req *bpb.PeekRequest) (*bpb.PeekResponse, error)
}

// Change computes the next state from the current one (nil: the block has
// no decided state). Returning cur itself re-decides it unchanged (a read).
type Change func(cur *bpb.MutableState) (*bpb.MutableState, error)

// Stats counts what proposals cost, for benchmarks and tests.
type Stats struct {
	Rounds, Conflicts, QuorumMoves atomic.Int64
	// PrepareNanos and AcceptNanos add up the time spent in each phase.
	PrepareNanos, AcceptNanos atomic.Int64
	// FastRounds counts proposals that skipped the prepare phase.
	FastRounds atomic.Int64
}

// Proposer proposes changes to blocks.
type Proposer struct {
	id    string
	t     Transport
	round atomic.Uint64
	// MaxRounds bounds retries of one proposal under contention.
	MaxRounds int
	Stats     Stats

	mu      sync.Mutex
	quorums map[block.Address][]string // last known acceptor set per block
	// fast holds, per block this proposer last decided, a ballot a
	// majority has already promised and the state they hold: the next
	// change can go straight to the accept phase. An entry is taken by one
	// proposal only, so a reserved ballot never carries two values.
	fast map[block.Address]*fastEntry
}

type fastEntry struct {
	ballot *bpb.Ballot
	state  *bpb.MutableState
}

func (p *Proposer) takeFast(addr block.Address) *fastEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.fast[addr]
	delete(p.fast, addr)
	return e
}

func (p *Proposer) putFast(addr block.Address, e *fastEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.fast) > 100_000 {
		clear(p.fast)
	}
	p.fast[addr] = e
}

// NewProposer returns a proposer with a unique id.
func NewProposer(id string, t Transport) *Proposer {
	return &Proposer{id: id, t: t, MaxRounds: 200, quorums: map[block.Address][]string{}, fast: map[block.Address]*fastEntry{}}
}

func (p *Proposer) ballot(atLeast uint64) *bpb.Ballot {
	for {
		cur := p.round.Load()
		next := max(cur, atLeast) + 1
		if p.round.CompareAndSwap(cur, next) {
			return &bpb.Ballot{Round: next, Proposer: p.id}
		}
	}
}

// Quorum returns the acceptor set to use for addr: the one learned from the
// block itself if any, else guess (computed from the placement view).
func (p *Proposer) Quorum(addr block.Address, guess []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if q, ok := p.quorums[addr]; ok {
		return q
	}
	return guess
}

func (p *Proposer) remember(addr block.Address, q []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.quorums) > 100_000 {
		clear(p.quorums)
	}
	p.quorums[addr] = slices.Clone(q)
}

func majority(n int) int { return n/2 + 1 }

// maxRecentOps bounds the op ids a state carries: enough to cover the
// proposals that can race one retry.
const maxRecentOps = 256

func (p *Proposer) opID() uint64 { return rand.Uint64() | 1 }

// backoff spaces out retries after a conflict: randomized and exponential,
// so duelling proposers of one hot block soon find one of them alone in a
// round. Acceptors hold a short lease for the round in flight (see
// Acceptor), so a retry that comes too early is refused cheaply instead
// of breaking that round; waits can therefore stay short, which keeps a
// writer that lost from falling far behind.
type backoff struct{ d time.Duration }

const maxBackoff = 32 * time.Millisecond

func (b *backoff) wait(ctx context.Context) error {
	if b.d == 0 {
		b.d = 2 * time.Millisecond
	} else if b.d < maxBackoff {
		b.d *= 2
	}
	t := time.NewTimer(time.Duration(rand.Int64N(int64(b.d))) + time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Propose runs Paxos rounds on addr until change's result is decided, and
// returns the decided state. guess is the acceptor set placement computes;
// the block's own set wins when they differ.
func (p *Proposer) Propose(ctx context.Context, addr block.Address, guess []string, change Change) (*bpb.MutableState, error) {
	quorum := p.Quorum(addr, guess)
	var bo backoff
	var seen uint64
	opID := p.opID()
	// lastVersion is the version our latest uncertain accept proposed; once
	// the block has moved more than maxRecentOps versions past it, our id
	// may have been trimmed away and a retry could apply the change twice.
	var lastVersion uint64
	// sent is set once an accept of ours may have reached an acceptor
	// without being decided; from then on a failure is indeterminate.
	sent := false
	fail := func(err error) (*bpb.MutableState, error) {
		if sent {
			return nil, fmt.Errorf("%w: %w", ErrIndeterminate, err)
		}
		return nil, err
	}
	if e := p.takeFast(addr); e != nil && SameConfig(e.state.Quorum, quorum) {
		// One round trip: the ballot is promised and e.state is what the
		// promising majority holds. If anyone prepared since, the accept
		// is refused and the full rounds below take over. A change that
		// fails on this possibly stale state is not reported: the full
		// round decides it on the state it reads.
		if next, err := change(e.state); err == nil {
			p.Stats.Rounds.Add(1)
			p.Stats.FastRounds.Add(1)
			next = settle(stamp(next, e.state, opID, quorum), e.state)
			lastVersion = next.Version
			ok, stale, landed, err := p.acceptNext(ctx, addr, e.ballot, next, quorum)
			if !ok && landed {
				sent = true
			}
			if err != nil {
				return fail(err)
			}
			if ok {
				return p.decided(ctx, addr, next), nil
			}
			p.Stats.Conflicts.Add(1)
			seen = max(seen, stale)
		}
	}
	// again decides cur once more, unchanged, at ballot b (asking for a
	// promise of nb when set); lost reports a refused round, after the
	// backoff, for the caller to retry.
	again := func(b *bpb.Ballot, cur *bpb.MutableState, nb *bpb.Ballot) (lost bool, err error) {
		ok, stale, _, err := p.accept(ctx, b, cur, quorum, nb)
		if err != nil || ok {
			return false, err
		}
		seen = max(seen, stale)
		return true, bo.wait(ctx)
	}
	moves := 0
	for attempt := 0; attempt < p.MaxRounds; attempt++ {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		p.Stats.Rounds.Add(1)
		b := p.ballot(seen)
		t0 := time.Now()
		res, err := p.prepare(ctx, addr, b, quorum)
		p.Stats.PrepareNanos.Add(int64(time.Since(t0)))
		if err != nil {
			return fail(err)
		}
		switch {
		case res.moveTo != nil:
			p.Stats.QuorumMoves.Add(1)
			quorum = res.moveTo
			p.remember(addr, quorum)
			if moves++; moves > 2 {
				// Sent back and forth: a move is half done (its joint
				// state on some acceptors, the old state on others) and
				// an acceptor that would settle it does not answer yet.
				if err := bo.wait(ctx); err != nil {
					return fail(err)
				}
			}
			continue
		case res.satisfied:
		case res.rejected > 0:
			p.Stats.Conflicts.Add(1)
			seen = max(seen, res.stale)
			if err := bo.wait(ctx); err != nil {
				return fail(err)
			}
			continue
		default:
			return fail(fmt.Errorf("%w: %d of %d acceptors promised: %w", ErrNoQuorum, res.ok, len(quorum), errors.Join(res.errs...)))
		}
		if res.cur != nil && slices.Contains(res.cur.RecentOps, opID) {
			// An earlier attempt of ours was carried forward: the change
			// is applied already. Make sure it is chosen, then report it.
			if !res.unanimous {
				lost, err := again(b, res.cur, nil)
				if err != nil {
					return fail(err)
				}
				if lost {
					continue
				}
			}
			return res.cur, nil
		}
		if sent && res.cur != nil && res.cur.Version >= lastVersion+maxRecentOps-1 {
			return fail(fmt.Errorf("%w: the block moved %d versions past an uncertain attempt of ours", ErrContended, res.cur.Version-lastVersion))
		}
		next, err := change(res.cur)
		if err != nil {
			// The caller decided on what it saw, so what it saw must be
			// chosen before the answer is given: a value only some
			// acceptors hold could otherwise still be replaced by an older
			// one, and a later read would contradict this answer. Unless
			// the whole majority already agrees on it, decide it again
			// unchanged at this ballot (CASPaxos's identity function).
			if res.cur != nil && !res.unanimous {
				lost, aerr := again(b, res.cur, nil)
				if aerr != nil {
					return fail(aerr)
				}
				if lost {
					p.Stats.Conflicts.Add(1)
					continue
				}
			}
			return fail(err)
		}
		next = settle(stamp(next, res.cur, opID, quorum), res.cur)
		if res.cur != nil && !res.unanimous && !SameConfig(next.Quorum, res.cur.Quorum) {
			// A change of config is made only from a chosen state (as
			// Raft commits one config before proposing the next): the
			// one cur names might otherwise never have been sealed, and
			// a majority of its old set could still decide beside the
			// new one. Decide cur unchanged first; the acceptors that
			// take it promise our next ballot, which then carries the
			// change (as on the fast path: what they hold is cur).
			nb := p.ballot(b.Round)
			lost, err := again(b, res.cur, nb)
			if err != nil {
				return fail(err)
			}
			if lost {
				p.Stats.Conflicts.Add(1)
				continue
			}
			b = nb
		}
		lastVersion = next.Version
		t0 = time.Now()
		ok, stale, landed, err := p.acceptNext(ctx, addr, b, next, quorum)
		p.Stats.AcceptNanos.Add(int64(time.Since(t0)))
		if !ok && landed {
			sent = true
		}
		if err != nil {
			return fail(err)
		}
		if !ok {
			p.Stats.Conflicts.Add(1)
			seen = max(seen, stale)
			if err := bo.wait(ctx); err != nil {
				return fail(err)
			}
			continue
		}
		return p.decided(ctx, addr, next), nil
	}
	return fail(fmt.Errorf("%w: %d rounds", ErrContended, p.MaxRounds))
}

// settle shapes a proposed state for the config of cur, the state it was
// made from (see config.go): a state naming another acceptor set than
// cur's is proposed with the joint config of both; a state made from a
// joint state settles it on its new set (a move made from one goes on from
// that new set).
func settle(next, cur *bpb.MutableState) *bpb.MutableState {
	q := next.Quorum
	switch {
	case cur == nil || len(cur.Quorum) == 0:
		// A new block: it starts on one set.
		q = Target(q)
	case IsJoint(q) && !SameConfig(q, cur.Quorum):
		// A joint config made elsewhere: not ours to reshape.
		return next
	case IsJoint(cur.Quorum) && (SameConfig(q, cur.Quorum) || SameSet(q, Target(cur.Quorum))):
		q = Target(cur.Quorum)
	case IsJoint(cur.Quorum):
		q = jointConfig(q, Target(cur.Quorum))
	case !SameConfig(q, cur.Quorum):
		q = jointConfig(q, cur.Quorum)
	}
	if slices.Equal(q, next.Quorum) {
		return next
	}
	next.Quorum = q
	return next
}

// decided records st, just decided, as addr's state. A joint state is
// settled on its new set at once (one more round, through the ballot its
// acceptors just promised); when that fails, the next proposal on the
// block settles it. The caller's change is decided either way.
func (p *Proposer) decided(ctx context.Context, addr block.Address, st *bpb.MutableState) *bpb.MutableState {
	p.remember(addr, st.Quorum)
	if !IsJoint(st.Quorum) {
		return st
	}
	fin, err := p.Propose(ctx, addr, st.Quorum, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil {
			return nil, block.ErrNotFound
		}
		return cur, nil
	})
	if err != nil || fin.Version != st.Version {
		return st
	}
	return fin
}

// stamp completes a proposed state: the acceptor set, and this proposal's
// op id among the recent ones when it makes a new version.
func stamp(next, cur *bpb.MutableState, opID uint64, quorum []string) *bpb.MutableState {
	next = block.WithPayload(next, next.Payload)
	if len(next.Quorum) == 0 {
		next.Quorum = quorum
	}
	if cur == nil || next.Version > cur.Version {
		var prev []uint64
		if cur != nil {
			prev = cur.RecentOps
		}
		if len(prev) >= maxRecentOps {
			prev = prev[len(prev)-maxRecentOps+1:]
		}
		next.RecentOps = append(slices.Clone(prev), opID)
	}
	return next
}

// acceptNext is accept for a new state, asking the acceptors to promise
// this proposer's next ballot too; once decided, that ballot and the state
// are kept for the block's next change (see fast).
func (p *Proposer) acceptNext(ctx context.Context, addr block.Address, b *bpb.Ballot, st *bpb.MutableState, quorum []string) (ok bool, stale uint64, landed bool, err error) {
	nb := p.ballot(b.Round) // reserved: no other proposal of ours gets it
	ok, stale, landed, err = p.accept(ctx, b, st, quorum, nb)
	if ok {
		p.putFast(addr, &fastEntry{ballot: nb, state: st})
	}
	return ok, stale, landed, err
}

type prepared struct {
	ok, rejected int
	// satisfied: the promises cover a majority of every set of the config.
	satisfied bool
	// unanimous: every promise carried the same accepted ballot, so cur is
	// already chosen.
	unanimous bool
	stale     uint64 // highest round seen in a rejection
	cur       *bpb.MutableState
	curBallot *bpb.Ballot
	moveTo    []string
	errs      []error
}

func (p *Proposer) prepare(ctx context.Context, addr block.Address, b *bpb.Ballot, quorum []string) (*prepared, error) {
	req := &bpb.PrepareRequest{Address: addr[:], Ballot: b, Quorum: quorum}
	type reply struct {
		node string
		resp *bpb.PrepareResponse
		err  error
	}
	nodes := Members(quorum)
	replies := make(chan reply, len(nodes))
	for _, n := range nodes {
		go func() {
			r, err := p.t.Prepare(ctx, n, req)
			replies <- reply{n, r, err}
		}()
	}
	res := &prepared{}
	var wrong []*bpb.PrepareResponse
	accepted := map[string]*bpb.Ballot{}
	promised := nodeSet{}
	var absent <-chan time.Time
collect:
	for range nodes {
		var r reply
		select {
		case r = <-replies:
		case <-absent:
			break collect
		}
		switch {
		case r.err != nil:
			res.errs = append(res.errs, fmt.Errorf("%s: %w", r.node, r.err))
		case r.resp.Outcome == bpb.Outcome_OUTCOME_OK:
			res.ok++
			promised[r.node] = true
			accepted[r.node] = r.resp.Accepted
			if r.resp.State != nil && Compare(r.resp.Accepted, res.curBallot) > 0 {
				res.cur, res.curBallot = r.resp.State, r.resp.Accepted
			}
		case r.resp.Outcome == bpb.Outcome_OUTCOME_WRONG_QUORUM:
			res.rejected++
			wrong = append(wrong, r.resp)
		default:
			res.rejected++
			if r.resp.Promised != nil {
				res.stale = max(res.stale, r.resp.Promised.Round)
			}
		}
		// A majority (of each set, in a joint config) is enough;
		// stragglers are not waited for, so one slow or paused acceptor
		// does not stall the block. A majority that knows nothing of the
		// block is not enough: an acceptor still to answer may hold it
		// under another set (placement moved since it was made) and must
		// get the chance to say so.
		if satisfied(quorum, promised.has) {
			if res.cur != nil {
				break
			}
			if absent == nil && len(wrong) == 0 {
				t := time.NewTimer(absentWait)
				defer t.Stop()
				absent = t.C
			}
		}
	}
	res.satisfied = satisfied(quorum, promised.has)
	if len(wrong) > 0 && (!res.satisfied || res.cur == nil) {
		// Promises that cover the config are enough whatever the others
		// say: no move away from it can have been decided, as that takes
		// a majority of each of its sets, whose members then refuse it.
		// Short of that, move to the config of the most recently
		// accepted state.
		best := wrong[0]
		for _, w := range wrong[1:] {
			if Compare(w.Accepted, best.Accepted) > 0 {
				best = w
			}
		}
		if res.curBallot == nil || Compare(best.Accepted, res.curBallot) >= 0 {
			res.moveTo = best.Quorum
			return res, nil
		}
	}
	res.unanimous = true
	for _, a := range accepted {
		if Compare(a, res.curBallot) < 0 {
			res.unanimous = false
		}
	}
	return res, nil
}

// accept sends state to the acceptors of the proposer's config and of the
// state's; it is decided once a majority of every set of both accepted.
//
// landed reports whether the state may have been accepted anywhere (an
// acceptor said yes, or a reply was lost), which makes a failure uncertain.
func (p *Proposer) accept(ctx context.Context, b *bpb.Ballot, st *bpb.MutableState, quorum []string, promiseNext *bpb.Ballot) (ok bool, stale uint64, landed bool, err error) {
	targets := Members(append(slices.Clone(quorum), st.Quorum...))
	req := &bpb.AcceptRequest{Ballot: b, State: st, Quorum: quorum, PromiseNext: promiseNext}
	replies := make(chan acceptReply, len(targets))
	for _, n := range targets {
		go func() {
			r, err := p.t.Accept(ctx, n, req)
			replies <- acceptReply{n, r, err}
		}()
	}
	okNodes := nodeSet{}
	var errs []error
	var hard error
	newer := false
	for got := 1; got <= len(targets); got++ {
		r := <-replies
		if errors.Is(r.err, ErrStaleVersion) {
			// The acceptor holds a higher version accepted at a lower
			// ballot that our prepare majority did not see, so it was not
			// chosen. A retry at a higher ballot rebuilds on whichever
			// value is chosen; it is a conflict, not a refusal of the
			// change.
			newer = true
		} else if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.node, r.err))
			if errors.Is(r.err, block.ErrBadSignature) || errors.Is(r.err, block.ErrBadDerivation) || errors.Is(r.err, block.ErrTooLarge) || errors.Is(r.err, ErrBadRequest) {
				// A definite refusal: nothing was accepted there.
				hard = r.err
			} else {
				landed = true
			}
		} else if r.resp.Outcome == bpb.Outcome_OUTCOME_OK {
			landed = true
			okNodes[r.node] = true
		} else if r.resp.Promised != nil {
			stale = max(stale, r.resp.Promised.Round)
		}
		if satisfied(quorum, okNodes.has) && satisfied(st.Quorum, okNodes.has) {
			// Decided. Acceptors still to answer are told the decision
			// only if their accept fails, so the usual update costs no
			// extra round trip.
			go p.learnStragglers(ctx, b, st, replies, len(targets)-got)
			return true, 0, true, nil
		}
	}
	if hard != nil {
		return false, 0, landed, hard
	}
	if stale == 0 && !newer && len(errs) > 0 {
		return false, 0, landed, fmt.Errorf("%w: accept: %w", ErrNoQuorum, errors.Join(errs...))
	}
	return false, stale, landed, nil
}

type acceptReply struct {
	node string
	resp *bpb.AcceptResponse
	err  error
}

// learnStragglers waits for the n outstanding accept replies of a decided
// state and sends the decision to each acceptor that did not accept it.
func (p *Proposer) learnStragglers(ctx context.Context, b *bpb.Ballot, st *bpb.MutableState, replies <-chan acceptReply, n int) {
	var behind []string
	for range n {
		r := <-replies
		if r.err != nil || r.resp.Outcome != bpb.Outcome_OUTCOME_OK {
			behind = append(behind, r.node)
		}
	}
	if len(behind) > 0 {
		p.learn(ctx, b, st, behind)
	}
}

// learn tells every acceptor of the block the decision, in the background:
// it brings stragglers up to date so later quorum reads agree at once.
func (p *Proposer) learn(ctx context.Context, b *bpb.Ballot, st *bpb.MutableState, nodes []string) {
	bg := context.WithoutCancel(ctx)
	req := &bpb.LearnRequest{Ballot: b, State: st}
	for _, n := range nodes {
		go func() {
			cctx, cancel := context.WithTimeout(bg, 5*time.Second)
			defer cancel()
			_ = p.t.Learn(cctx, n, req)
		}()
	}
}

// Read returns the block's decided state. When a majority of its acceptors
// report the same accepted ballot, that state is chosen and is returned at
// once (one round trip, no disk write); otherwise a full round re-decides
// the newest state, which also repairs stale acceptors.
func (p *Proposer) Read(ctx context.Context, addr block.Address, guess []string) (*bpb.MutableState, error) {
	st, _, err := p.ReadKnown(ctx, addr, guess, 0)
	return st, err
}

// ReadKnown is Read for a caller holding version v (0: none). When the
// decided version is still v, current is true and the state comes without
// its payload, writers and signature: the acceptors did not send them.
func (p *Proposer) ReadKnown(ctx context.Context, addr block.Address, guess []string, v uint64) (st *bpb.MutableState, current bool, err error) {
	quorum := p.Quorum(addr, guess)
	// Acceptors of a block under constant updates often disagree for a
	// moment (an accept still on its way to one of them). A read that
	// ran a full round then would pre-empt the writers, so it looks again
	// a few times first; only a block whose acceptors stay split (a
	// writer died mid-round) gets its value re-decided by the reader.
	const maxPeeks, maxMoves = 5, 3
	for peeks, moves := 0, 0; peeks < maxPeeks && moves < maxMoves; {
		st, omitted, moved, err := p.peek(ctx, addr, quorum, v)
		if err != nil {
			return nil, false, err
		}
		if moved != nil {
			quorum = moved
			p.remember(addr, quorum)
			moves++
			continue
		}
		if st != nil {
			return st, omitted || (v > 0 && st.Version == v), nil
		}
		if peeks++; peeks < maxPeeks {
			t := time.NewTimer(time.Millisecond + time.Duration(rand.Int64N(int64(3*time.Millisecond))))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, false, ctx.Err()
			case <-t.C:
			}
		}
	}
	st, err = p.Propose(ctx, addr, quorum, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil {
			return nil, block.ErrNotFound
		}
		return cur, nil
	})
	return st, err == nil && v > 0 && st.Version == v, err
}

// peek returns the chosen state if a majority (of each set, in a joint
// config) agrees on it (omitted: sent without its payload, being version
// known), or the config to move to if the block's acceptors are not the
// ones asked.
func (p *Proposer) peek(ctx context.Context, addr block.Address, quorum []string, known uint64) (st *bpb.MutableState, omitted bool, moved []string, err error) {
	req := &bpb.PeekRequest{Address: addr[:], KnownVersion: known}
	type reply struct {
		node string
		resp *bpb.PeekResponse
		err  error
	}
	all := Members(quorum)
	replies := make(chan reply, len(all))
	send := func(nodes []string) {
		for _, n := range nodes {
			go func() {
				r, err := p.t.Peek(ctx, n, req)
				replies <- reply{n, r, err}
			}()
		}
	}
	// A bare majority usually agrees: ask it first, and the others only
	// when its answers do not settle the read. A read then costs two
	// round trips' worth of work instead of three. (A joint config, while
	// a move is under way, is asked whole.)
	first := all
	if !IsJoint(quorum) {
		first = quorum[:majority(len(quorum))]
	}
	send(first)
	asked := len(first)
	var groups []*peekGroup
	var stale []string
	empty, answered := nodeSet{}, nodeSet{}
	var errs []error
	// A paused or dead acceptor never answers: if the majority has not
	// settled the read by hedgeAfter, the others are asked too.
	hedge := time.NewTimer(hedgeAfter)
	defer hedge.Stop()
	// Once a majority reported the block absent, the others get a short
	// while to contradict that (see below), not the caller's whole deadline.
	var absent <-chan time.Time
	for got := 1; got <= asked; got++ {
		var r reply
		select {
		case r = <-replies:
		case <-hedge.C:
			if asked < len(all) {
				send(all[asked:])
				asked = len(all)
			}
			got--
			continue
		case <-absent:
			if satisfied(quorum, empty.has) {
				return nil, false, nil, block.ErrNotFound
			}
			// Every acceptor was asked and those that answered do not
			// settle it; the silent one may be paused. Undecided: Read
			// looks again or runs a round, which needs no answer from it.
			return nil, false, nil, nil
		}
		if r.err != nil {
			errs = append(errs, r.err)
		} else {
			answered[r.node] = true
			if r.resp.State == nil {
				empty[r.node] = true
				stale = append(stale, r.node)
			} else {
				if !compatible(r.resp.State.Quorum, quorum) {
					return nil, false, r.resp.State.Quorum, nil
				}
				found := false
				for _, g := range groups {
					if Compare(g.ballot, r.resp.Accepted) == 0 {
						g.nodes = append(g.nodes, r.node)
						found = true
					}
				}
				if !found {
					groups = append(groups, &peekGroup{r.resp.Accepted, r.resp.State, r.resp.PayloadOmitted, []string{r.node}})
				}
			}
		}
		for _, g := range groups {
			if satisfied(quorum, func(n string) bool { return slices.Contains(g.nodes, n) }) {
				// Remaining replies are not awaited; stale ones seen so far
				// are brought up to date (by a full read: an omitted
				// payload cannot be sent on).
				if !g.omitted {
					p.repair(ctx, g, stale, groups)
				}
				return g.state, g.omitted, nil, nil
			}
		}
		// "Not found" is only believed once every acceptor asked has
		// answered: when placement has moved since the block was made,
		// the asked set may be mostly new nodes, and only an old one can
		// say where the block lives.
		if (got == asked || satisfied(quorum, empty.has)) && asked < len(all) {
			send(all[asked:])
			asked = len(all)
		}
		if absent == nil && asked == len(all) && satisfied(quorum, answered.has) {
			t := time.NewTimer(absentWait)
			defer t.Stop()
			absent = t.C
		}
	}
	if satisfied(quorum, empty.has) {
		return nil, false, nil, block.ErrNotFound
	}
	if !satisfied(quorum, answered.has) {
		return nil, false, nil, fmt.Errorf("%w: %d of %d acceptors answered: %w", ErrNoQuorum, len(answered), len(all), errors.Join(errs...))
	}
	return nil, false, nil, nil
}

// absentWait is how long a read that has asked every acceptor and heard a
// majority waits for the rest when those answers settle nothing (or say
// "absent"): enough for a healthy acceptor to answer.
const absentWait = 200 * time.Millisecond

// hedgeAfter is how long a read waits on a bare majority before asking
// the block's other acceptors: well above a healthy round trip.
const hedgeAfter = 20 * time.Millisecond

type peekGroup struct {
	ballot  *bpb.Ballot
	state   *bpb.MutableState
	omitted bool
	nodes   []string
}

// repair sends the chosen state to acceptors seen without it.
func (p *Proposer) repair(ctx context.Context, chosen *peekGroup, empty []string, groups []*peekGroup) {
	nodes := slices.Clone(empty)
	for _, g := range groups {
		if g != chosen {
			nodes = append(nodes, g.nodes...)
		}
	}
	if len(nodes) > 0 {
		p.learn(ctx, chosen.ballot, chosen.state, nodes)
	}
}
