package dedup

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
	log *slog.Logger
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

func newRootSet(dc *dht.Client, key ed25519.PrivateKey, log *slog.Logger) *rootSet {
	rs := &rootSet{dht: dc, log: log, key: key, pub: key.Public().(ed25519.PublicKey)}
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

// Shard formats: version 1 held unsigned use counts; version 2 holds
// signed ones (a release can reach a shard before the journal fold that
// brings its add) and, per journal, the last sequence number folded in.
const (
	rootsVersion1 = 1
	rootsVersion  = 2
)

// shardState is a decoded shard.
type shardState struct {
	// counts are use counts; zero counts are not kept.
	counts map[string]int64
	// folded is, per journal, the highest sequence number folded in: the
	// journal's entries up to it are in counts.
	folded map[string]uint64
}

func newShardState() shardState {
	return shardState{counts: map[string]int64{}, folded: map[string]uint64{}}
}

// addCount changes k's count by d, dropping it at zero.
func (st shardState) addCount(k string, d int64) {
	if c := st.counts[k] + d; c == 0 {
		delete(st.counts, k)
	} else {
		st.counts[k] = c
	}
}

func encodeRoots(st shardState) []byte {
	keys := slices.Sorted(maps.Keys(st.counts))
	b := []byte{rootsVersion}
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendVarint(b, st.counts[k])
	}
	js := slices.Sorted(maps.Keys(st.folded))
	b = binary.AppendUvarint(b, uint64(len(js)))
	for _, j := range js {
		b = binary.AppendUvarint(b, uint64(len(j)))
		b = append(b, j...)
		b = binary.AppendUvarint(b, st.folded[j])
	}
	return b
}

var errRootsFormat = errors.New("dedup: malformed root-set block")

// decoder reads the varint-framed formats of the root set.
type decoder struct {
	b   []byte
	bad bool
}

// skip consumes a varint of w bytes (w <= 0: malformed).
func (d *decoder) skip(w int) {
	if w <= 0 {
		d.bad = true
		return
	}
	d.b = d.b[w:]
}

func (d *decoder) uvarint() uint64 {
	v, w := binary.Uvarint(d.b)
	d.skip(w)
	return v
}

func (d *decoder) varint() int64 {
	v, w := binary.Varint(d.b)
	d.skip(w)
	return v
}

func (d *decoder) bytes() string {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads an element count, each element taking at least min bytes.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)/min) {
		d.bad = true
		return 0
	}
	return int(n)
}

func decodeRoots(b []byte) (shardState, error) {
	st := newShardState()
	if len(b) == 0 {
		return st, nil
	}
	v := b[0]
	if v != rootsVersion && v != rootsVersion1 {
		return st, fmt.Errorf("%w: version %d", errRootsFormat, v)
	}
	d := &decoder{b: b[1:]}
	n := d.count(2)
	for range n {
		k := d.bytes()
		var c int64
		if v == rootsVersion1 {
			c = int64(d.uvarint())
		} else {
			c = d.varint()
		}
		if d.bad {
			break
		}
		st.addCount(k, c)
	}
	if v == rootsVersion {
		n := d.count(2)
		for range n {
			j := d.bytes()
			st.folded[j] = d.uvarint()
		}
	}
	if d.bad || len(d.b) != 0 {
		return st, errRootsFormat
	}
	return st, nil
}

// errNoChange aborts an update that would not change the set.
var errNoChange = errors.New("dedup: root set unchanged")

// rootChange is one change waiting for its shard's next round.
type rootChange struct {
	k     string
	delta int
	// force records a release even where the shard holds no use of k:
	// the add it ends is still in a journal (journal.go).
	force bool
	// fold, when set, is a journal's entries for this shard instead.
	fold *foldBatch
	// absent: a release found no use of k in the shard (set by the round
	// that ran it, as is err).
	absent bool
	err    error
}

// foldBatch is the part of a journal snapshot that belongs to one shard:
// its entries, and the snapshot's highest sequence number.
type foldBatch struct {
	journal string
	upto    uint64
	entries []journalEntry
}

// grows says whether the change can add to a shard that does not exist.
func (ch *rootChange) grows() bool {
	return ch.fold != nil || ch.delta > 0 || ch.force
}

// applyTo applies ch to st and says whether st changed.
func (ch *rootChange) applyTo(st shardState) bool {
	if f := ch.fold; f != nil {
		done := st.folded[f.journal]
		if f.upto <= done {
			return false // folded before: a retried fold counts nothing twice
		}
		for _, e := range f.entries {
			if e.seq > done {
				st.addCount(e.k, e.delta)
			}
		}
		st.folded[f.journal] = f.upto
		return true
	}
	c := st.counts[ch.k]
	ch.absent = ch.delta < 0 && c <= 0
	switch {
	case ch.delta > 0 || ch.force:
		st.addCount(ch.k, int64(ch.delta))
	case c <= 0:
		return false
	case int64(-ch.delta) >= c:
		delete(st.counts, ch.k)
	default:
		st.counts[ch.k] = c + int64(ch.delta)
	}
	return true
}

