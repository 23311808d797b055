package framework

import (
	"context"
	"path/filepath"
	"time"

	"shoal/services/dedup"
	"shoal/services/dedup/client"
	"shoal/shared/block"
	"shoal/shared/dht"
)

// Dedup is a dedup server running on a cluster, with a client dialed to it.
type Dedup struct {
	Service *dedup.Service
	Client  *client.Client
	DHT     *dht.Client
}

// StartDedup starts a dedup server on the cluster (its master key under the
// cluster's directory, so several servers started by one test share it) and
// dials it. Both stop at test end. Nodes must accept sealed chunks: start
// the cluster with MaxBlockSize: block.MaxSealed.
func (c *Cluster) StartDedup(cfg dedup.Config) *Dedup {
	c.t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Dir == "" && cfg.MasterKeyFile == "" {
		cfg.Dir = filepath.Join(c.dir, "dedup")
	}
	dc := c.Client(dht.Config{MaxBlockSize: block.MaxSealed, CallTimeout: 10 * time.Second})
	s, err := dedup.New(cfg, dc, c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = s.Stop() })
	cl, err := client.Dial(s.Addr())
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = cl.Close() })
	return &Dedup{Service: s, Client: cl, DHT: dc}
}

// PhysicalBytes is the block bytes held by the cluster's running nodes.
func (c *Cluster) PhysicalBytes() int64 {
	var n int64
	for _, node := range c.Nodes {
		if node == nil {
			continue
		}
		used, _, _ := node.Silo().Usage()
		n += int64(used)
	}
	return n
}
