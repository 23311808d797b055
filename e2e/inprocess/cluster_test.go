// Package inprocess runs scenario tests against an in-process cluster:
// embedded NATS, real gRPC over 127.0.0.1, real silos on disk.
package inprocess

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/e2e/framework"
	bpb "shoal/proto/blockstorepb"
	ppb "shoal/proto/placementpb"
	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/rpc"
)

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func holders(t *testing.T, c *framework.Cluster, addr block.Address) int {
	t.Helper()
	n := 0
	for _, node := range c.Nodes {
		if ok, err := node.Silo().Has(addr); err == nil && ok {
			n++
		}
	}
	return n
}

func TestPutGetR3W2(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 4})
	cl := c.Client(dht.Config{Replicas: 3, WriteQuorum: 2})
	ctx := ctxT(t)
	var addrs []block.Address
	var datas [][]byte
	for i := range 20 {
		d := randBytes(t, 1000+i*5000)
		a, err := cl.Put(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		addrs, datas = append(addrs, a), append(datas, d)
	}
	for i, a := range addrs {
		got, err := cl.Get(ctx, a)
		if err != nil || !bytes.Equal(got, datas[i]) {
			t.Fatalf("block %d: %v", i, err)
		}
	}
	// Background replica writes finish: every block ends up on exactly R nodes.
	framework.Eventually(t, 10*time.Second, "3 copies of every block", func() bool {
		for _, a := range addrs {
			if holders(t, c, a) != 3 {
				return false
			}
		}
		return true
	})
	if _, err := cl.Get(ctx, block.Sum([]byte("never stored"))); !errors.Is(err, block.ErrNotFound) {
		t.Fatalf("unknown block: %v", err)
	}
}

func TestOneNodeDown(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3})
	cl := c.Client(dht.Config{})
	ctx := ctxT(t)
	before := randBytes(t, 50_000)
	a1, err := cl.Put(ctx, before)
	if err != nil {
		t.Fatal(err)
	}
	// Put returns at W=2 acknowledgements; the third replica's write may
	// still be on its way, and this node must hold the block to show it
	// kept it across the restart below.
	framework.Eventually(t, 10*time.Second, "node-2 holds the block", func() bool {
		got, _, err := c.Nodes[1].Silo().Get(a1)
		return err == nil && bytes.Equal(got, before)
	})
	c.StopNode(1)
	// Before the failure detector notices, and after.
	for round := range 2 {
		d := randBytes(t, 10_000)
		a, err := cl.Put(ctx, d)
		if err != nil {
			t.Fatalf("round %d put with a node down: %v", round, err)
		}
		got, err := cl.Get(ctx, a)
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("round %d get: %v", round, err)
		}
		got, err = cl.Get(ctx, a1)
		if err != nil || !bytes.Equal(got, before) {
			t.Fatalf("round %d old block: %v", round, err)
		}
		framework.Eventually(t, 10*time.Second, "node-2 marked down", func() bool {
			for _, n := range cl.View().Nodes {
				if n.Id == "node-2" {
					return n.State == ppb.NodeState_NODE_STATE_DOWN
				}
			}
			return false
		})
	}
	// The node comes back with its blocks.
	c.StartNode(1)
	got, _, err := c.Nodes[1].Silo().Get(a1)
	if err != nil || !bytes.Equal(got, before) {
		t.Fatalf("restarted node lost its block: %v", err)
	}
}

func TestCorruptReplicaRepaired(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3})
	cl := c.Client(dht.Config{})
	ctx := ctxT(t)
	data := randBytes(t, 200_000) // above the segment threshold: stored in a segment file
	addr, err := cl.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 10*time.Second, "3 copies", func() bool { return holders(t, c, addr) == 3 })
	// Corrupt the copy of the node a reader tries first.
	first, err := cl.Locate(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	idx := -1
	for i, n := range c.Nodes {
		if n.ID() == first[0].Id {
			idx = i
		}
	}
	segs, _ := filepath.Glob(filepath.Join(c.NodeDir(idx), "silo", "segments", "*.seg"))
	flipped := false
	for _, p := range segs {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if off := bytes.Index(raw, data[:4096]); off >= 0 {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{^raw[off+5000]}, int64(off+5000)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			flipped = true
		}
	}
	if !flipped {
		t.Fatal("block bytes not found in the first replica's segments")
	}
	got, err := cl.Get(ctx, addr)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get with a corrupt replica: %v", err)
	}
	framework.Eventually(t, 10*time.Second, "corrupt copy repaired", func() bool {
		d, _, err := c.Nodes[idx].Silo().Get(addr)
		return err == nil && bytes.Equal(d, data)
	})
}

