// Package multiprocess runs the built shoal binary as separate processes on
// 127.0.0.1 — one NATS, two placement replicas, four storage nodes — and
// kills storage nodes with SIGKILL while clients read and write.
package multiprocess

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/e2e/framework"
	bpb "shoal/proto/blockstorepb"
	ppb "shoal/proto/placementpb"
	"shoal/shared/block"
	"shoal/shared/dht"
)

type written struct {
	addr block.Address
	data []byte
}

func writeBlocks(t *testing.T, cl *dht.Client, n, workers int) []written {
	var mu sync.Mutex
	var out []written
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				d := make([]byte, 1024+(i*7919)%(64<<10))
				_, _ = rand.Read(d)
				a, err := cl.Put(context.Background(), d)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				out = append(out, written{a, d})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

func readAll(t *testing.T, cl *dht.Client, blocks []written, why string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(blocks))
	sem := make(chan struct{}, 16)
	for _, b := range blocks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			got, err := cl.Get(ctx, b.addr)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", b.addr, err)
			} else if !bytes.Equal(got, b.data) {
				errs <- fmt.Errorf("%s: wrong bytes", b.addr)
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n < 5 {
			t.Errorf("%s: %v", why, err)
		}
		n++
	}
	if n > 0 {
		t.Fatalf("%s: %d of %d blocks unreadable", why, n, len(blocks))
	}
}

