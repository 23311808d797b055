// Package nbd is Shoal's block-device frontend: volumes served over the NBD
// protocol (services/nbd/wire), each a stream of the dedup tier with fixed
// chunking whose chunks are the device's extents.
//
// A volume's head is a named mutable block (owned by the NBD signing key)
// holding its size, policy, current stream reference and write lease. Writes
// collect in memory as dirty extents; a flush (NBD FLUSH, a FUA write, a
// full buffer, or a timer) sends them to the dedup tier as one Patch, which
// rewrites only the chunks and manifest nodes they touch, then moves the
// head to the new reference with a compare-and-set. The compare-and-set is
// the fence: a server that lost its lease (another took the volume after it
// expired) fails its next flush instead of overwriting the newer head.
package nbd

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"shoal/services/dedup/client"
	"shoal/services/nbd/wire"
	"shoal/shared/block"
	"shoal/shared/catalog"
	"shoal/shared/dedup/policy"
	"shoal/shared/dht"
)

// Data is what volumes need from the dedup tier (*client.Client).
type Data interface {
	Patch(ctx context.Context, policy, volume string, base []byte, size int64, extents []client.Extent) ([]byte, error)
	Read(ctx context.Context, ref []byte, volume string, off, n int64) (io.ReadCloser, error)
	Release(ctx context.Context, ref []byte, volume string) error
}

// DefaultPolicy is a new volume's policy unless one is given: 64 KiB
// extents (a 4 KiB write rewrites one), zstd, replicated.
const DefaultPolicy = "chunk=fixed:64k,compress=zstd:1"

// Errors of the registry.
var (
	ErrExists   = errors.New("nbd: volume exists")
	ErrNotFound = errors.New("nbd: no such volume")
	ErrInvalid  = errors.New("nbd: invalid argument")
	ErrBusy     = wire.ErrBusy
)

