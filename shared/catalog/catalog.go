// Package catalog keeps a sorted set of names in one named mutable block:
// how a frontend lists its volumes (NBD, file systems) without a server.
// Every change is a Paxos read-modify-write of the block, so concurrent
// creators on different hosts never lose a name. One block suits the
// hundreds to thousands of volumes a cluster has, not millions of keys
// (the S3 index shards for those).
package catalog

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"shoal/shared/block"
	"shoal/shared/dht"
)

// Catalog is the set named name, owned by key.
type Catalog struct {
	dht  *dht.Client
	key  ed25519.PrivateKey
	pub  ed25519.PublicKey
	name string
}

// New returns the catalog kept in key's named block called name.
func New(dc *dht.Client, key ed25519.PrivateKey, name string) *Catalog {
	return &Catalog{dht: dc, key: key, pub: key.Public().(ed25519.PublicKey), name: name}
}

// Add puts name in the set (no change if present).
func (c *Catalog) Add(ctx context.Context, name string) error {
	return c.update(ctx, func(names []string) []string {
		if i, ok := slices.BinarySearch(names, name); !ok {
			names = slices.Insert(names, i, name)
		}
		return names
	})
}

// Remove takes name out of the set (no change if absent).
func (c *Catalog) Remove(ctx context.Context, name string) error {
	return c.update(ctx, func(names []string) []string {
		if i, ok := slices.BinarySearch(names, name); ok {
			names = slices.Delete(names, i, i+1)
		}
		return names
	})
}

// Names returns the set, sorted.
func (c *Catalog) Names(ctx context.Context) ([]string, error) {
	m, err := c.dht.ResolveName(ctx, c.pub, c.name)
	if errors.Is(err, block.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return c.decode(m.Payload)
}

func (c *Catalog) update(ctx context.Context, fn func([]string) []string) error {
	addr := block.NamedAddress(c.pub, c.name)
	_, err := c.dht.Update(ctx, c.key, addr, func(cur []byte, _ uint64) ([]byte, error) {
		names, err := c.decode(cur)
		if err != nil {
			return nil, err
		}
		return json.Marshal(fn(names))
	})
	if errors.Is(err, block.ErrNotFound) {
		// The first name: create the block, or, if another host just
		// did, update it.
		b, _ := json.Marshal(fn(nil))
		if err = c.dht.CreateName(ctx, c.key, c.name, b); errors.Is(err, dht.ErrExists) {
			return c.update(ctx, fn)
		}
	}
	return err
}

func (c *Catalog) decode(b []byte) ([]string, error) {
	var names []string
	if len(b) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(b, &names); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", c.name, err)
	}
	return names, nil
}

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// CheckName is ValidName as an error that says what a name may be.
func CheckName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("volume name %q: 1-63 of a-z A-Z 0-9 . _ -, starting with a letter or digit", name)
	}
	return nil
}

// ValidName reports whether name is a volume name every frontend and
// client can carry plainly (an NBD export name, a Docker volume name, a
// path element): 1-63 of a-z A-Z 0-9 . _ -, starting with a letter or
// digit.
func ValidName(name string) bool { return validName.MatchString(name) }
