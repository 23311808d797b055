// Package cluster implements the S3 frontend's storage interfaces on the
// Shoal cluster: s3.MetaStore on mutable and named blocks (shared/dht, per-
// block Paxos) and s3.DataStore on the dedup tier's gRPC API. It holds no
// state beyond a cache of names known to exist, so any number of S3 servers
// can share one cluster. It is not the S3 protocol (package s3) nor a dedup
// client library (services/dedup/client).
package cluster

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"shoal/services/s3"
	"shoal/services/s3/s3err"
	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/paxos"
	"shoal/shared/rpc"
	"shoal/shared/sizedcache"
)

// Meta is an s3.MetaStore on the cluster's mutable blocks. Every block it
// creates is owned and signed by one key, shared by all S3 servers of the
// cluster, so any server may update any block and named roots ("s3/keys",
// "s3/bucket/<name>") resolve to the same address everywhere.
type Meta struct {
	c   *dht.Client
	key ed25519.PrivateKey
	pub ed25519.PublicKey

	// known holds names seen bound. A name's address is a pure function of
	// (owner, name), so once a name exists ResolveName need not ask the
	// cluster again: the caller's next Get reports a deletion since.
	known sync.Map

	// mu guards queues: the Updates waiting for each block (see Update).
	mu     sync.Mutex
	queues map[[32]byte]*updateQueue

	// vals keeps the last value seen of each block, so a read of a block
	// that has not changed (an index shard under GETs) is a quorum read of
	// its version only: the acceptors do not send the value again.
	vals *sizedcache.Cache[[32]byte, cachedValue]
}

type cachedValue struct {
	version   uint64
	payload   []byte
	tombstone bool
}

// valueCacheBytes bounds the cache: a few hundred hot index shards.
const valueCacheBytes = 64 << 20

// updateQueue holds a block's waiting updates while one round is running.
type updateQueue struct {
	ops []*updateOp
}

type updateOp struct {
	fn   func(cur []byte) ([]byte, error)
	err  error
	ver  uint64
	done chan struct{}
}

// NewMeta returns a MetaStore signing with key.
func NewMeta(c *dht.Client, key ed25519.PrivateKey) *Meta {
	return &Meta{c: c, key: key, pub: key.Public().(ed25519.PublicKey), queues: map[[32]byte]*updateQueue{},
		vals: sizedcache.New[[32]byte, cachedValue](valueCacheBytes)}
}

var _ s3.MetaStore = (*Meta)(nil)

// metaErr maps the cluster's sentinels to the frontend's.
func metaErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, block.ErrNotFound):
		return fmt.Errorf("%w: %w", s3.ErrNotFound, err)
	case errors.Is(err, dht.ErrExists):
		return fmt.Errorf("%w: %w", s3.ErrExists, err)
	case errors.Is(err, rpc.ErrFull):
		// Acceptors whose disks are full: as for data, waiting does not
		// make room (whether the change landed is as uncertain as with
		// any failed write).
		return s3err.Wrap(s3err.StorageFull, err)
	case errors.Is(err, paxos.ErrIndeterminate), errors.Is(err, paxos.ErrContended):
		// Writers kept colliding on one block (a hot index shard): the
		// client backs off and retries, which a PUT or DELETE allows
		// even when an earlier attempt did land.
		return s3err.Wrap(s3err.SlowDown, err)
	case errors.Is(err, paxos.ErrNoQuorum), errors.Is(err, dht.ErrQuorum), errors.Is(err, dht.ErrNoNodes), errors.Is(err, dht.ErrNoView):
		// Too few storage nodes answer: not the client's mistake, and
		// not a bug (500) either; clients retry a 503.
		return s3err.Wrap(s3err.ServiceUnavailable, err)
	}
	return err
}

// ResolveName implements s3.MetaStore.
func (m *Meta) ResolveName(ctx context.Context, name string) ([32]byte, error) {
	addr := block.NamedAddress(m.pub, name)
	if _, ok := m.known.Load(name); ok {
		return addr, nil
	}
	if _, err := m.c.ResolveName(ctx, m.pub, name); err != nil {
		return [32]byte{}, metaErr(err)
	}
	m.known.Store(name, struct{}{})
	return addr, nil
}

// CreateNamed implements s3.MetaStore. A name deleted before is bound again
// (its block's version keeps growing, so no old version can be replayed).
func (m *Meta) CreateNamed(ctx context.Context, name string, initial []byte) ([32]byte, error) {
	if err := m.c.CreateName(ctx, m.key, name, initial); err != nil {
		return [32]byte{}, metaErr(err)
	}
	m.known.Store(name, struct{}{})
	return block.NamedAddress(m.pub, name), nil
}

