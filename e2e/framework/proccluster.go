package framework

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ppb "shoal/proto/placementpb"
	"shoal/shared/dht"
)

// ProcCluster is a cluster of separate shoal processes on 127.0.0.1: one
// NATS, two placement replicas and n storage nodes (zones z1..z3).
type ProcCluster struct {
	t       testing.TB
	NATSURL string
	Places  []string
	Nodes   []*Proc
	Dir     string
}

// StartProcCluster starts the processes and waits for their banners;
// nodeArgs go to every storage node.
func StartProcCluster(t testing.TB, nodes int, nodeArgs ...string) *ProcCluster {
	t.Helper()
	return StartProcClusterIn(t, t.TempDir(), nodes, nodeArgs...)
}

// StartProcClusterIn is StartProcCluster with the processes' data under
// dir (a file system of the test's choosing).
func StartProcClusterIn(t testing.TB, dir string, nodes int, nodeArgs ...string) *ProcCluster {
	t.Helper()
	c := &ProcCluster{t: t, Dir: dir}
	n := StartProc(t, "nats", "serve", "-target=nats", "-nats.listen=127.0.0.1:0", "-data="+c.Dir)
	c.NATSURL = n.Field("nats", 20*time.Second)
	for i := range 2 {
		p := StartProc(t, fmt.Sprintf("placement-%d", i+1), "serve", "-target=placement", "-nats.url="+c.NATSURL,
			"-placement.listen=127.0.0.1:0", "-placement.down-after=1500ms", "-placement.evict-after=10m")
		c.Places = append(c.Places, p.Field("placement", 20*time.Second))
	}
	for i := range nodes {
		args := append([]string{"serve", "-target=blockstore", "-nats.url=" + c.NATSURL,
			"-blockstore.listen=127.0.0.1:0", fmt.Sprintf("-blockstore.zone=z%d", i%3+1),
			"-blockstore.dir=" + filepath.Join(c.Dir, fmt.Sprintf("bs%d", i+1)), "-blockstore.heartbeat-interval=250ms"}, nodeArgs...)
		p := StartProc(t, fmt.Sprintf("blockstore-%d", i+1), args...)
		p.Field("blockstore", 20*time.Second)
		c.Nodes = append(c.Nodes, p)
	}
	return c
}

// Client returns a DHT client that has seen every storage node.
func (c *ProcCluster) Client(callTimeout time.Duration) *dht.Client {
	c.t.Helper()
	cl, err := dht.New(dht.Config{Placement: c.Places, CallTimeout: callTimeout}, Logger(c.t))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.WaitForNodes(ctx, len(c.Nodes)); err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// NodeID is the id the storage process p printed in its banner.
func NodeID(t testing.TB, p *Proc) string {
	t.Helper()
	for _, f := range p.Fields("blockstore", 10*time.Second) {
		if id, ok := strings.CutPrefix(f, "id="); ok {
			return id
		}
	}
	t.Fatalf("%s printed no node id", p.Name)
	return ""
}

// ViewNode finds p's entry in cl's view.
func ViewNode(t testing.TB, cl *dht.Client, p *Proc) *ppb.Node {
	t.Helper()
	id := NodeID(t, p)
	for _, n := range cl.View().Nodes {
		if n.Id == id {
			return n
		}
	}
	t.Fatalf("node %q not in view", id)
	return nil
}
