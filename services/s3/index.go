package s3

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"shoal/shared/sizedcache"
)

// Index errors. errIndexGone means the bucket was deleted underneath us.
var (
	errIndexGone   = errors.New("s3: index is gone")
	errSealed      = errors.New("s3: index is sealed")
	errNotEmpty    = errors.New("s3: index is not empty")
	errCorruptMeta = errors.New("s3: corrupt metadata block")
	errMoved       = errors.New("s3: key moved to another shard")
	errSplitRace   = errors.New("s3: shard changed during split")
	errDirFull     = errors.New("s3: directory full")
	errFrozen      = errors.New("s3: key range frozen by a split")
	errNoSplit     = errors.New("s3: shard needs no split")
)

const (
	shardMagic = 'S'
	dirMagic   = 'D'
	// freezeFor is how long a split may hold the upper half of a shard
	// still: two metadata writes under load take well under it. A writer
	// that finds a freeze older than this lifts it, and the split gives up.
	freezeFor = 2 * time.Second
)

// shard is one node of the B-link index: sorted keys in [lo, hi) and a right
// link to the shard that starts at hi.
type shard struct {
	lo     string
	hi     string
	hiInf  bool // hi is +infinity
	next   [32]byte
	gen    uint64 // bumped on every change
	sealed bool
	frozen *freeze // set while a split copies the upper half out
	keys   []string
	vals   [][]byte
	// memo holds values decoded by readers, one slot per key (see
	// getDecoded); only shards in a shardCache have it.
	memo []atomic.Pointer[memoized]
}

// memoized is a value as decoded by getDecoded's caller.
type memoized struct{ v any }

// freeze stops writes to the keys >= key of a shard until the split that
// set it cuts them off, or until `until` (unix ms, the splitter's clock).
type freeze struct {
	key   string
	until int64
}

// frozenFor reports whether a freeze refuses a write of k at now (unix
// ms). A lapsed freeze is lifted by the write that finds it: the split
// that set it then sees it gone and gives up.
func (s *shard) frozenFor(k string, now int64) bool {
	if s.frozen == nil || k < s.frozen.key {
		return false
	}
	if now < s.frozen.until {
		return true
	}
	s.frozen = nil
	return false
}

func (s *shard) covers(k string) bool { return k >= s.lo && (s.hiInf || k < s.hi) }

func (s *shard) search(k string) (int, bool) {
	i := sort.SearchStrings(s.keys, k)
	return i, i < len(s.keys) && s.keys[i] == k
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (s *shard) encode() []byte {
	n := 64 + len(s.lo) + len(s.hi)
	for i := range s.keys {
		n += len(s.keys[i]) + len(s.vals[i]) + 8
	}
	b := make([]byte, 0, n)
	b = append(b, shardMagic, 1)
	b = appendStr(b, s.lo)
	b = appendStr(b, s.hi)
	var flags byte
	if s.hiInf {
		flags |= 1
	}
	if s.sealed {
		flags |= 2
	}
	if s.frozen != nil {
		flags |= 4
	}
	b = append(b, flags)
	b = append(b, s.next[:]...)
	b = binary.AppendUvarint(b, s.gen)
	if s.frozen != nil {
		b = appendStr(b, s.frozen.key)
		b = binary.AppendUvarint(b, uint64(s.frozen.until))
	}
	b = binary.AppendUvarint(b, uint64(len(s.keys)))
	for i := range s.keys {
		b = appendStr(b, s.keys[i])
		b = appendStr(b, string(s.vals[i]))
	}
	return b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptMeta
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptMeta
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.bytes(d.uvarint())) }

func decodeShard(b []byte) (*shard, error) {
	if len(b) < 2 || b[0] != shardMagic || b[1] != 1 {
		return nil, errCorruptMeta
	}
	d := &decoder{b: b[2:]}
	s := &shard{lo: d.str(), hi: d.str()}
	flags := d.bytes(1)
	if d.err == nil {
		s.hiInf, s.sealed = flags[0]&1 != 0, flags[0]&2 != 0
	}
	copy(s.next[:], d.bytes(32))
	s.gen = d.uvarint()
	if d.err == nil && flags[0]&4 != 0 {
		s.frozen = &freeze{key: d.str()}
		s.frozen.until = int64(d.uvarint())
	}
	n := d.uvarint()
	if n > uint64(len(b)) {
		return nil, errCorruptMeta
	}
	s.keys = make([]string, 0, n)
	s.vals = make([][]byte, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		s.keys = append(s.keys, d.str())
		s.vals = append(s.vals, d.bytes(d.uvarint()))
	}
	if d.err != nil {
		return nil, d.err
	}
	return s, nil
}

