package s3

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("s3: invalid config")

// Limits fixed by the S3 protocol.
const (
	maxSinglePut   = 5 << 30 // 5 GiB: largest PutObject / UploadPart
	maxObjectLimit = 5 << 40 // 5 TiB: largest object
	minPartSize    = 5 << 20 // 5 MiB: smallest non-last multipart part
	maxParts       = 10000
	maxKeyLen      = 1024
	maxUserMeta    = 2 << 10 // user metadata bytes, as AWS
	maxXMLBody     = 4 << 20 // CompleteMultipartUpload with 10000 parts fits
)

// Config configures the S3 frontend. The zero value is not valid; use
// RegisterFlags or DefaultConfig.
type Config struct {
	// Addr is the listen address.
	Addr string `yaml:"addr"`
	// Region is the only region accepted in signatures.
	Region string `yaml:"region"`
	// Domain enables virtual-host-style addressing: requests to
	// <bucket>.<Domain> address <bucket>. Path style always works.
	Domain string `yaml:"domain"`
	// MaxObjectSize bounds a completed object (at most 5 TiB).
	MaxObjectSize int64 `yaml:"max_object_size"`
	// MaxHeaderBytes bounds request headers.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// ClockSkew is how far a signed request's time may be from ours.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// ShardSplitBytes is the size above which a bucket index shard splits.
	// It must leave room under the ~1 MiB block limit.
	ShardSplitBytes int `yaml:"shard_split_bytes"`
	// ShutdownTimeout bounds graceful shutdown in Serve.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Dedup is the dedup tier's gRPC address (the DataStore) when it runs
	// in another process.
	Dedup string `yaml:"dedup"`
	// KeyFile holds the ed25519 key (identity key file format) that signs
	// every metadata block. All S3 servers of a cluster must share it (a
	// swarm secret); empty means <data>/s3/signing.key, created on first use.
	KeyFile string `yaml:"key_file"`
	// MetaCacheTTL is how long a server reuses an access-key table or a
	// bucket record it read, instead of a quorum read per request. Unknown
	// keys and buckets are always read afresh; a key deleted or a bucket
	// setting changed through another server (or the CLI) takes effect
	// here within this time, as with AWS's eventually
	// consistent IAM and bucket configuration; a change made through this
	// server drops its own cached copy. 0 reads on every request.
	MetaCacheTTL time.Duration `yaml:"meta_cache_ttl"`
	// DirectReads makes the server read unencrypted objects from the
	// storage nodes itself (shared/dedup's reader on its own DHT client),
	// instead of through the dedup tier: one hop less for every byte of
	// every GET. Encrypted objects are read through the tier, which holds
	// the keys. Writes always go through the tier.
	DirectReads bool `yaml:"direct_reads"`
	// MinPartSize is the smallest non-last multipart part (5 MiB in AWS;
	// lowered only by tests).
	MinPartSize int64 `yaml:"-"`
}

// DefaultConfig returns the defaults RegisterFlags installs.
func DefaultConfig() Config {
	return Config{
		Addr:            ":9000",
		Region:          "us-east-1",
		DirectReads:     true,
		MaxObjectSize:   maxObjectLimit,
		MaxHeaderBytes:  64 << 10,
		ClockSkew:       15 * time.Minute,
		ShardSplitBytes: 256 << 10,
		ShutdownTimeout: 30 * time.Second,
		MinPartSize:     minPartSize,
		Dedup:           "127.0.0.1:7300",
		MetaCacheTTL:    time.Second,
	}
}

// RegisterFlags registers the config's flags under prefix (e.g. "s3.").
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.StringVar(&c.Addr, prefix+"addr", d.Addr, "S3 listen address.")
	fs.StringVar(&c.Region, prefix+"region", d.Region, "S3 region accepted in request signatures.")
	fs.StringVar(&c.Domain, prefix+"domain", d.Domain, "Domain for virtual-host-style requests (<bucket>.<domain>); empty allows path style only.")
	fs.Int64Var(&c.MaxObjectSize, prefix+"max-object-size", d.MaxObjectSize, "Largest object in bytes (at most 5 TiB).")
	fs.IntVar(&c.MaxHeaderBytes, prefix+"max-header-bytes", d.MaxHeaderBytes, "Largest request header block in bytes.")
	fs.DurationVar(&c.ClockSkew, prefix+"clock-skew", d.ClockSkew, "Largest accepted difference between a signed request's time and ours.")
	fs.IntVar(&c.ShardSplitBytes, prefix+"shard-split-bytes", d.ShardSplitBytes, "Bucket index shard size that triggers a split.")
	fs.DurationVar(&c.ShutdownTimeout, prefix+"shutdown-timeout", d.ShutdownTimeout, "How long graceful shutdown waits for requests in flight.")
	fs.StringVar(&c.Dedup, prefix+"dedup", d.Dedup, "Dedup service address, used when dedup is not in this process.")
	fs.StringVar(&c.KeyFile, prefix+"key-file", d.KeyFile, "Key file signing S3 metadata, shared by all S3 servers of a cluster (default: <data>/s3/signing.key, created when missing).")
	fs.DurationVar(&c.MetaCacheTTL, prefix+"meta-cache-ttl", d.MetaCacheTTL, "How long an access-key table or bucket record read is reused; changes made through other servers apply here within this time (0: read per request).")
	fs.BoolVar(&c.DirectReads, prefix+"direct-reads", d.DirectReads, "Read unencrypted objects from the storage nodes directly instead of through the dedup tier (one hop less per byte).")
	c.MinPartSize = d.MinPartSize
}

// Validate checks the config.
func (c *Config) Validate() error {
	switch {
	case c.Region == "":
		return fmt.Errorf("%w: region is empty", ErrConfig)
	case c.MaxObjectSize <= 0 || c.MaxObjectSize > maxObjectLimit:
		return fmt.Errorf("%w: max object size must be in (0, 5 TiB]", ErrConfig)
	case c.MaxHeaderBytes < 8<<10:
		return fmt.Errorf("%w: max header bytes must be at least 8 KiB", ErrConfig)
	case c.ClockSkew <= 0:
		return fmt.Errorf("%w: clock skew must be positive", ErrConfig)
	case c.ShardSplitBytes < 1<<10 || c.ShardSplitBytes > 512<<10:
		return fmt.Errorf("%w: shard split bytes must be in [1 KiB, 512 KiB]", ErrConfig)
	case c.MinPartSize < 0:
		return fmt.Errorf("%w: min part size is negative", ErrConfig)
	case strings.HasPrefix(c.Domain, ".") || strings.Contains(c.Domain, "/"):
		return fmt.Errorf("%w: domain %q", ErrConfig, c.Domain)
	}
	return nil
}
