package nbd

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config configures the NBD frontend.
type Config struct {
	// Addr is the NBD listen address (10809 is NBD's registered port).
	Addr string `yaml:"addr"`
	// Dedup is the dedup tier's gRPC address when it runs in another
	// process.
	Dedup string `yaml:"dedup"`
	// KeyFile holds the ed25519 key signing volume heads; every NBD
	// server of a cluster and the admin CLI share it. Empty means
	// <data>/nbd/signing.key, created on first use.
	KeyFile string `yaml:"key_file"`
	// MaxDirty bounds the bytes a volume holds written but not committed;
	// a write that reaches it commits first (backpressure).
	MaxDirty int64 `yaml:"max_dirty"`
	// FlushInterval commits a volume's writes when no client flushed for
	// this long, bounding what a crash of this server loses from clients
	// that never flush.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// LeaseTTL is how long a volume's write lease lasts unrenewed: after
	// a server dies, another can open the volume this much later.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// CacheBytes is the clean-extent cache per open volume.
	CacheBytes int64 `yaml:"cache_bytes"`
	// ID names this server in volume leases. A server restarted under
	// the same ID takes its volumes back at once; under a new one it
	// waits for their leases to expire. Empty: a random one.
	ID string `yaml:"id"`
}

// DefaultConfig returns the defaults RegisterFlags installs.
func DefaultConfig() Config {
	return Config{
		Addr:          ":10809",
		Dedup:         "127.0.0.1:7300",
		MaxDirty:      64 << 20,
		FlushInterval: 5 * time.Second,
		LeaseTTL:      30 * time.Second,
		CacheBytes:    64 << 20,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxDirty <= 0 {
		c.MaxDirty = d.MaxDirty
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = d.FlushInterval
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = d.CacheBytes
	}
	return c
}

// RegisterFlags registers the config's flags under prefix (e.g. "nbd.").
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.StringVar(&c.Addr, prefix+"addr", d.Addr, "NBD listen address.")
	fs.StringVar(&c.Dedup, prefix+"dedup", d.Dedup, "Dedup service address, used when dedup is not in this process.")
	fs.StringVar(&c.KeyFile, prefix+"key-file", d.KeyFile, "Key file signing volume heads, shared by all NBD servers of a cluster (default: <data>/nbd/signing.key, created when missing).")
	fs.Int64Var(&c.MaxDirty, prefix+"max-dirty", d.MaxDirty, "Bytes a volume may hold written but uncommitted before a write commits them.")
	fs.DurationVar(&c.FlushInterval, prefix+"flush-interval", d.FlushInterval, "Commit a volume's writes after this long without a client flush.")
	fs.DurationVar(&c.LeaseTTL, prefix+"lease-ttl", d.LeaseTTL, "Write lease term: how long after a server dies another may open its volumes.")
	fs.Int64Var(&c.CacheBytes, prefix+"cache-bytes", d.CacheBytes, "Clean-extent cache per open volume, in bytes.")
	fs.StringVar(&c.ID, prefix+"id", d.ID, "Name of this server in volume leases; two live servers must never share one (default: kept in <data>/nbd/server-id).")
}

// ErrConfig marks an invalid configuration.
var ErrConfig = errors.New("nbd: invalid config")

// Validate checks the config.
func (c *Config) Validate() error {
	switch {
	case c.MaxDirty < 1<<20:
		return fmt.Errorf("%w: max dirty must be at least 1 MiB", ErrConfig)
	case c.FlushInterval <= 0 || c.LeaseTTL < 3*time.Second:
		return fmt.Errorf("%w: flush interval must be positive and the lease at least 3s", ErrConfig)
	case c.FlushInterval >= c.LeaseTTL:
		return fmt.Errorf("%w: flush interval %s must be below the lease term %s", ErrConfig, c.FlushInterval, c.LeaseTTL)
	}
	return nil
}