// maxRootChanges bounds the changes applied in one round.
const maxRootChanges = 1024

// roundTimeout bounds one round.
const roundTimeout = 30 * time.Second

// add changes the use count of (volume, ref) by delta in the shards
// directly; an entry whose count reaches zero is removed. It returns once
// the change is durable.
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
	if lc.err != nil || !lc.absent {
		return lc.err
	}
	// No shard holds a use: the add is still in a journal. The release
	// is recorded as a negative count, which the fold's add cancels.
	fc := &rootChange{k: k, delta: delta, force: true}
	if err := rs.queues.Do(ctx, shardOf(k), fc); err != nil {
		return err
	}
	return fc.err
}

// apply makes one round of changes to a shard, creating it if need be.
func (rs *rootSet) apply(ctx context.Context, shard int, changes []*rootChange) error {
	name := shardName(shard)
	addr := block.NamedAddress(rs.pub, name)
	applyAll := func(st shardState) bool {
		changed := false
		for _, ch := range changes {
			if ch.applyTo(st) {
				changed = true
			}
		}
		return changed
	}
	if !rs.exists[shard].Load() && slices.ContainsFunc(changes, (*rootChange).grows) {
		st := newShardState()
		applyAll(st) // releases in the batch find nothing in a new shard
		err := rs.dht.CreateName(ctx, rs.key, name, encodeRoots(st))
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
			st, err := decodeRoots(cur)
			if err != nil {
				return nil, err
			}
			if !applyAll(st) {
				return nil, errNoChange
			}
			return encodeRoots(st), nil
		})
		switch {
		case err == nil, errors.Is(err, errNoChange):
			rs.exists[shard].Store(true)
			return nil
		case errors.Is(err, block.ErrNotFound) && attempt < 3:
			st := newShardState()
			if !applyAll(st) {
				return nil // only releases of absent roots
			}
			err = rs.dht.CreateName(ctx, rs.key, name, encodeRoots(st))
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

// all returns the live roots: it reads the journal registry, then every
// journal, then every shard, current and legacy (quorum reads, 64 at a
// time; most are small or absent), in that order (journal.go says why).
// Any error fails the whole read: a collection must never run on a
// partial root set.
func (rs *rootSet) all(ctx context.Context) ([]root, error) {
	roots, _, err := rs.read(ctx)
	return roots, err
}

// journalStats counts the registered journals and their entries.
type journalStats struct {
	journals, entries int
}

// read is all, also counting the journals it read.
func (rs *rootSet) read(ctx context.Context) ([]root, journalStats, error) {
	var js journalStats
	journals, err := rs.readJournals(ctx)
	if err != nil {
		return nil, js, err
	}
	js.journals = len(journals)
	for _, es := range journals {
		js.entries += len(es)
	}
	shards := make([]shardState, rootShards+legacyShards)
	err = forEach(ctx, len(shards), func(ctx context.Context, i int) error {
		m, err := rs.dht.GetMutable(ctx, block.NamedAddress(rs.pub, shardName(i)))
		if errors.Is(err, block.ErrNotFound) {
			shards[i] = newShardState()
			return nil
		}
		if err == nil && !m.Tombstone {
			shards[i], err = decodeRoots(m.Payload)
		} else if err == nil {
			shards[i] = newShardState()
		}
		if err != nil {
			return fmt.Errorf("dedup: root-set shard %d: %w", i, err)
		}
		return nil
	})
	if err != nil {
		return nil, js, err
	}
	var out []root
	for k, c := range liveCounts(journals, shards) {
		vol, b, err := splitKey(k)
		var ref manifest.Ref
		if err == nil {
			ref, err = manifest.ParseRef(b)
		}
		if err != nil {
			return nil, js, fmt.Errorf("dedup: root set: %w", err)
		}
		out = append(out, root{volume: vol, ref: ref, count: uint64(c)})
	}
	return out, js, nil
}

// liveCounts sums each root's uses: its counts in the shards plus the
// journal entries its current shard has not folded in. Roots whose sum is
// not positive are not live.
func liveCounts(journals map[string][]journalEntry, shards []shardState) map[string]int64 {
	sum := map[string]int64{}
	for _, st := range shards {
		for k, c := range st.counts {
			sum[k] += c
		}
	}
	for j, es := range journals {
		for _, e := range es {
			if e.seq > shards[shardOf(e.k)].folded[j] {
				sum[e.k] += e.delta
			}
		}
	}
	for k, c := range sum {
		if c <= 0 {
			delete(sum, k)
		}
	}
	return sum
}

// forEach runs fn for 0..n-1, 64 at a time, and returns the errors joined.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 64)
	)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
