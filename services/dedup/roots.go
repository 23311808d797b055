package dedup

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"shoal/shared/block"
	"shoal/shared/combine"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dht"
)

// rootShards is how many mutable blocks hold the root set. A root's shard
// is fixed by its hash (12 bits), so the count is part of the format:
// changing it would hide roots from collection. Every change rewrites its
// shard, so the count bounds the cost of an add as the set grows: 4,096
// shards keep ~30 KiB each at a million roots (~120 bytes a root) and hold
// over 100 million within the 4 MiB block limit, with no block written by
// everyone (Infinit's lesson).
const rootShards = 4096

// legacyShards is the first format's shard count (256 shards, named by
// decimal index). Roots added under it stay there until released: every
// collection still reads those shards, and a release that finds its root
// absent from its shard releases it from its legacy shard. Nothing is
// added to them any more, so they only shrink.
const legacyShards = 256

// rootSet is the set of live root references, with a use count each, kept
// in rootShards named blocks owned by the tier's signing key (derived from
// the master key, so every replica writes the same blocks). Every change
// is a per-block Paxos read-modify-write; concurrent replicas never lose
// an update.
type rootSet struct {
	dht *dht.Client
	key ed25519.PrivateKey
	pub ed25519.PublicKey
	// queues hold this replica's changes per shard (see add).
	queues *combine.Queues[int, *rootChange]
	// exists marks the shards this replica has seen exist. One it has not
	// is most likely new (a young cluster creates most of its 4,096
	// shards with its first few thousand writes), so an add creates it
	// first instead of updating it first: one Paxos create rather than a
	// failed update and a create.
	exists [rootShards + legacyShards]atomic.Bool
}

func newRootSet(dc *dht.Client, key ed25519.PrivateKey) *rootSet {
	rs := &rootSet{dht: dc, key: key, pub: key.Public().(ed25519.PublicKey)}
	rs.queues = combine.New(maxRootChanges, roundTimeout, func(ctx context.Context, shard int, batch []*rootChange) {
		err := rs.apply(ctx, shard, batch)
		for _, c := range batch {
			c.err = err
		}
	})
	return rs
}

// shardName names shard i: [0, rootShards) are the current shards,
// [rootShards, rootShards+legacyShards) the legacy ones.
func shardName(i int) string {
	if i >= rootShards {
		return fmt.Sprintf("shoal/dedup/roots/%03d", i-rootShards)
	}
	return fmt.Sprintf("shoal/dedup/roots/v2/%03x", i)
}

// rootKey is the set's key for a (volume, ref) pair: length-prefixed
// volume, then the reference's binary form.
func rootKey(volume string, ref []byte) string {
	b := binary.AppendUvarint(nil, uint64(len(volume)))
	b = append(b, volume...)
	return string(append(b, ref...))
}

func splitKey(k string) (string, []byte, error) {
	n, w := binary.Uvarint([]byte(k))
	if w <= 0 || uint64(len(k)-w) < n {
		return "", nil, errors.New("dedup: malformed root entry")
	}
	return k[w : w+int(n)], []byte(k[w+int(n):]), nil
}

// shardOf is the shard that holds key; legacyShardOf the legacy shard
// that may still hold it.
func shardOf(key string) int {
	h := sha256.Sum256([]byte(key))
	return (int(h[0])<<8 | int(h[1])) % rootShards
}

func legacyShardOf(key string) int {
	h := sha256.Sum256([]byte(key))
	return rootShards + int(h[0])%legacyShards
}

const rootsVersion = 1

func encodeRoots(m map[string]uint64) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := []byte{rootsVersion}
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, m[k])
	}
	return b
}

var errRootsFormat = errors.New("dedup: malformed root-set block")

func decodeRoots(b []byte) (map[string]uint64, error) {
	m := map[string]uint64{}
	if len(b) == 0 {
		return m, nil
	}
	if b[0] != rootsVersion {
		return nil, fmt.Errorf("%w: version %d", errRootsFormat, b[0])
	}
	b = b[1:]
	next := func() (uint64, bool) {
		v, w := binary.Uvarint(b)
		if w <= 0 {
			return 0, false
		}
		b = b[w:]
		return v, true
	}
	n, ok := next()
	if !ok || n > uint64(len(b)) {
		return nil, errRootsFormat
	}
	for range n {
		l, ok := next()
		if !ok || l > uint64(len(b)) {
			return nil, errRootsFormat
		}
		k := string(b[:l])
		b = b[l:]
		c, ok := next()
		if !ok {
			return nil, errRootsFormat
		}
		m[k] = c
	}
	return m, nil
}

// errNoChange aborts an update that would not change the set.
var errNoChange = errors.New("dedup: root set unchanged")

// rootChange is one add waiting for its shard's next round.
type rootChange struct {
	k     string
	delta int
	// absent: a release found no such root in the shard (set by the
	// round that ran it, as is err).
	absent bool
	err    error
}

