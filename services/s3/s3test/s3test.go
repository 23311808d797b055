// Package s3test provides in-memory DataStore and MetaStore implementations
// for tests of the S3 frontend. They are not for production: everything is
// kept in process memory.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"shoal/services/s3"
)

// MaxBlock mirrors the real store's mutable block limit.
const MaxBlock = 1 << 20

// ErrTooLarge is returned when a block exceeds MaxBlock.
var ErrTooLarge = errors.New("s3test: block too large")

type block struct {
	data    []byte
	version uint64
}

// Meta is an in-memory MetaStore with compare-and-swap Update semantics:
// fn runs without the lock held, so concurrent updaters really conflict and
// retry, as they would against the Paxos-backed store.
type Meta struct {
	mu     sync.Mutex
	blocks map[[32]byte]*block
	names  map[string][32]byte

	Gets      atomic.Int64
	Conflicts atomic.Int64
	MaxSize   atomic.Int64 // largest block written
	// CarryForward makes the next n Updates do what Paxos does when a
	// proposer's earlier attempt reached some acceptors and its retry
	// completes it: fn's first result is committed as a version of its
	// own, and fn runs again on that result for the next version.
	CarryForward atomic.Int64
	// LoseReply makes the next n Updates commit and then fail as if the
	// reply were lost (a timeout): the caller cannot know it wrote.
	LoseReply atomic.Int64
}

// ErrLostReply is the error of an Update whose reply LoseReply dropped.
var ErrLostReply = errors.New("s3test: reply lost after the write")

// NewMeta returns an empty store.
func NewMeta() *Meta {
	return &Meta{blocks: map[[32]byte]*block{}, names: map[string][32]byte{}}
}

func newAddr() [32]byte {
	var a [32]byte
	_, _ = rand.Read(a[:])
	return a
}

func (m *Meta) put(a [32]byte, data []byte) error {
	if len(data) > MaxBlock {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	if n := int64(len(data)); n > m.MaxSize.Load() {
		m.MaxSize.Store(n)
	}
	m.blocks[a] = &block{data: bytes.Clone(data), version: 1}
	return nil
}

// ResolveName implements s3.MetaStore.
func (m *Meta) ResolveName(_ context.Context, name string) ([32]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.names[name]
	if !ok {
		return a, fmt.Errorf("s3test: name %q: %w", name, s3.ErrNotFound)
	}
	return a, nil
}

// CreateNamed implements s3.MetaStore.
func (m *Meta) CreateNamed(_ context.Context, name string, initial []byte) ([32]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.names[name]; ok {
		return a, fmt.Errorf("s3test: name %q: %w", name, s3.ErrExists)
	}
	a := sha256.Sum256([]byte("name:" + name))
	a[0] ^= byte(len(m.blocks)) // a recreated name gets a fresh block
	for m.blocks[a] != nil {
		a = newAddr()
	}
	if err := m.put(a, initial); err != nil {
		return a, err
	}
	m.names[name] = a
	return a, nil
}

// DeleteName implements s3.MetaStore.
func (m *Meta) DeleteName(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.names[name]
	if !ok {
		return fmt.Errorf("s3test: name %q: %w", name, s3.ErrNotFound)
	}
	delete(m.names, name)
	delete(m.blocks, a)
	return nil
}

// CreateMutable implements s3.MetaStore.
func (m *Meta) CreateMutable(_ context.Context, initial []byte) ([32]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := newAddr()
	return a, m.put(a, initial)
}

// Get implements s3.MetaStore.
func (m *Meta) Get(ctx context.Context, a [32]byte) ([]byte, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	m.Gets.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blocks[a]
	if !ok {
		return nil, 0, fmt.Errorf("s3test: block %x: %w", a[:4], s3.ErrNotFound)
	}
	return bytes.Clone(b.data), b.version, nil
}

// Update implements s3.MetaStore.
func (m *Meta) Update(ctx context.Context, a [32]byte, fn func([]byte) ([]byte, error)) (uint64, error) {
	for {
		cur, ver, err := m.Get(ctx, a)
		if err != nil {
			return 0, err
		}
		next, err := fn(cur)
		if err != nil {
			return 0, err
		}
		if len(next) > MaxBlock {
			return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(next))
		}
		m.mu.Lock()
		b, ok := m.blocks[a]
		switch {
		case !ok:
			m.mu.Unlock()
			return 0, fmt.Errorf("s3test: block %x: %w", a[:4], s3.ErrNotFound)
		case b.version != ver:
			m.mu.Unlock()
			m.Conflicts.Add(1)
			continue
		}
		b.data, b.version = bytes.Clone(next), ver+1
		if n := int64(len(next)); n > m.MaxSize.Load() {
			m.MaxSize.Store(n)
		}
		m.mu.Unlock()
		if n := m.CarryForward.Load(); n > 0 && m.CarryForward.CompareAndSwap(n, n-1) {
			// The attempt above was the carried-forward one; this caller's
			// retry now applies fn on top of it.
			return m.Update(ctx, a, fn)
		}
		if n := m.LoseReply.Load(); n > 0 && m.LoseReply.CompareAndSwap(n, n-1) {
			return 0, ErrLostReply
		}
		return ver + 1, nil
	}
}