// index is a sharded, ordered map from string keys to byte values stored in
// mutable blocks. See doc.go for the design.
type index struct {
	meta       MetaStore
	dir        [32]byte
	splitBytes int
	cache      *dirCache
	// splitting holds the shards this server is splitting: every PUT that
	// finds its shard over the limit would otherwise start its own split of
	// the same shard, and all but one would fail after doing the work.
	splitting *sync.Map
	// repairing holds the shards this server is listing in the directory
	// again (see repair).
	repairing *sync.Map
	// bg runs the repairs (nil: they do not run).
	bg *background
	// dirSplitBytes overrides dirSplitBytes (tests).
	dirSplitBytes int
	// queues combine this server's writes to each shard.
	queues *commitQueues
	// decoded holds shards as read, decoded (nil: decode every read).
	decoded *shardCache
}

// shardCache keeps decoded index shards for reads. A GET used to decode
// its whole shard (up to ShardSplitBytes, ~1,000 entries) to find one key:
// 3% of the S3 server's CPU under 4 KiB GETs, and most of its garbage. An
// entry is used only for the very bytes it was decoded from (same
// version, same backing array: the meta store hands out its cached value
// while the block is unchanged), and decoded shards from it are
// read-only: writers decode their own copy inside their round.
type shardCache struct {
	c *sizedcache.Cache[[32]byte, decodedShard]
}

type decodedShard struct {
	version uint64
	raw     *byte // the first byte of the bytes decoded
	n       int
	s       *shard
}

// shardCacheBytes bounds the memory of the shards kept decoded. A shard
// is charged decodedShardCost times its encoded size: once for its bytes,
// once for its decoded keys, and three times for the entries readers may
// decode beside it (getDecoded: an object's decoded entry, with its maps
// and strings, is about three times its JSON).
const (
	shardCacheBytes  = 64 << 20
	decodedShardCost = 5
)

func newShardCache() *shardCache {
	return &shardCache{c: sizedcache.New[[32]byte, decodedShard](shardCacheBytes)}
}

// decode returns the shard b encodes, from the cache when b is the value
// it last decoded for addr.
func (c *shardCache) decode(addr [32]byte, version uint64, b []byte) (*shard, error) {
	if c == nil || len(b) == 0 {
		return decodeShard(b)
	}
	raw := unsafe.SliceData(b)
	if e, ok := c.c.Get(addr); ok && e.version == version && e.raw == raw && e.n == len(b) {
		return e.s, nil
	}
	s, err := decodeShard(b)
	if err != nil {
		return nil, err
	}
	s.memo = make([]atomic.Pointer[memoized], len(s.keys))
	c.c.Put(addr, decodedShard{version: version, raw: raw, n: len(b), s: s}, decodedShardCost*len(b))
	return s, nil
}

// readShard is a quorum read of the shard at addr, decoded; the result is
// shared and must not be modified.
func (ix *index) readShard(ctx context.Context, addr [32]byte) (*shard, error) {
	b, version, err := ix.meta.Get(ctx, addr)
	if err != nil {
		return nil, err
	}
	return ix.decoded.decode(addr, version, b)
}

// createIndex makes an empty index: one shard covering everything and a
// directory pointing at it.
func createIndex(ctx context.Context, meta MetaStore) ([32]byte, error) {
	first := &shard{hiInf: true}
	sa, err := meta.CreateMutable(ctx, first.encode())
	if err != nil {
		return [32]byte{}, fmt.Errorf("s3: create shard: %w", err)
	}
	d := &directory{los: []string{""}, addrs: [][32]byte{sa}}
	da, err := meta.CreateMutable(ctx, d.encode())
	if err != nil {
		_ = meta.Delete(ctx, sa)
		return [32]byte{}, fmt.Errorf("s3: create directory: %w", err)
	}
	return da, nil
}