// head is a volume's head block payload.
type head struct {
	Size    int64     `json:"size"`
	Policy  string    `json:"policy"`
	Created time.Time `json:"created"`
	// Ref is the current stream; empty until the volume is first opened
	// (creating needs no dedup tier). It holds one retain.
	Ref []byte `json:"ref,omitempty"`
	// The write lease: Holder may write until Expires; every taking of
	// the lease bumps Epoch.
	Epoch   uint64    `json:"epoch"`
	Holder  string    `json:"holder,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
}

func (h *head) leasedBy(now time.Time) string {
	if h.Holder != "" && now.Before(h.Expires) {
		return h.Holder
	}
	return ""
}

// Info describes a volume.
type Info struct {
	Name    string
	Size    int64
	Policy  string
	Created time.Time
	Holder  string // the server holding the write lease, if any
}

// Registry keeps the volumes' heads and the catalog of their names in the
// cluster.
type Registry struct {
	dht     *dht.Client
	key     ed25519.PrivateKey
	pub     ed25519.PublicKey
	catalog *catalog.Catalog
}

// NewRegistry returns the registry signed by key (every NBD server and
// the admin CLI of a cluster share it).
func NewRegistry(dc *dht.Client, key ed25519.PrivateKey) *Registry {
	return &Registry{dht: dc, key: key, pub: key.Public().(ed25519.PublicKey), catalog: catalog.New(dc, key, catalogName)}
}

const catalogName = "shoal/nbd/catalog"

func headName(volume string) string { return "shoal/nbd/volume/" + volume }

// dataVolume is the dedup volume (encryption key scope) of an NBD volume.
func dataVolume(name string) string { return "nbd/" + name }

// ValidateName refuses names an NBD client could not ask for plainly.
func ValidateName(name string) error {
	if err := catalog.CheckName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// chunkSize is the extent size of a policy, which must chunk fixed.
func chunkSize(p string) (int64, error) {
	pol, err := policy.Parse(p)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if pol.Chunking.Mode != policy.Fixed {
		return 0, fmt.Errorf("%w: a volume needs fixed chunking (chunk=fixed:SIZE), not %s", ErrInvalid, pol)
	}
	return int64(pol.Chunking.Size), nil
}

// Create records a new volume of size bytes (a multiple of the policy's
// chunk size).
func (r *Registry) Create(ctx context.Context, name string, size int64, pol string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if pol == "" {
		pol = DefaultPolicy
	}
	cs, err := chunkSize(pol)
	if err != nil {
		return err
	}
	p, _ := policy.Parse(pol)
	if size <= 0 || size%cs != 0 {
		return fmt.Errorf("%w: size %d must be a positive multiple of the extent size %d", ErrInvalid, size, cs)
	}
	b, _ := json.Marshal(head{Size: size, Policy: p.String(), Created: time.Now().UTC()})
	if err := r.dht.CreateName(ctx, r.key, headName(name), b); err != nil {
		if errors.Is(err, dht.ErrExists) {
			return fmt.Errorf("%w: %s", ErrExists, name)
		}
		return err
	}
	return r.catalog.Add(ctx, name)
}

// get reads a volume's head and its version.
func (r *Registry) get(ctx context.Context, name string) (head, uint64, error) {
	m, err := r.dht.ResolveName(ctx, r.pub, headName(name))
	if errors.Is(err, block.ErrNotFound) {
		return head{}, 0, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return head{}, 0, err
	}
	var h head
	if err := json.Unmarshal(m.Payload, &h); err != nil {
		return head{}, 0, fmt.Errorf("nbd: volume %s head: %w", name, err)
	}
	return h, m.Version, nil
}

// cas writes h as the next version of the head if it is still at version
// ver; a *dht.ConflictError means someone else changed it.
func (r *Registry) cas(ctx context.Context, name string, ver uint64, h head) (uint64, error) {
	b, err := json.Marshal(h)
	if err != nil {
		return 0, err
	}
	return r.dht.CompareAndSet(ctx, r.key, block.NamedAddress(r.pub, headName(name)), ver, b)
}

// Stat describes one volume.
func (r *Registry) Stat(ctx context.Context, name string) (Info, error) {
	h, _, err := r.get(ctx, name)
	if err != nil {
		return Info{}, err
	}
	return Info{Name: name, Size: h.Size, Policy: h.Policy, Created: h.Created, Holder: h.leasedBy(time.Now())}, nil
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

// BreakLease ends a volume's write lease before it expires, for a server
// known dead (as rbd lock break). It is safe against a server that is in
// fact alive: taking the lease bumps the epoch, so that server's next
// commit fails instead of writing, and it stops serving the volume. Its
// writes not yet flushed are lost, as in a crash.
func (r *Registry) BreakLease(ctx context.Context, name string) (holder string, err error) {
	h, ver, err := r.get(ctx, name)
	if err != nil {
		return "", err
	}
	holder = h.Holder
	h.Holder, h.Expires, h.Epoch = "", time.Time{}, h.Epoch+1
	if _, err := r.cas(ctx, name, ver, h); err != nil {
		var ce *dht.ConflictError
		if errors.As(err, &ce) {
			return "", fmt.Errorf("%w: volume %s changed meanwhile; retry", ErrBusy, name)
		}
		return "", err
	}
	return holder, nil
}

// Delete removes a volume no server holds, and releases its data for space
// reclamation. The head is fenced first (a compare-and-set marking it
// leased to "deleting"), so a server opening it meanwhile fails rather
// than writing to a volume being deleted.
func (r *Registry) Delete(ctx context.Context, name string, data Data) error {
	h, ver, err := r.get(ctx, name)
	if err != nil {
		return err
	}
	if who := h.leasedBy(time.Now()); who != "" {
		return fmt.Errorf("%w: volume %s is in use by %s", ErrBusy, name, who)
	}
	h.Holder, h.Expires, h.Epoch = "deleting", time.Now().Add(24*time.Hour), h.Epoch+1
	if _, err := r.cas(ctx, name, ver, h); err != nil {
		var ce *dht.ConflictError
		if errors.As(err, &ce) {
			return fmt.Errorf("%w: volume %s changed while deleting; retry", ErrBusy, name)
		}
		return err
	}
	if len(h.Ref) > 0 {
		if err := data.Release(ctx, h.Ref, dataVolume(name)); err != nil {
			return fmt.Errorf("nbd: releasing %s's data: %w", name, err)
		}
	}
	if err := r.dht.DeleteName(ctx, r.key, headName(name)); err != nil {
		return err
	}
	return r.catalog.Remove(ctx, name)
}