// maxRootChanges bounds the changes applied in one round.
const maxRootChanges = 1024

// roundTimeout bounds one round.
const roundTimeout = 30 * time.Second

// add changes the use count of (volume, ref) by delta; an entry whose count
// reaches zero is removed. Releasing an absent root is a no-op. It returns
// once the change is durable.
//
// Changes to one shard are combined (shared/combine): concurrent proposals
// from one process would only pre-empt each other, and one round per
// Write made a shard's round trips the limit on small writes per second.
func (rs *rootSet) add(ctx context.Context, volume string, ref []byte, delta int) error {
	k := rootKey(volume, ref)
	c := &rootChange{k: k, delta: delta}
	if err := rs.queues.Do(ctx, shardOf(k), c); err != nil {
		return err
	}
	if c.err != nil || !c.absent {
		return c.err
	}
	// A root added under the legacy format is released there. Its uses
	// may be split between the two shards (added before, retained
	// after): releases drain the current shard first, then the legacy one.
	lc := &rootChange{k: k, delta: delta}
	if err := rs.queues.Do(ctx, legacyShardOf(k), lc); err != nil {
		return err
	}
	return lc.err
}

// apply makes one round of changes to a shard, creating it if need be.
func (rs *rootSet) apply(ctx context.Context, shard int, changes []*rootChange) error {
	name := shardName(shard)
	addr := block.NamedAddress(rs.pub, name)
	applyAll := func(m map[string]uint64) bool {
		changed := false
		for _, ch := range changes {
			c := m[ch.k]
			ch.absent = ch.delta < 0 && c == 0
			switch {
			case ch.delta > 0:
				m[ch.k] = c + uint64(ch.delta)
			case c == 0:
				continue
			case uint64(-ch.delta) >= c:
				delete(m, ch.k)
			default:
				m[ch.k] = c - uint64(-ch.delta)
			}
			changed = true
		}
		return changed
	}
	if !rs.exists[shard].Load() && slices.ContainsFunc(changes, func(ch *rootChange) bool { return ch.delta > 0 }) {
		m := map[string]uint64{}
		applyAll(m) // releases in the batch find nothing in a new shard
		err := rs.dht.CreateName(ctx, rs.key, name, encodeRoots(m))
		if !errors.Is(err, dht.ErrExists) {
			if err == nil {
				rs.exists[shard].Store(true)
			}
			return err
		}
		rs.exists[shard].Store(true) // update it below
	}
	for attempt := 0; ; attempt++ {
		_, err := rs.dht.Update(ctx, rs.key, addr, func(cur []byte, _ uint64) ([]byte, error) {
			m, err := decodeRoots(cur)
			if err != nil {
				return nil, err
			}
			if !applyAll(m) {
				return nil, errNoChange
			}
			return encodeRoots(m), nil
		})
		switch {
		case err == nil, errors.Is(err, errNoChange):
			rs.exists[shard].Store(true)
			return nil
		case errors.Is(err, block.ErrNotFound) && attempt < 3:
			m := map[string]uint64{}
			if !applyAll(m) {
				return nil // only releases of absent roots
			}
			err = rs.dht.CreateName(ctx, rs.key, name, encodeRoots(m))
			if errors.Is(err, dht.ErrExists) {
				continue // another replica created it first: update it
			}
			if err == nil {
				rs.exists[shard].Store(true)
			}
			return err
		default:
			return err
		}
	}
}

// root is one live reference with its use count.
type root struct {
	volume string
	ref    manifest.Ref
	count  uint64
}

// all reads every shard, current and legacy (quorum reads, 64 at a
// time; most are small or absent). Any error fails the whole read: a
// collection must never run on a partial root set. A root with uses in
// both its shards appears twice, which marking does not mind.
func (rs *rootSet) all(ctx context.Context) ([]root, error) {
	var (
		mu   sync.Mutex
		out  []root
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 64)
	)
	for i := range rootShards + legacyShards {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			m, err := rs.dht.GetMutable(ctx, block.NamedAddress(rs.pub, shardName(i)))
			if errors.Is(err, block.ErrNotFound) {
				return
			}
			var entries map[string]uint64
			if err == nil && !m.Tombstone {
				entries, err = decodeRoots(m.Payload)
			}
			var rs []root
			for k, c := range entries {
				vol, b, kerr := splitKey(k)
				var ref manifest.Ref
				if kerr == nil {
					ref, kerr = manifest.ParseRef(b)
				}
				if kerr != nil {
					err = fmt.Errorf("root-set shard %d: %w", i, kerr)
					break
				}
				rs = append(rs, root{volume: vol, ref: ref, count: c})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("dedup: root-set shard %d: %w", i, err))
				return
			}
			out = append(out, rs...)
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
