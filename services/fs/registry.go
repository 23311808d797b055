package fs

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"shoal/shared/block"
	"shoal/shared/catalog"
	"shoal/shared/dedup/policy"
	"shoal/shared/dht"
)

// Data is what the file system needs from the dedup tier
// (*client.Client).
type Data interface {
	Write(ctx context.Context, policy, volume string, r io.Reader) (ref []byte, size int64, etag string, err error)
	Read(ctx context.Context, ref []byte, volume string, off, n int64) (io.ReadCloser, error)
	Release(ctx context.Context, ref []byte, volume string) error
}

// offerer is a Data that can write by offering chunk hashes first
// (*client.Client): a close rewrites the whole file, and this way only the
// chunks that changed are sent.
type offerer interface {
	WriteOffered(ctx context.Context, policy, volume string, r io.Reader) (ref []byte, size int64, etag string, err error)
}

// Errors of the registry.
var (
	ErrExists   = errors.New("fs: volume exists")
	ErrNotFound = errors.New("fs: no such volume")
	ErrInvalid  = errors.New("fs: invalid argument")
)

// head is a volume's head block payload.
type head struct {
	Policy  string    `json:"policy,omitempty"`
	Root    string    `json:"root"`
	Created time.Time `json:"created"`
}

// Info describes a volume.
type Info struct {
	Name    string
	Policy  string
	Root    block.Address
	Created time.Time
}

// Registry keeps the volumes' heads and the catalog of their names.
type Registry struct {
	dht     *dht.Client
	key     ed25519.PrivateKey
	pub     ed25519.PublicKey
	catalog *catalog.Catalog
}

// NewRegistry returns the registry signed by key (every mount and the
// admin CLI of a cluster share it).
func NewRegistry(dc *dht.Client, key ed25519.PrivateKey) *Registry {
	return &Registry{dht: dc, key: key, pub: key.Public().(ed25519.PublicKey), catalog: catalog.New(dc, key, catalogName)}
}

const catalogName = "shoal/fs/catalog"

func headName(volume string) string { return "shoal/fs/volume/" + volume }

// DataVolume is the dedup volume (encryption key scope) of a volume's
// file data.
func DataVolume(name string) string { return "fs/" + name }

// ValidateName refuses volume names other than 1-63 of a-z A-Z 0-9 . _ -.
func ValidateName(name string) error {
	if err := catalog.CheckName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Create records a new, empty volume under pol ("" = the dedup tier's
// default policy).
func (r *Registry) Create(ctx context.Context, name, pol string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if pol != "" {
		p, err := policy.Parse(pol)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		pol = p.String()
	}
	now := time.Now().UnixNano()
	root := &Inode{Kind: KindDir, Mode: 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now, Entries: map[string]Entry{}}
	rb, _ := root.Encode()
	addr, err := r.dht.CreateMutable(ctx, r.key, rb, nil)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(head{Policy: pol, Root: addr.String(), Created: time.Now().UTC()})
	if err := r.dht.CreateName(ctx, r.key, headName(name), b); err != nil {
		_ = r.dht.DeleteMutable(ctx, r.key, addr)
		if errors.Is(err, dht.ErrExists) {
			return fmt.Errorf("%w: %s", ErrExists, name)
		}
		return err
	}
	return r.catalog.Add(ctx, name)
}

// Stat describes one volume.
func (r *Registry) Stat(ctx context.Context, name string) (Info, error) {
	if err := ValidateName(name); err != nil {
		return Info{}, err
	}
	m, err := r.dht.ResolveName(ctx, r.pub, headName(name))
	if errors.Is(err, block.ErrNotFound) {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return Info{}, err
	}
	var h head
	if err := json.Unmarshal(m.Payload, &h); err != nil {
		return Info{}, fmt.Errorf("fs: volume %s head: %w", name, err)
	}
	root, err := block.Parse(h.Root)
	if err != nil {
		return Info{}, fmt.Errorf("fs: volume %s head: root: %w", name, err)
	}
	return Info{Name: name, Policy: h.Policy, Root: root, Created: h.Created}, nil
}

// List describes every volume, by name.
func (r *Registry) List(ctx context.Context) ([]Info, error) {
	names, err := r.catalog.Names(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(names))
	for _, n := range names {
		in, err := r.Stat(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // deleted between the two reads
		}
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// Delete removes a volume: its head first (so no new mount finds it),
// then every inode of its tree, releasing the files' data for space
// reclamation. It must not be mounted: a live mount would keep writing
// into inodes being deleted.
func (r *Registry) Delete(ctx context.Context, name string, data Data) error {
	in, err := r.Stat(ctx, name)
	if err != nil {
		return err
	}
	if err := r.dht.DeleteName(ctx, r.key, headName(name)); err != nil {
		return err
	}
	if err := r.deleteTree(ctx, in.Root, DataVolume(name), data); err != nil {
		return fmt.Errorf("fs: deleting %s's inodes: %w", name, err)
	}
	return r.catalog.Remove(ctx, name)
}

func (r *Registry) deleteTree(ctx context.Context, addr block.Address, dvol string, data Data) error {
	m, err := r.dht.GetMutable(ctx, addr)
	if errors.Is(err, block.ErrNotFound) || (err == nil && m.Tombstone) {
		return nil
	}
	if err != nil {
		return err
	}
	ino, err := DecodeInode(m.Payload)
	if err != nil {
		return fmt.Errorf("inode %s: %w", addr, err)
	}
	for _, e := range ino.Entries {
		if err := r.deleteTree(ctx, e.Addr, dvol, data); err != nil {
			return err
		}
	}
	if len(ino.Ref) > 0 {
		if err := data.Release(ctx, ino.Ref, dvol); err != nil {
			return err
		}
	}
	if err := r.dht.DeleteMutable(ctx, r.key, addr); err != nil && !errors.Is(err, block.ErrNotFound) {
		return err
	}
	return nil
}