// locate finds the shard covering k and returns its address and contents
// (shared: read-only).
func (ix *index) locate(ctx context.Context, k string) ([32]byte, *shard, error) {
	addr, cached, err := ix.route(ctx, k, false)
	if err != nil {
		return [32]byte{}, nil, err
	}
	for hops := 0; ; hops++ {
		s, err := ix.readShard(ctx, addr)
		if errors.Is(err, ErrNotFound) {
			if cached { // the bucket may have been recreated; retry fresh
				if addr, cached, err = ix.route(ctx, k, true); err != nil {
					return [32]byte{}, nil, err
				}
				hops = 0
				continue
			}
			return [32]byte{}, nil, errIndexGone
		}
		if err != nil {
			return [32]byte{}, nil, err
		}
		if s.covers(k) {
			if hops > 0 {
				// The directory (or our copy of it) lacks this shard:
				// refresh our copy, and list the shard if it is missing.
				ix.repair(addr, s.lo)
			}
			return addr, s, nil
		}
		if k < s.lo || s.hiInf || s.next == ([32]byte{}) {
			// Only possible with a directory from another incarnation.
			if !cached {
				return [32]byte{}, nil, errCorruptMeta
			}
			if addr, cached, err = ix.route(ctx, k, true); err != nil {
				return [32]byte{}, nil, err
			}
			hops = 0
			continue
		}
		addr = s.next
	}
}

// find returns the shard covering k and k's position in it (ok false
// when k is absent); the shard is shared and read-only.
func (ix *index) find(ctx context.Context, k string) (s *shard, i int, ok bool, err error) {
	if _, s, err = ix.locate(ctx, k); err != nil {
		return nil, 0, false, err
	}
	i, ok = s.search(k)
	return s, i, ok, nil
}

// get returns the value stored under k.
func (ix *index) get(ctx context.Context, k string) ([]byte, bool, error) {
	s, i, ok, err := ix.find(ctx, k)
	if err != nil || !ok {
		return nil, false, err
	}
	return s.vals[i], true, nil
}

// getDecoded is get, returning decode's result for the value. It is kept
// with the decoded shard, so the next read of k in the same version of its
// shard decodes nothing: a GET decoded its object's entry from JSON every
// time, 11 µs, ~3% of the S3 server's CPU per 4 KiB GET. The result is
// shared between readers and must not be modified.
func (ix *index) getDecoded(ctx context.Context, k string, decode func([]byte) (any, error)) (any, bool, error) {
	s, i, ok, err := ix.find(ctx, k)
	if err != nil || !ok {
		return nil, false, err
	}
	if s.memo != nil {
		if m := s.memo[i].Load(); m != nil {
			return m.v, true, nil
		}
	}
	v, err := decode(s.vals[i])
	if err != nil {
		return nil, false, err
	}
	if s.memo != nil {
		s.memo[i].Store(&memoized{v})
	}
	return v, true, nil
}

// update applies fn to the value under k through the shard's
// read-modify-write, so concurrent writers never lose an entry; writes to
// one shard are combined into shared rounds (see commit.go). fn may run
// several times and must not have side effects; keep=false deletes the key.
func (ix *index) update(ctx context.Context, k string, fn func(cur []byte, found bool) (next []byte, keep bool, err error)) error {
	// The first attempt goes to the shard the directory names, unread: the
	// round reads the shard anyway and refuses a key it does not cover.
	// Reading it first cost every PUT a quorum read. Only when that fails
	// does the write look the key up properly (right links, fresh
	// directory).
	addr, _, err := ix.route(ctx, k, false)
	if err != nil {
		return err
	}
	guessed := true
	moves, waits := 0, 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		size, err := ix.commit(ctx, addr, &indexWrite{k: k, fn: fn})
		if guessed && (errors.Is(err, errMoved) || errors.Is(err, ErrNotFound)) {
			guessed = false
			if addr, _, err = ix.locate(ctx, k); err != nil {
				return err
			}
			continue
		}
		if errors.Is(err, errMoved) && moves < 64 {
			moves++
			if addr, _, err = ix.locate(ctx, k); err != nil {
				return err
			}
			continue // a split moved k right; look again
		}
		if errors.Is(err, errFrozen) {
			// A split is copying k's half of the shard out: k will live in
			// the new right shard in a moment.
			if err := waitFrozen(ctx, waits); err != nil {
				return err
			}
			waits++
			continue
		}
		if errors.Is(err, ErrNotFound) {
			return errIndexGone
		}
		if err != nil {
			return err
		}
		if size > ix.splitBytes {
			// Best effort: a failed split leaves a large but valid shard and
			// the next write retries.
			if _, busy := ix.splitting.LoadOrStore(addr, true); !busy {
				_ = ix.split(ctx, addr)
				ix.splitting.Delete(addr)
			}
		}
		return nil
	}
}

