package dedup

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config configures a dedup server.
type Config struct {
	Listen string `yaml:"listen"`
	// MasterKeyFile holds the tier's 32-byte master secret, hex-encoded
	// (a swarm secret in a deployment; every replica needs the same one).
	// Volume keys and the root-set signing key are derived from it.
	MasterKeyFile string `yaml:"master_key_file"`
	// Dir is where a master key is generated on first start when no
	// MasterKeyFile is given (the all-in-one: <data>/dedup).
	Dir string `yaml:"dir"`
	// MaxInFlight bounds the bytes one Write holds (its memory bound).
	MaxInFlight int64 `yaml:"max_in_flight"`
	// ReadaheadBytes is how far ahead of the client a Read fetches.
	ReadaheadBytes int64 `yaml:"readahead_bytes"`
	// CollectInterval runs a reclamation cycle this often (0 = only when
	// asked, e.g. by `shoal gc`); CollectGrace is its grace period.
	CollectInterval time.Duration `yaml:"collect_interval"`
	CollectGrace    time.Duration `yaml:"collect_grace"`
	// JournalRetireAfter is how long a root journal's owner may stay
	// silent before another process retires the journal (journal.go);
	// JournalFoldEvery bounds how long adds wait in a journal.
	JournalRetireAfter time.Duration `yaml:"journal_retire_after"`
	JournalFoldEvery   time.Duration `yaml:"journal_fold_every"`
}

// Defaults of the root journals' timing, also taken when a Config leaves
// them zero.
const (
	defaultJournalRetireAfter = 10 * time.Minute
	defaultJournalFoldEvery   = 30 * time.Minute
)

// RegisterFlags registers the server's flags under prefix (e.g. "dedup.").
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, prefix+"listen", "127.0.0.1:7300", "gRPC listen address")
	fs.StringVar(&c.MasterKeyFile, prefix+"master-key-file", "", "file holding the hex 32-byte master key shared by all dedup replicas (default: generated once under -dedup.dir)")
	fs.StringVar(&c.Dir, prefix+"dir", "", "directory for a generated master key (default: <data>/dedup)")
	fs.Int64Var(&c.MaxInFlight, prefix+"max-in-flight", 64<<20, "bytes one write may hold in memory")
	fs.Int64Var(&c.ReadaheadBytes, prefix+"readahead-bytes", 16<<20, "bytes a read fetches ahead of the client (its memory bound, plus two chunks)")
	fs.DurationVar(&c.CollectInterval, prefix+"collect-interval", 0, "run space reclamation this often (0 = only on request)")
	fs.DurationVar(&c.JournalRetireAfter, prefix+"journal-retire-after", defaultJournalRetireAfter, "retire (fold and drop) a root journal whose dedup process has been silent this long")
	fs.DurationVar(&c.JournalFoldEvery, prefix+"journal-fold-every", defaultJournalFoldEvery, "fold this process's root journal into the root set at least this often")
	fs.DurationVar(&c.CollectGrace, prefix+"collect-grace", 6*time.Hour, "grace period of periodic reclamation: blocks touched more recently are kept; must exceed the longest write plus the nodes' clock drift")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Listen == "":
		return errors.New("dedup: -dedup.listen is required")
	case c.MasterKeyFile == "" && c.Dir == "":
		return errors.New("dedup: -dedup.master-key-file or -dedup.dir is required")
	case c.MaxInFlight < 0 || c.ReadaheadBytes < 0:
		return errors.New("dedup: -dedup.max-in-flight and -dedup.readahead-bytes must not be negative")
	case c.CollectInterval < 0 || c.CollectGrace < 0:
		return errors.New("dedup: collection interval and grace must not be negative")
	case c.JournalRetireAfter < 0 || c.JournalFoldEvery < 0:
		return errors.New("dedup: -dedup.journal-retire-after and -dedup.journal-fold-every must not be negative")
	}
	return nil
}

// keys are the secrets derived from the master key.
type keys struct {
	master []byte
	sign   ed25519.PrivateKey
}

const masterKeyName = "master.key"

// loadKeys reads the master key file, or loads or creates one under dir.
func loadKeys(cfg Config) (*keys, error) {
	path := cfg.MasterKeyFile
	if path == "" {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, err
		}
		path = filepath.Join(cfg.Dir, masterKeyName)
		if err := createKey(path); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dedup: master key: %w", err)
	}
	master, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(master) != 32 {
		return nil, fmt.Errorf("dedup: master key %s: want 64 hex digits", path)
	}
	return &keys{master: master, sign: ed25519.NewKeyFromSeed(derive(master, "root-set signing key"))}, nil
}

// createKey writes a fresh key to path unless one is there (O_EXCL, so two
// processes starting together agree on one key).
func createKey(path string) error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, hex.EncodeToString(k[:]))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func derive(master []byte, label string) []byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte("shoal/dedup/" + label))
	return m.Sum(nil)
}

// volumeKey is HMAC(master, volume): stable, so equal chunks of one volume
// dedupe across writes and replicas, and distinct per volume.
func (k *keys) volumeKey(volume string) []byte { return derive(k.master, "volume\x00"+volume) }
