package blockstore

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"shoal/shared/block"
	"shoal/shared/membership"
)

// Config configures one storage node.
type Config struct {
	ID                string        `yaml:"id"`
	Listen            string        `yaml:"listen"`
	Advertise         string        `yaml:"advertise"`
	AdvertiseNetwork  string        `yaml:"advertise_network"`
	Zone              string        `yaml:"zone"`
	Dir               string        `yaml:"dir"`
	Capacity          uint64        `yaml:"capacity"`
	MaxBlockSize      int           `yaml:"max_block_size"`
	SegmentThreshold  int           `yaml:"segment_threshold"`
	CompactInterval   time.Duration `yaml:"compact_interval"`
	CompactDead       float64       `yaml:"compact_dead"`
	CompactRate       int64         `yaml:"compact_rate"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
}

// RegisterFlags registers the node's flags under prefix (e.g. "blockstore.").
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	fs.StringVar(&c.ID, prefix+"id", "", "node id (default: generated once and kept in the data directory)")
	fs.StringVar(&c.Listen, prefix+"listen", "127.0.0.1:7200", "gRPC listen address")
	fs.StringVar(&c.Advertise, prefix+"advertise", "", "address other nodes dial (default: the listen address)")
	fs.StringVar(&c.AdvertiseNetwork, prefix+"advertise-network", "", "with no -blockstore.advertise and an unspecified listen host, advertise this host's IPv4 inside this CIDR or on this interface (default: the first non-loopback IPv4)")
	fs.StringVar(&c.Zone, prefix+"zone", "z1", "failure zone; replicas are spread over zones")
	fs.StringVar(&c.Dir, prefix+"dir", "", "silo directory (default: <data>/blockstore)")
	fs.Uint64Var(&c.Capacity, prefix+"capacity", 0, "bytes of block data this node may hold (0 = unlimited)")
	fs.IntVar(&c.MaxBlockSize, prefix+"max-block-size", block.MaxSealed, "largest block accepted, in bytes")
	fs.IntVar(&c.SegmentThreshold, prefix+"segment-threshold", 1<<10, "blocks this large or larger are stored in segment files rather than the LSM")
	fs.DurationVar(&c.CompactInterval, prefix+"compact-interval", time.Minute, "how often segment files are checked for compaction, which returns space freed by deletes to the disk (negative: never)")
	fs.Float64Var(&c.CompactDead, prefix+"compact-dead", 0.5, "fraction of a segment file's bytes that must be dead (deleted blocks) for it to be compacted, in (0, 1]")
	fs.Int64Var(&c.CompactRate, prefix+"compact-rate", 64<<20, "bytes per second a compaction may copy (negative: unbounded)")
	fs.DurationVar(&c.HeartbeatInterval, prefix+"heartbeat-interval", membership.DefaultHeartbeatInterval, "how often the node announces itself on NATS")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("blockstore: -blockstore.dir is required")
	case c.Listen == "":
		return errors.New("blockstore: -blockstore.listen is required")
	case c.MaxBlockSize <= 0:
		return errors.New("blockstore: -blockstore.max-block-size must be positive")
	case c.HeartbeatInterval <= 0:
		return errors.New("blockstore: -blockstore.heartbeat-interval must be positive")
	case c.CompactDead < 0 || c.CompactDead > 1: // 0: the default
		return fmt.Errorf("blockstore: -blockstore.compact-dead %v is not in (0, 1]", c.CompactDead)
	}
	if c.AdvertiseNetwork != "" && !strings.Contains(c.AdvertiseNetwork, "/") {
		// An interface name: containers may start before it exists, so
		// only its syntax is checked here.
		if strings.ContainsAny(c.AdvertiseNetwork, " :") {
			return fmt.Errorf("blockstore: -blockstore.advertise-network %q is neither a CIDR nor an interface name", c.AdvertiseNetwork)
		}
	} else if c.AdvertiseNetwork != "" {
		if _, _, err := net.ParseCIDR(c.AdvertiseNetwork); err != nil {
			return fmt.Errorf("blockstore: -blockstore.advertise-network: %w", err)
		}
	}
	return nil
}