func TestEvictionAdvancesEpoch(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 4, Placements: 2, DownAfter: 600 * time.Millisecond, EvictAfter: 1500 * time.Millisecond})
	cl := c.Client(dht.Config{})
	before := cl.View().Epoch
	c.StopNode(3)
	for _, p := range c.Places {
		framework.Eventually(t, 10*time.Second, "node-4 evicted from "+p.Addr(), func() bool {
			for _, n := range p.View().Nodes {
				if n.Id == "node-4" {
					return false
				}
			}
			return true
		})
	}
	framework.Eventually(t, 5*time.Second, "client view without node-4", func() bool {
		v := cl.View()
		return len(v.Nodes) == 3 && v.Epoch > before
	})
	// Writes land on the remaining three.
	if _, err := cl.Put(ctxT(t), randBytes(t, 1000)); err != nil {
		t.Fatal(err)
	}
}

func TestTwoPlacementReplicasNoLeader(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3, Placements: 2})
	ctx := ctxT(t)
	for i := range c.Places {
		cl := c.Client(dht.Config{Placement: []string{c.Places[i].Addr()}})
		if err := cl.WaitForNodes(ctx, 3); err != nil {
			t.Fatal(err)
		}
		d := randBytes(t, 3000)
		a, err := cl.Put(ctx, d)
		if err != nil {
			t.Fatalf("via placement %d: %v", i, err)
		}
		if got, err := cl.Get(ctx, a); err != nil || !bytes.Equal(got, d) {
			t.Fatalf("via placement %d get: %v", i, err)
		}
	}
	// A client given both keeps working when the first one goes away.
	cl := c.Client(dht.Config{})
	if err := cl.WaitForNodes(ctx, 3); err != nil {
		t.Fatal(err)
	}
	_ = c.Places[0].Stop()
	if _, err := cl.RefreshView(ctx); err != nil {
		t.Fatalf("view with one placement replica gone: %v", err)
	}
	if _, err := cl.Put(ctx, randBytes(t, 100)); err != nil {
		t.Fatal(err)
	}
}

func TestBadInput(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3})
	ctx := ctxT(t)
	addr := c.Nodes[0].Addr()
	cc, err := rpc.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	bs := bpb.NewBlockStoreClient(cc)
	big := make([]byte, 4<<20+1)
	bigAddr := block.Sum(big)
	_, err = bs.Put(ctx, &bpb.PutRequest{Address: bigAddr[:], Data: big})
	if status.Code(err) != codes.InvalidArgument || !errors.Is(rpc.FromStatus(err), block.ErrTooLarge) {
		t.Fatalf("oversize put: %v", err)
	}
	wrong := block.Sum([]byte("other"))
	_, err = bs.Put(ctx, &bpb.PutRequest{Address: wrong[:], Data: []byte("data")})
	if !errors.Is(rpc.FromStatus(err), block.ErrHashMismatch) {
		t.Fatalf("mismatched address: %v", err)
	}
	_, err = bs.Get(ctx, &bpb.GetRequest{Address: wrong[:]})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown address: %v", err)
	}
	_, err = bs.Get(ctx, &bpb.GetRequest{Address: []byte{1, 2, 3}})
	if status.Code(err) != codes.InvalidArgument || !errors.Is(rpc.FromStatus(err), block.ErrBadAddress) {
		t.Fatalf("malformed address: %v", err)
	}
	_, err = bs.Has(ctx, &bpb.HasRequest{Addresses: [][]byte{{9}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed Has: %v", err)
	}
	// Garbage on the wire: the connection is rejected, the server keeps serving.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write(bytes.Repeat([]byte("GARBAGE\x00\xff"), 1000))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("server kept a garbage connection open")
			}
			break
		}
	}
	conn.Close()
	d := []byte("still serving")
	a := block.Sum(d)
	if _, err := bs.Put(ctx, &bpb.PutRequest{Address: a[:], Data: d}); err != nil {
		t.Fatalf("after garbage: %v", err)
	}
	// Client side: an oversize block is refused before any node sees it.
	cl := c.Client(dht.Config{})
	if _, err := cl.Put(ctx, big); !errors.Is(err, block.ErrTooLarge) {
		t.Fatalf("client oversize: %v", err)
	}
}