// split moves the upper half of the shard at addr into a new right
// sibling. It first freezes that half (writes to it wait), copies it into a
// new block, then cuts it off the shard and links the new block, all while
// writes to the lower half go on: under a steady stream of writes (every
// PUT of sequential keys lands in the last shard) a split that needed the
// whole shard unchanged would never finish, and the shard would grow
// without bound. The new block is fully written before the shard links to
// it, so readers always find every key by following right links.
func (ix *index) split(ctx context.Context, addr [32]byte) error {
	var fz *freeze
	var frozen *shard
	_, err := ix.meta.Update(ctx, addr, func(cur []byte) ([]byte, error) {
		c, err := decodeShard(cur)
		if err != nil {
			return nil, err
		}
		now := time.Now().UnixMilli()
		if len(cur) <= ix.splitBytes || len(c.keys) < 2 || c.sealed || (c.frozen != nil && now < c.frozen.until) {
			return nil, errNoSplit
		}
		c.frozen = &freeze{key: c.keys[len(c.keys)/2], until: now + freezeFor.Milliseconds()}
		c.gen++
		fz, frozen = c.frozen, c
		return c.encode(), nil
	})
	if errors.Is(err, errNoSplit) {
		return nil
	}
	if err != nil {
		return err
	}
	i, _ := frozen.search(fz.key)
	right := &shard{lo: fz.key, hi: frozen.hi, hiInf: frozen.hiInf, next: frozen.next,
		keys: frozen.keys[i:], vals: frozen.vals[i:]}
	ra, err := ix.meta.CreateMutable(ctx, right.encode())
	if err != nil {
		ix.unfreeze(ctx, addr, fz)
		return err
	}
	_, err = ix.meta.Update(ctx, addr, func(cur []byte) ([]byte, error) {
		c, err := decodeShard(cur)
		if err != nil {
			return nil, err
		}
		if c.frozen == nil || *c.frozen != *fz || c.sealed || c.hi != frozen.hi || c.hiInf != frozen.hiInf || c.next != frozen.next {
			return nil, errSplitRace // the freeze lapsed and was lifted
		}
		i, _ := c.search(fz.key)
		c.keys, c.vals = c.keys[:i], c.vals[:i]
		c.hi, c.hiInf, c.next, c.frozen = fz.key, false, ra, nil
		c.gen++
		return c.encode(), nil
	})
	if err != nil {
		if refused(err) {
			_ = ix.meta.Delete(ctx, ra)
		}
		ix.unfreeze(ctx, addr, fz)
		return err
	}
	return ix.publish(ctx, right.lo, ra)
}

// refused reports whether an Update failed because its function refused to
// write, so the block is as it was. Any other failure may have landed (an
// uncertain Paxos outcome): a block the write would have linked is then
// kept, an unreferenced block at worst, since deleting it could leave a
// link to nothing and the keys behind it unreachable.
func refused(err error) bool {
	return errors.Is(err, errSplitRace) || errors.Is(err, errNoSplit) || errors.Is(err, errDirFull) || errors.Is(err, errCorruptMeta)
}

// unfreeze lifts a split's freeze after the split failed, if it is still
// there; if this fails too, the freeze lapses on its own.
func (ix *index) unfreeze(ctx context.Context, addr [32]byte, fz *freeze) {
	_, _ = ix.meta.Update(ctx, addr, func(cur []byte) ([]byte, error) {
		c, err := decodeShard(cur)
		if err != nil {
			return nil, err
		}
		if c.frozen == nil || *c.frozen != *fz {
			return nil, errSplitRace
		}
		c.frozen = nil
		c.gen++
		return c.encode(), nil
	})
}

