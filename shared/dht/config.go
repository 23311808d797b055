package dht

import (
	"errors"
	"flag"
	"strings"
	"time"
)

// Config configures a DHT client.
type Config struct {
	// Placement lists placement replicas; any of them will do.
	Placement    []string      `yaml:"placement"`
	Replicas     int           `yaml:"replicas"`
	WriteQuorum  int           `yaml:"write_quorum"`
	CallTimeout  time.Duration `yaml:"call_timeout"`
	MaxBlockSize int           `yaml:"max_block_size"`
}

type stringList struct{ p *[]string }

func (s stringList) String() string {
	if s.p == nil {
		return ""
	}
	return strings.Join(*s.p, ",")
}

func (s stringList) Set(v string) error {
	*s.p = nil
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			*s.p = append(*s.p, x)
		}
	}
	return nil
}

// RegisterFlags registers the client's flags under prefix (e.g. "dht.").
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	if len(c.Placement) == 0 {
		c.Placement = []string{"127.0.0.1:7100"}
	}
	fs.Var(stringList{&c.Placement}, prefix+"placement", "comma-separated placement replica addresses")
	fs.IntVar(&c.Replicas, prefix+"replication-factor", 3, "replicas written for each immutable block (R)")
	fs.IntVar(&c.WriteQuorum, prefix+"write-quorum", 0, "acknowledgements before a write returns (W; 0 = majority of R)")
	fs.DurationVar(&c.CallTimeout, prefix+"call-timeout", 10*time.Second, "deadline of one replica call")
	fs.IntVar(&c.MaxBlockSize, prefix+"max-block-size", 4<<20, "largest block a client may write, in bytes")
}

// Validate checks the configuration and fills derived defaults.
func (c *Config) Validate() error {
	if len(c.Placement) == 0 {
		return errors.New("dht: at least one placement address is required")
	}
	if c.Replicas <= 0 {
		c.Replicas = 3
	}
	if c.WriteQuorum <= 0 {
		c.WriteQuorum = c.Replicas/2 + 1
	}
	if c.WriteQuorum > c.Replicas {
		return errors.New("dht: write quorum larger than the replication factor")
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 10 * time.Second
	}
	if c.MaxBlockSize <= 0 {
		c.MaxBlockSize = 4 << 20
	}
	return nil
}