// Delete implements s3.MetaStore.
func (m *Meta) Delete(_ context.Context, a [32]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blocks[a]; !ok {
		return fmt.Errorf("s3test: block %x: %w", a[:4], s3.ErrNotFound)
	}
	delete(m.blocks, a)
	return nil
}

// Blocks returns how many blocks exist.
func (m *Meta) Blocks() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.blocks)
}

// Data is an in-memory DataStore. Released references stay readable (space
// reclamation is not its job) but are counted so tests can check pairing.
type Data struct {
	mu       sync.Mutex
	objs     map[string][]byte
	live     map[string]int
	policies map[string]string

	Writes   atomic.Int64
	Releases atomic.Int64
}

// NewData returns an empty store.
func NewData() *Data {
	return &Data{objs: map[string][]byte{}, live: map[string]int{}, policies: map[string]string{}}
}

// Write implements s3.DataStore.
func (d *Data) Write(ctx context.Context, _, policy string, r io.Reader) ([]byte, int64, error) {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return nil, 0, fmt.Errorf("s3test: write: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	ref := make([]byte, 16)
	_, _ = rand.Read(ref)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.objs[string(ref)] = buf.Bytes()
	d.live[string(ref)] = 1
	d.policies[string(ref)] = policy
	d.Writes.Add(1)
	return ref, int64(buf.Len()), nil
}

// Read implements s3.DataStore.
func (d *Data) Read(_ context.Context, ref []byte, off, n int64) (io.ReadCloser, error) {
	d.mu.Lock()
	b, ok := d.objs[string(ref)]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("s3test: ref %x: %w", ref, s3.ErrNotFound)
	}
	if off < 0 || off > int64(len(b)) {
		return nil, fmt.Errorf("s3test: offset %d out of range", off)
	}
	b = b[off:]
	if n >= 0 && n < int64(len(b)) {
		b = b[:n]
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Release implements s3.DataStore.
func (d *Data) Release(_ context.Context, ref []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.live[string(ref)]--
	d.Releases.Add(1)
	return nil
}

// Retain implements s3.Retainer.
func (d *Data) Retain(_ context.Context, ref []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.live[string(ref)]++
	return nil
}

// Live returns how many references are still in use (count > 0).
func (d *Data) Live() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.live {
		if c > 0 {
			n++
		}
	}
	return n
}

// Policy returns the policy a reference was written with.
func (d *Data) Policy(ref []byte) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policies[string(ref)]
}

// PolicyCount returns how many references were written with policy.
func (d *Data) PolicyCount(policy string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, p := range d.policies {
		if p == policy {
			n++
		}
	}
	return n
}