// waitFrozen backs off before a write retries a frozen key: 5 ms doubling
// to 80 ms, jittered, as long as ctx allows.
func waitFrozen(ctx context.Context, attempt int) error {
	d := 5 * time.Millisecond << min(attempt, 4)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// page returns the entries >= start held by the shard covering start, and
// where the next shard begins (more=false at the end of the key space).
func (ix *index) page(ctx context.Context, start string) (keys []string, vals [][]byte, next string, more bool, err error) {
	_, s, err := ix.locate(ctx, start)
	if err != nil {
		return nil, nil, "", false, err
	}
	i, _ := s.search(start)
	return s.keys[i:], s.vals[i:], s.hi, !s.hiInf, nil
}

// shards calls fn for each shard address in key order.
func (ix *index) shards(ctx context.Context, fn func(addr [32]byte, s *shard) error) error {
	addr, _, err := ix.route(ctx, "", true)
	if err != nil {
		return err
	}
	for {
		s, err := ix.readShard(ctx, addr)
		if err != nil {
			return err
		}
		if err := fn(addr, s); err != nil {
			return err
		}
		if s.hiInf {
			return nil
		}
		addr = s.next
	}
}

// seal marks every shard read-only if the index is empty; writers then fail
// with errSealed. On errNotEmpty the shards sealed so far are reopened.
func (ix *index) seal(ctx context.Context) error {
	var sealed [][32]byte
	err := ix.shards(ctx, func(addr [32]byte, _ *shard) error {
		_, err := ix.meta.Update(ctx, addr, func(cur []byte) ([]byte, error) {
			s, err := decodeShard(cur)
			if err != nil {
				return nil, err
			}
			if len(s.keys) > 0 {
				return nil, errNotEmpty
			}
			s.sealed = true
			s.gen++
			return s.encode(), nil
		})
		if err == nil {
			sealed = append(sealed, addr)
		}
		return err
	})
	if err != nil {
		for _, a := range sealed {
			_, _ = ix.meta.Update(ctx, a, func(cur []byte) ([]byte, error) {
				s, err := decodeShard(cur)
				if err != nil {
					return nil, err
				}
				s.sealed = false
				s.gen++
				return s.encode(), nil
			})
		}
	}
	return err
}

// destroy deletes every block of the index: shards, directory nodes, and
// the root last, so a destroy that fails part way can be run again.
func (ix *index) destroy(ctx context.Context) error {
	var addrs [][32]byte
	if err := ix.shards(ctx, func(a [32]byte, _ *shard) error {
		addrs = append(addrs, a)
		return nil
	}); err != nil {
		return err
	}
	nodes, err := ix.dirNodes(ctx)
	if err != nil {
		return err
	}
	for _, a := range append(addrs, nodes...) {
		if err := ix.meta.Delete(ctx, a); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		ix.cache.drop(a)
	}
	ix.cache.drop(ix.dir)
	return ix.meta.Delete(ctx, ix.dir)
}

// deleteRange removes keys in [lo, hi) shard by shard and returns the values
// removed.
func (ix *index) deleteRange(ctx context.Context, lo, hi string) ([][]byte, error) {
	var removed [][]byte
	start := lo
	waits := 0
	for {
		addr, _, err := ix.locate(ctx, start)
		if err != nil {
			return removed, err
		}
		var got [][]byte
		var s2 *shard
		_, err = ix.meta.Update(ctx, addr, func(cur []byte) ([]byte, error) {
			s, err := decodeShard(cur)
			if err != nil {
				return nil, err
			}
			if !s.covers(start) {
				return nil, errMoved
			}
			got = nil
			i, _ := s.search(start)
			j := sort.SearchStrings(s.keys, hi)
			if j < i {
				j = i
			}
			if j > i && s.frozenFor(s.keys[j-1], time.Now().UnixMilli()) {
				return nil, errFrozen
			}
			for _, v := range s.vals[i:j] {
				got = append(got, bytes.Clone(v))
			}
			s.keys = append(s.keys[:i], s.keys[j:]...)
			s.vals = append(s.vals[:i], s.vals[j:]...)
			s.gen++
			s2 = s
			return s.encode(), nil
		})
		if errors.Is(err, errMoved) {
			continue
		}
		if errors.Is(err, errFrozen) {
			if err := waitFrozen(ctx, waits); err != nil {
				return removed, err
			}
			waits++
			continue
		}
		if err != nil {
			return removed, err
		}
		removed = append(removed, got...)
		if s2.hiInf || s2.hi >= hi {
			return removed, nil
		}
		start = s2.hi
	}
}
