package inprocess

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"shoal/e2e/framework"
	bpb "shoal/proto/blockstorepb"
	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/rpc"
)

func TestMutableAndNamedBlocks(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 4})
	ctx := ctxT(t)
	a, b := c.Client(dht.Config{}), c.Client(dht.Config{})
	pub, key, _ := ed25519.GenerateKey(nil)
	_, stranger, _ := ed25519.GenerateKey(nil)

	addr, err := a.CreateMutable(ctx, key, []byte("v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.GetMutable(ctx, addr)
	if err != nil || string(m.Payload) != "v1" || m.Version != 1 {
		t.Fatalf("read from another client: %+v %v", m, err)
	}
	v, err := b.Update(ctx, key, addr, func(cur []byte, _ uint64) ([]byte, error) { return append(cur, '+'), nil })
	if err != nil || v != 2 {
		t.Fatalf("update: %d %v", v, err)
	}
	// Compare-and-set against a stale version returns the current value.
	_, err = a.CompareAndSet(ctx, key, addr, 1, []byte("stale"))
	var ce *dht.ConflictError
	if !errors.As(err, &ce) || ce.Current.Version != 2 || string(ce.Current.Payload) != "v1+" {
		t.Fatalf("stale CAS: %v", err)
	}
	if v, err := a.CompareAndSet(ctx, key, addr, 2, []byte("v3")); err != nil || v != 3 {
		t.Fatalf("CAS: %d %v", v, err)
	}
	// Cheap revalidation.
	if m, err := b.GetMutableIfChanged(ctx, addr, 3); err != nil || m != nil {
		t.Fatalf("if-changed on the current version: %v %v", m, err)
	}
	if m, err := b.GetMutableIfChanged(ctx, addr, 2); err != nil || m == nil || m.Version != 3 || string(m.Payload) != "v3" {
		t.Fatalf("if-changed on an older version: %+v %v", m, err)
	}
	// Revalidating moves no payload: acceptors holding the version send
	// only what identifies it (a majority holds it once it is decided).
	holding := 0
	for _, node := range c.Nodes {
		bs := dialNode(t, node.Addr())
		r, err := bs.Peek(ctx, &bpb.PeekRequest{Address: addr[:], KnownVersion: 3})
		if err != nil {
			t.Fatal(err)
		}
		if r.State.GetVersion() == 3 {
			holding++
			if !r.PayloadOmitted || len(r.State.Payload) != 0 {
				t.Fatalf("peek knowing the current version: %v", r)
			}
			r, err = bs.Peek(ctx, &bpb.PeekRequest{Address: addr[:], KnownVersion: 2})
			if err != nil || r.PayloadOmitted || string(r.State.GetPayload()) != "v3" {
				t.Fatalf("peek knowing an older version: %v %v", r, err)
			}
		}
	}
	if holding < 2 {
		t.Fatalf("%d acceptors hold the decided version", holding)
	}
	// Someone else's key cannot write.
	if _, err := b.Update(ctx, stranger, addr, func([]byte, uint64) ([]byte, error) { return []byte("evil"), nil }); !errors.Is(err, block.ErrBadSignature) {
		t.Fatalf("stranger's write: %v", err)
	}

	// A forged version sent straight to an acceptor is refused.
	m, _ = a.GetMutable(ctx, addr)
	cc, err := rpc.Dial(c.Nodes[0].Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st := &bpb.MutableState{Address: addr[:], Owner: pub, Derivation: []byte("x"), Version: 9, Payload: []byte("forged"), Quorum: m.Quorum}
	block.Sign(st, stranger)
	_, err = bpb.NewBlockStoreClient(cc).Accept(ctx, &bpb.AcceptRequest{Ballot: &bpb.Ballot{Round: 1 << 50}, State: st, Quorum: m.Quorum})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("forged accept: %v", err)
	}
	bad := proto.Clone(st).(*bpb.MutableState)
	bad.Quorum = nil
	if _, err = bpb.NewBlockStoreClient(cc).Accept(ctx, &bpb.AcceptRequest{Ballot: &bpb.Ballot{Round: 1}, State: bad}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed accept: %v", err)
	}

	// Named blocks: create once, resolve, update by the owner, tombstone.
	if err := a.CreateName(ctx, key, "volumes/root", []byte("r1")); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateName(ctx, key, "volumes/root", []byte("r2")); !errors.Is(err, dht.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if err := b.SetName(ctx, key, "volumes/root", []byte("r3")); err != nil {
		t.Fatal(err)
	}
	nm, err := a.ResolveName(ctx, pub, "volumes/root")
	if err != nil || string(nm.Payload) != "r3" {
		t.Fatalf("resolve: %+v %v", nm, err)
	}
	if err := a.DeleteName(ctx, key, "volumes/root"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ResolveName(ctx, pub, "volumes/root"); !errors.Is(err, block.ErrNotFound) {
		t.Fatalf("resolve after delete: %v", err)
	}

	// One acceptor down: reads and writes continue; the block moves to a new
	// acceptor set through a decision on the block, and a client with the
	// old set converges.
	c.StopNode(int(indexOf(c, m.Quorum[0])))
	if _, err := a.Update(ctx, key, addr, func([]byte, uint64) ([]byte, error) { return []byte("v4"), nil }); err != nil {
		t.Fatalf("update with an acceptor down: %v", err)
	}
	var newSet []string
	for _, n := range c.Nodes {
		if n.ID() != m.Quorum[0] {
			newSet = append(newSet, n.ID())
		}
	}
	if err := a.MoveMutable(ctx, addr, newSet); err != nil {
		t.Fatalf("move: %v", err)
	}
	got, err := b.GetMutable(ctx, addr)
	if err != nil || string(got.Payload) != "v4" {
		t.Fatalf("read after move: %+v %v", got, err)
	}
	if len(got.Quorum) != 3 || got.Quorum[0] == m.Quorum[0] && got.Quorum[1] == m.Quorum[1] && got.Quorum[2] == m.Quorum[2] {
		t.Fatalf("quorum did not move: %v", got.Quorum)
	}
}

func indexOf(c *framework.Cluster, id string) int {
	for i, n := range c.Nodes {
		if n.ID() == id {
			return i
		}
	}
	return -1
}

// UpdateName creates a name that was never bound, updates one that is,
// writes nothing when fn fails, and refuses a removed name.
func TestUpdateName(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3})
	ctx := ctxT(t)
	a, b := c.Client(dht.Config{}), c.Client(dht.Config{})
	pub, key, _ := ed25519.GenerateKey(nil)
	appendX := func(cur []byte, exists bool) ([]byte, error) {
		if exists != (cur != nil) {
			t.Errorf("exists %v with value %q", exists, cur)
		}
		return append(append([]byte(nil), cur...), 'x'), nil
	}
	for _, cl := range []*dht.Client{a, b, a} {
		if err := cl.UpdateName(ctx, key, "journal", appendX); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := b.ResolveName(ctx, pub, "journal"); err != nil || string(m.Payload) != "xxx" || m.Version != 3 {
		t.Fatalf("after three updates from two clients: %+v, %v", m, err)
	}
	failed := errors.New("refused")
	if err := a.UpdateName(ctx, key, "journal", func([]byte, bool) ([]byte, error) { return nil, failed }); !errors.Is(err, failed) {
		t.Fatalf("failing update: %v", err)
	}
	if m, err := b.ResolveName(ctx, pub, "journal"); err != nil || string(m.Payload) != "xxx" {
		t.Fatalf("a failed update changed the name: %+v, %v", m, err)
	}
	if err := a.DeleteName(ctx, key, "journal"); err != nil {
		t.Fatal(err)
	}
	if err := b.UpdateName(ctx, key, "journal", appendX); !errors.Is(err, block.ErrNotFound) {
		t.Fatalf("update of a removed name: %v, want not found", err)
	}
}
