package s3

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"shoal/services/s3/sigv4"
)

// Key management errors.
var (
	ErrNoSuchAccessKey = errors.New("s3: no such access key")
	ErrInvalidUser     = errors.New("s3: invalid user name")
)

// keysName is the named block holding all access keys. One block holds a few
// thousand keys, which is plenty for a cluster's service accounts.
const keysName = "s3/keys"

// KeyInfo describes an access key; the secret is only returned by CreateKey.
type KeyInfo struct {
	ID      string
	User    string
	Created time.Time
}

type storedKey struct {
	Secret  string `json:"s"`
	User    string `json:"u"`
	Created int64  `json:"c"`
}

type keyTable struct {
	Keys map[string]storedKey `json:"keys"`
}

func decodeKeys(b []byte) (*keyTable, error) {
	t := &keyTable{}
	if len(b) > 0 {
		if err := json.Unmarshal(b, t); err != nil {
			return nil, fmt.Errorf("%w: keys: %v", errCorruptMeta, err)
		}
	}
	if t.Keys == nil {
		t.Keys = map[string]storedKey{}
	}
	return t, nil
}

func (s *Server) keysAddr(ctx context.Context) ([32]byte, error) {
	return s.named(ctx, keysName, []byte(`{"keys":{}}`))
}

// named resolves a well-known root, creating it on first use. Concurrent
// creators race on CreateNamed; the loser resolves the winner's block.
func (s *Server) named(ctx context.Context, name string, initial []byte) ([32]byte, error) {
	s.namesMu.Lock()
	a, ok := s.names[name]
	s.namesMu.Unlock()
	if ok {
		return a, nil
	}
	a, err := s.meta.ResolveName(ctx, name)
	if errors.Is(err, ErrNotFound) {
		a, err = s.meta.CreateNamed(ctx, name, initial)
		if errors.Is(err, ErrExists) {
			a, err = s.meta.ResolveName(ctx, name)
		}
	}
	if err != nil {
		return a, fmt.Errorf("s3: resolve %s: %w", name, err)
	}
	s.namesMu.Lock()
	s.names[name] = a
	s.namesMu.Unlock()
	return a, nil
}

// CreateKey makes a new access key for user and returns its id and secret.
func (s *Server) CreateKey(ctx context.Context, user string) (id, secret string, err error) {
	defer s.cache.dropKeys()
	if user == "" || len(user) > 64 || strings.ContainsAny(user, "\x00/") {
		return "", "", ErrInvalidUser
	}
	a, err := s.keysAddr(ctx)
	if err != nil {
		return "", "", err
	}
	var raw [20]byte
	_, _ = rand.Read(raw[:12])
	id = "SH" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:12])[:18]
	_, _ = rand.Read(raw[:])
	secret = base64.RawStdEncoding.EncodeToString(raw[:])[:26] + base64.RawURLEncoding.EncodeToString(raw[10:])[:14]
	_, err = s.meta.Update(ctx, a, func(cur []byte) ([]byte, error) {
		t, err := decodeKeys(cur)
		if err != nil {
			return nil, err
		}
		if _, dup := t.Keys[id]; dup {
			return nil, ErrExists
		}
		t.Keys[id] = storedKey{Secret: secret, User: user, Created: time.Now().Unix()}
		return json.Marshal(t)
	})
	if err != nil {
		return "", "", fmt.Errorf("s3: create key: %w", err)
	}
	return id, secret, nil
}

// ListKeys returns all access keys, sorted by id.
func (s *Server) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	t, err := s.loadKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(t.Keys))
	for id, k := range t.Keys {
		out = append(out, KeyInfo{ID: id, User: k.User, Created: time.Unix(k.Created, 0).UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// DeleteKey removes an access key; requests signed with it fail at once.
func (s *Server) DeleteKey(ctx context.Context, id string) error {
	defer s.cache.dropKeys()
	a, err := s.keysAddr(ctx)
	if err != nil {
		return err
	}
	_, err = s.meta.Update(ctx, a, func(cur []byte) ([]byte, error) {
		t, err := decodeKeys(cur)
		if err != nil {
			return nil, err
		}
		if _, ok := t.Keys[id]; !ok {
			return nil, ErrNoSuchAccessKey
		}
		delete(t.Keys, id)
		return json.Marshal(t)
	})
	if err != nil {
		return fmt.Errorf("s3: delete key %s: %w", id, err)
	}
	return nil
}

func (s *Server) loadKeys(ctx context.Context) (*keyTable, error) {
	a, err := s.keysAddr(ctx)
	if err != nil {
		return nil, err
	}
	b, _, err := s.meta.Get(ctx, a)
	if err != nil {
		return nil, fmt.Errorf("s3: read keys: %w", err)
	}
	return decodeKeys(b)
}

// lookupKey returns the secret and user of an access key. The key table is
// reused for Config.MetaCacheTTL, so a key deleted through another server
// stops working here within that time (at once through this one).
func (s *Server) lookupKey(ctx context.Context, id string) (secret, user string, err error) {
	t := s.cache.getKeys()
	if _, ok := t.lookup(id); !ok {
		// Unknown ids are never answered from the cache: a key created
		// through another server or the CLI works at once.
		if t, err = s.loadKeys(ctx); err != nil {
			return "", "", err
		}
		s.cache.putKeys(t)
	}
	k, ok := t.Keys[id]
	if !ok {
		return "", "", sigv4.ErrInvalidAccessKey
	}
	return k.Secret, k.User, nil
}

func (t *keyTable) lookup(id string) (storedKey, bool) {
	if t == nil {
		return storedKey{}, false
	}
	k, ok := t.Keys[id]
	return k, ok
}
