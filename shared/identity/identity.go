// Package identity keeps users' ed25519 key pairs on the local machine, one
// file per user under $XDG_CONFIG_HOME/shoal/users (mode 0600). Keys sign
// mutable-block versions; the cluster never sees a private key.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// DefaultUser is the user the all-in-one creates on first run.
const DefaultUser = "default"

var (
	// ErrNoUser means no key pair is stored under that name.
	ErrNoUser = errors.New("identity: no such user")
	// ErrUserExists means create found the name taken.
	ErrUserExists = errors.New("identity: user exists")
	// ErrBadName means the user name is not allowed.
	ErrBadName = errors.New("identity: user names are 1-64 of [a-zA-Z0-9_.-]")
)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,64}$`)

// Store is a directory of key files.
type Store struct{ Dir string }

// DefaultStore is $XDG_CONFIG_HOME/shoal/users, or ~/.config/shoal/users.
func DefaultStore() Store {
	base := os.Getenv("XDG_CONFIG_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "."
		}
		base = filepath.Join(home, ".config")
	}
	return Store{Dir: filepath.Join(base, "shoal", "users")}
}

// User is a named key pair.
type User struct {
	Name string
	Key  ed25519.PrivateKey
}

// Public returns the user's public key.
func (u User) Public() ed25519.PublicKey { return u.Key.Public().(ed25519.PublicKey) }

func (s Store) path(name string) string { return filepath.Join(s.Dir, name+".key") }

// Create makes a new key pair for name.
func (s Store) Create(name string) (User, error) {
	if !nameRE.MatchString(name) {
		return User{}, ErrBadName
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return User{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return User{}, err
	}
	f, err := os.OpenFile(s.path(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return User{}, fmt.Errorf("%w: %s", ErrUserExists, name)
	}
	if err != nil {
		return User{}, err
	}
	_, err = fmt.Fprintln(f, hex.EncodeToString(priv.Seed()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return User{name, priv}, err
}

// Load reads name's key pair.
func (s Store) Load(name string) (User, error) {
	if !nameRE.MatchString(name) {
		return User{}, ErrBadName
	}
	k, err := LoadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return User{}, fmt.Errorf("%w: %s (create it with 'shoal user create %s')", ErrNoUser, name, name)
	}
	if err != nil {
		return User{}, err
	}
	return User{name, k}, nil
}

// LoadFile reads a key file (one line: the hex ed25519 seed) from any path,
// e.g. a swarm secret shared by the replicas of a service.
func LoadFile(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity: %s: malformed key file", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadOrCreate loads name, creating it if absent.
func (s Store) LoadOrCreate(name string) (User, bool, error) {
	u, err := s.Load(name)
	if errors.Is(err, ErrNoUser) {
		u, err = s.Create(name)
		if errors.Is(err, ErrUserExists) {
			u, err = s.Load(name)
			return u, false, err
		}
		return u, err == nil, err
	}
	return u, false, err
}

// List returns the stored user names.
func (s Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".key"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}