// DeleteName implements s3.MetaStore.
func (m *Meta) DeleteName(ctx context.Context, name string) error {
	m.known.Delete(name)
	return metaErr(m.c.DeleteName(ctx, m.key, name))
}

// CreateMutable implements s3.MetaStore.
func (m *Meta) CreateMutable(ctx context.Context, initial []byte) ([32]byte, error) {
	a, err := m.c.CreateMutable(ctx, m.key, initial, nil)
	return a, metaErr(err)
}

// Get implements s3.MetaStore: a quorum read; deleted blocks are not found.
// A value this server saw before is revalidated by version, not re-sent.
// Callers must not modify the returned bytes: they may be shared.
func (m *Meta) Get(ctx context.Context, addr [32]byte) ([]byte, uint64, error) {
	cur, _ := m.vals.Get(addr) // version 0 when absent: a full read
	mu, err := m.c.GetMutableIfChanged(ctx, addr, cur.version)
	if err != nil {
		if errors.Is(err, block.ErrNotFound) {
			m.vals.Drop(addr)
		}
		return nil, 0, metaErr(err)
	}
	if mu != nil {
		cur = cachedValue{version: mu.Version, payload: mu.Payload, tombstone: mu.Tombstone}
		m.vals.Put(addr, cur, len(cur.payload))
	}
	if cur.tombstone {
		return nil, 0, fmt.Errorf("%w: %s deleted", s3.ErrNotFound, block.Address(addr))
	}
	return cur.payload, cur.version, nil
}

// Update implements s3.MetaStore. Updates of one block from this process
// are combined: while a Paxos round for the block runs, later updates
// queue, and the next round applies all of them in order to the value it
// read and decides the result once. A hot block (an index shard taking
// every PUT of a bucket) then costs one round per batch instead of one per
// PUT, and concurrent writers in one server never compete with each other
// (leaderless Paxos under 64-way contention mostly retries). Each fn still
// sees the current value including every update ordered before it; an fn
// that fails only drops its own change.
func (m *Meta) Update(ctx context.Context, addr [32]byte, fn func(cur []byte) ([]byte, error)) (uint64, error) {
	op := &updateOp{fn: fn, done: make(chan struct{})}
	m.mu.Lock()
	q, running := m.queues[addr]
	if !running {
		q = &updateQueue{}
		m.queues[addr] = q
	}
	q.ops = append(q.ops, op)
	m.mu.Unlock()
	if !running {
		// The rounds outlive a caller that gives up: other callers' updates
		// ride on them.
		go m.drain(context.WithoutCancel(ctx), addr, q)
	}
	select {
	case <-op.done:
		return op.ver, op.err
	case <-ctx.Done():
		return 0, fmt.Errorf("s3 cluster: update %s: outcome unknown: %w", block.Address(addr), ctx.Err())
	}
}

// errNoChange ends a round whose every update failed.
var errNoChange = errors.New("s3 cluster: no update applies")

// roundTimeout bounds one combined round.
const roundTimeout = 2 * time.Minute

func (m *Meta) drain(ctx context.Context, addr [32]byte, q *updateQueue) {
	for {
		m.mu.Lock()
		ops := q.ops
		q.ops = nil
		if len(ops) == 0 {
			delete(m.queues, addr)
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		errs := make([]error, len(ops))
		rctx, cancel := context.WithTimeout(ctx, roundTimeout)
		v, err := m.c.Update(rctx, m.key, addr, func(cur []byte, _ uint64) ([]byte, error) {
			val, changed := cur, false
			for i, o := range ops {
				nv, err := o.fn(val)
				errs[i] = err
				if err == nil {
					val, changed = nv, true
				}
			}
			if !changed {
				return nil, errNoChange
			}
			return val, nil
		})
		cancel()
		// The next read fetches the value afresh: which of fn's results
		// was decided is not known here (a retried round may carry an
		// earlier one forward).
		m.vals.Drop(addr)
		for i, o := range ops {
			switch {
			case errs[i] != nil && (err == nil || errors.Is(err, errNoChange)):
				o.err = errs[i]
			case err != nil:
				o.err = metaErr(err)
			default:
				o.ver = v
			}
			close(o.done)
		}
	}
}

// Delete implements s3.MetaStore.
func (m *Meta) Delete(ctx context.Context, addr [32]byte) error {
	m.vals.Drop(addr)
	return metaErr(m.c.DeleteMutable(ctx, m.key, addr))
}
