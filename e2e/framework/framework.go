// Package framework starts Shoal clusters for tests: in-process (embedded
// NATS, real gRPC on 127.0.0.1, real silos on disk) and as separate
// processes of the built binary. Scenario bodies use either the same way.
package framework

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"shoal/services/blockstore"
	"shoal/services/natsd"
	"shoal/services/placement"
	"shoal/shared/dht"
)

// Options shape an in-process cluster.
type Options struct {
	Nodes      int
	Placements int
	Zones      int // 0: one zone per node
	DownAfter  time.Duration
	EvictAfter time.Duration
	Heartbeat  time.Duration
	// MaxBlockSize is what nodes accept (0: 4 MiB; block.MaxSealed for
	// clusters under the dedup tier).
	MaxBlockSize int
}

// Cluster is an in-process cluster.
type Cluster struct {
	t      testing.TB
	opts   Options
	dir    string
	log    *slog.Logger
	NATS   *natsd.Server
	nc     *nats.Conn
	Places []*placement.Service
	Nodes  []*blockstore.Node
	cfgs   []blockstore.Config
}

// Logger returns a logger that writes through t.Log, quiet below warnings.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// Start starts a cluster and waits until every node is in the view.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Placements == 0 {
		o.Placements = 1
	}
	if o.DownAfter == 0 {
		o.DownAfter = 2 * time.Second
	}
	if o.EvictAfter == 0 {
		o.EvictAfter = time.Minute
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 200 * time.Millisecond
	}
	if o.MaxBlockSize == 0 {
		o.MaxBlockSize = 4 << 20
	}
	c := &Cluster{t: t, opts: o, dir: t.TempDir(), log: Logger(t)}
	ns, err := natsd.Start(natsd.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	c.NATS = ns
	c.nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	for range o.Placements {
		p, err := placement.New(placement.Config{Listen: "127.0.0.1:0", DownAfter: o.DownAfter, EvictAfter: o.EvictAfter, Replicas: 3}, c.nc, c.log)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.Places = append(c.Places, p)
	}
	for i := range o.Nodes {
		zone := fmt.Sprintf("z%d", i+1)
		if o.Zones > 0 {
			zone = fmt.Sprintf("z%d", i%o.Zones+1)
		}
		cfg := blockstore.Config{
			ID: fmt.Sprintf("node-%d", i+1), Listen: "127.0.0.1:0", Zone: zone,
			Dir: filepath.Join(c.dir, fmt.Sprintf("node-%d", i+1)), MaxBlockSize: o.MaxBlockSize,
			SegmentThreshold: 32 << 10, HeartbeatInterval: o.Heartbeat,
			// Tests compact explicitly (Silo().Compact), so segment sizes
			// they check do not change under them.
			CompactInterval: -1,
		}
		c.cfgs = append(c.cfgs, cfg)
		c.Nodes = append(c.Nodes, nil)
		c.StartNode(i)
	}
	t.Cleanup(c.Stop)
	cl := c.Client(dht.Config{})
	// Nodes join within a heartbeat or two; the deadline is generous
	// because make test runs every suite at once on a small machine.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.WaitForNodes(ctx, o.Nodes); err != nil {
		t.Fatal(err)
	}
	return c
}

// StartNode (re)starts node i on its data directory. A restarted node keeps
// its id and blocks; it may listen on a new port.
func (c *Cluster) StartNode(i int) {
	c.t.Helper()
	cfg := c.cfgs[i]
	if n := c.Nodes[i]; n != nil {
		// Reuse the port so clients holding the old address reconnect.
		cfg.Listen = n.Addr()
	}
	n, err := blockstore.New(cfg, c.nc, c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.Nodes[i] = n
}

// StopNode stops node i without announcing a leave, as a crash would look
// to the rest of the cluster.
func (c *Cluster) StopNode(i int) {
	c.t.Helper()
	if err := c.Nodes[i].Stop(false); err != nil {
		c.t.Fatal(err)
	}
}

// PlacementAddrs lists the placement replicas.
func (c *Cluster) PlacementAddrs() []string {
	var out []string
	for _, p := range c.Places {
		out = append(out, p.Addr())
	}
	return out
}

// Client returns a DHT client on the cluster, closed at test end. Zero
// fields of cfg take the cluster's defaults.
func (c *Cluster) Client(cfg dht.Config) *dht.Client {
	c.t.Helper()
	if len(cfg.Placement) == 0 {
		cfg.Placement = c.PlacementAddrs()
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 3 * time.Second
	}
	cl, err := dht.New(cfg, c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// Dir is the cluster's data directory.
func (c *Cluster) Dir() string { return c.dir }

// NodeDir is node i's data directory.
func (c *Cluster) NodeDir(i int) string { return c.cfgs[i].Dir }

// Stop stops everything.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n != nil {
			_ = n.Stop(false)
		}
	}
	for _, p := range c.Places {
		_ = p.Stop()
	}
	if c.nc != nil {
		c.nc.Close()
	}
	if c.NATS != nil {
		c.NATS.Stop()
	}
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TempDir is os.MkdirTemp for helpers outside a test.
func TempDir() (string, error) { return os.MkdirTemp("", "shoal-e2e-") }