// listNode returns every address the storage node at addr holds.
func listNode(t *testing.T, cl *dht.Client, n *ppb.Node) map[block.Address]bool {
	bs, err := cl.NodeClient(n)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := bs.List(context.Background(), &bpb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[block.Address]bool{}
	for {
		resp, err := stream.Recv()
		if err != nil {
			break
		}
		for _, a := range resp.Addresses {
			ad, _ := block.FromBytes(a)
			out[ad] = true
		}
	}
	return out
}

func TestKillNineKeepsEveryBlock(t *testing.T) {
	c := framework.StartProcCluster(t, 4)
	cl := c.Client(3 * time.Second)
	blocks := writeBlocks(t, cl, 1000, 16)
	if len(blocks) != 1000 {
		t.Fatalf("wrote %d blocks", len(blocks))
	}
	victim := c.Nodes[1]
	vnode := framework.ViewNode(t, cl, victim)
	held := listNode(t, cl, vnode)
	if len(held) < 500 {
		t.Fatalf("victim holds only %d of 1000 blocks; placement skewed", len(held))
	}
	victim.Kill()
	readAll(t, cl, blocks, "after kill -9")

	// The node restarts on its data directory and serves its blocks again.
	victim.Restart()
	framework.Eventually(t, 20*time.Second, "restarted node up in view", func() bool {
		for _, n := range cl.View().Nodes {
			if n.Id == vnode.Id && n.State == ppb.NodeState_NODE_STATE_UP && n.Addr == victim.Field("blockstore", time.Second) {
				return true
			}
		}
		return false
	})
	back := framework.ViewNode(t, cl, victim)
	bs, err := cl.NodeClient(back)
	if err != nil {
		t.Fatal(err)
	}
	byAddr := map[block.Address][]byte{}
	for _, b := range blocks {
		byAddr[b.addr] = b.data
	}
	for a := range held {
		resp, err := bs.Get(context.Background(), &bpb.GetRequest{Address: a[:]})
		if err != nil || !bytes.Equal(resp.Data, byAddr[a]) {
			t.Fatalf("restarted node does not serve %s: %v", a, err)
		}
	}

	// CLI against the same cluster, through the second placement replica.
	out, stderr, code := framework.Run(t, nil, "status", "-placement", c.Places[1], "-o", "json")
	if code != 0 || strings.Count(out, `"NODE_STATE_UP"`) != 4 {
		t.Fatalf("status: code %d\n%s%s", code, out, stderr)
	}
	payload := []byte("cli payload\n")
	out, stderr, code = framework.Run(t, bytes.NewReader(payload), "block", "put", "-placement", c.Places[1])
	if code != 0 {
		t.Fatalf("block put: %d %s", code, stderr)
	}
	addr := strings.TrimSpace(out)
	if addr != block.Sum(payload).String() {
		t.Fatalf("block put printed %q", addr)
	}
	out, stderr, code = framework.Run(t, nil, "block", "get", "-placement", c.Places[0], addr)
	if code != 0 || out != string(payload) {
		t.Fatalf("block get: %d %q %s", code, out, stderr)
	}
	out, _, code = framework.Run(t, nil, "block", "stat", "-placement", c.Places[0], addr)
	if code != 0 || !strings.Contains(out, "copies   3") {
		t.Fatalf("block stat: %d\n%s", code, out)
	}
	_, stderr, code = framework.Run(t, nil, "block", "get", "-placement", c.Places[0], "not-hex")
	if code != 2 || !strings.Contains(stderr, "malformed address") {
		t.Fatalf("bad address: code %d %s", code, stderr)
	}
	_, stderr, code = framework.Run(t, nil, "block", "get", "-placement", c.Places[0], block.Sum([]byte("nope")).String())
	if code != 1 || !strings.Contains(stderr, "not found") {
		t.Fatalf("unknown address: code %d %s", code, stderr)
	}
}

func TestKillDuringWriteBurst(t *testing.T) {
	c := framework.StartProcCluster(t, 4)
	cl := c.Client(3 * time.Second)
	var mu sync.Mutex
	var acked []written
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures int
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := make([]byte, 512+(w*131+i*977)%(48<<10))
				_, _ = rand.Read(d)
				a, err := cl.Put(context.Background(), d)
				mu.Lock()
				if err != nil {
					failures++
				} else {
					acked = append(acked, written{a, d})
				}
				mu.Unlock()
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	framework.Eventually(t, 60*time.Second, "300 acknowledged writes", func() bool { return count() >= 300 })
	c.Nodes[2].Kill()
	killedAt := count()
	framework.Eventually(t, 60*time.Second, "300 more acknowledged writes", func() bool { return count() >= killedAt+300 })
	close(stop)
	wg.Wait()
	t.Logf("%d writes acknowledged (%d before the kill), %d failed", len(acked), killedAt, failures)
	readAll(t, cl, acked, "acknowledged before/during/after kill -9")
}

func TestMutableCLI(t *testing.T) {
	c := framework.StartProcCluster(t, 3)
	c.Client(3 * time.Second) // all nodes up
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	p := "-placement=" + strings.Join(c.Places, ",")
	out, stderr, code := framework.Run(t, nil, "user", "create", "alice")
	if code != 0 || !strings.HasPrefix(out, "alice ") {
		t.Fatalf("user create: %d %q %s", code, out, stderr)
	}
	pub := strings.Fields(out)[1]
	if out, _, _ := framework.Run(t, nil, "user", "export", "alice"); strings.TrimSpace(out) != pub {
		t.Fatalf("user export: %q", out)
	}
	if _, stderr, code := framework.Run(t, nil, "user", "create", "alice"); code != 1 || !strings.Contains(stderr, "exists") {
		t.Fatalf("duplicate user: %d %s", code, stderr)
	}
	out, stderr, code = framework.Run(t, strings.NewReader("first"), "block", "create-mutable", p, "-user=alice")
	if code != 0 {
		t.Fatalf("create-mutable: %s", stderr)
	}
	addr := strings.TrimSpace(out)
	out, stderr, code = framework.Run(t, strings.NewReader("second"), "block", "update", p, "-user=alice", addr, "-")
	if code != 0 || strings.TrimSpace(out) != "version 2" {
		t.Fatalf("update: %d %q %s", code, out, stderr)
	}
	if out, stderr, code = framework.Run(t, nil, "block", "get", p, addr); code != 0 || out != "second" {
		t.Fatalf("get mutable: %d %q %s", code, out, stderr)
	}
	// Another user may not write alice's block.
	if _, stderr, code = framework.Run(t, strings.NewReader("evil"), "block", "update", p, "-user=mallory", addr, "-"); code != 1 || !strings.Contains(stderr, "signature") {
		t.Fatalf("foreign update: %d %s", code, stderr)
	}
	if _, stderr, code = framework.Run(t, nil, "name", "set", p, "-user=alice", "root", addr); code != 0 {
		t.Fatalf("name set: %s", stderr)
	}
	if out, stderr, code = framework.Run(t, nil, "name", "get", p, "-owner", pub, "root"); code != 0 || strings.TrimSpace(out) != addr {
		t.Fatalf("name get: %d %q %s", code, out, stderr)
	}
	if _, _, code = framework.Run(t, nil, "name", "rm", p, "-user=alice", "root"); code != 0 {
		t.Fatal("name rm failed")
	}
	if _, stderr, code = framework.Run(t, nil, "name", "get", p, "-user=alice", "root"); code != 1 || !strings.Contains(stderr, "not found") {
		t.Fatalf("name get after rm: %d %s", code, stderr)
	}
	if _, stderr, code = framework.Run(t, nil, "name", "set", p, "root", "nothex"); code != 2 {
		t.Fatalf("bad address: %d %s", code, stderr)
	}
}
