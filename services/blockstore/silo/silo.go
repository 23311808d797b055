// Package silo keeps a storage node's blocks on its local disk. Small blocks
// live in an embedded LSM (cockroachdb/pebble) next to the index; blocks at
// or above a threshold are appended once to segment files and only a pointer
// goes into the LSM, so a large block is never written twice (WAL, then
// table). Every write is fsync'd before it is acknowledged, with concurrent
// writers sharing fsyncs (group commit); every read is checksummed.
//
// A silo is not replicated and does not validate block content against its
// address: that is the blockstore service's job, one level up.
package silo

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"

	"shoal/shared/block"
)

var (
	// ErrCorrupt means stored bytes no longer match their checksum. The entry
	// is dropped so a repair can store a good copy again.
	ErrCorrupt = errors.New("silo: checksum mismatch")
	// ErrFull means the silo's capacity would be exceeded, or its disk is
	// full.
	ErrFull = errors.New("silo: capacity exhausted")
	// ErrClosed means the silo was closed.
	ErrClosed = errors.New("silo: closed")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configure a silo.
type Options struct {
	// Capacity in bytes of block data; 0 means unlimited.
	Capacity uint64
	// SegmentThreshold: blocks this large or larger go to segment files.
	SegmentThreshold int
	// SegmentSize: a segment file is sealed once it grows past this.
	SegmentSize int64
	// CacheSize of the LSM's block cache, on top of what its memtables
	// take (see memTableSize).
	CacheSize int64
	// CompactEvery is how often sealed segments are checked for
	// compaction (default 1 minute; negative: never, callers run
	// Compact themselves).
	CompactEvery time.Duration
	// CompactDead is the fraction of a sealed segment's bytes that must be
	// dead for it to be compacted (default 0.5).
	CompactDead float64
	// CompactRate bounds the bytes per second a compaction copies, so it
	// does not take the disk from foreground writes (default 64 MiB/s;
	// negative: unbounded).
	CompactRate int64
}

func (o *Options) defaults() {
	if o.SegmentThreshold <= 0 {
		// Block bodies in the LSM get rewritten by every compaction that
		// moves them down a level; in segments they are written once. Only
		// tiny blocks stay inline, where a separate pwrite would cost more
		// than the rewrites.
		o.SegmentThreshold = 1 << 10
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = 256 << 20
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 32 << 20
	}
	if o.CompactEvery == 0 {
		o.CompactEvery = time.Minute
	}
	if o.CompactDead <= 0 || o.CompactDead > 1 {
		o.CompactDead = 0.5
	}
	if o.CompactRate == 0 {
		o.CompactRate = 64 << 20
	}
}

// Info describes a stored block.
type Info struct {
	Size int
	Kind block.Kind
	// Touched is when the block was last written, found present by a Put,
	// or touched by a caller about to rely on it (unix ms, this node's
	// clock); 0 for blocks stored before touch times were kept.
	Touched int64
}

// TouchResolution is how stale a touch time may get before a touch
// rewrites it: hot blocks cost one small write per second, not one per
// hit. Space reclamation's grace period must exceed it.
const TouchResolution = time.Second

// Silo is one node's block storage.
type Silo struct {
	opts   Options
	dir    string
	db     *pebble.DB
	cache  *pebble.Cache
	closed atomic.Bool

	used   atomic.Int64
	blocks atomic.Int64
	// present answers "not stored" for new blocks without an LSM lookup.
	present *presence

	segMu   sync.Mutex // guards segs and cur; see lock order in LOCKS below
	segs    map[uint32]*segment
	cur     *segment
	segsDir string

	// touchMu makes "is it present? then refresh its touch time" atomic
	// against the sweep's "is it untouched? then delete it": touches hold
	// it shared, DeleteIfUntouched exclusively.
	touchMu sync.RWMutex
	now     func() time.Time

	// putting holds the blocks PutMany calls are storing. A concurrent
	// PutMany of one of them (a replica write and a read repair of the same
	// block, two writers of equal data) waits for that store instead of
	// storing the block again: a second copy counted it twice in blocks and
	// used bytes and left dead bytes counted live in a segment.
	putMu   sync.Mutex
	putting map[block.Address]*pendingPut

	// compactMu runs one compaction at a time (and none during Close).
	compactMu sync.Mutex
	stop      chan struct{} // closed by Close: the compaction loop ends
	loopDone  chan struct{} // closed when it has
}

// LOCKS: segMu is never held while waiting on a segment's sync or on pebble.
// touchMu is taken before segMu and may be held across pebble writes.

// Open opens (or creates) the silo in dir.
func Open(dir string, opts Options) (*Silo, error) {
	opts.defaults()
	s := &Silo{opts: opts, dir: dir, segs: map[uint32]*segment{}, segsDir: filepath.Join(dir, "segments"), now: time.Now, present: newPresence(),
		putting: map[block.Address]*pendingPut{}}
	if err := os.MkdirAll(s.segsDir, 0o755); err != nil {
		return nil, err
	}
	// Pebble accounts its memtables against the block cache: the mutable
	// one, one being flushed, and one kept for reuse each reserve their
	// size from it. A cache of CacheSize alone was wholly reserved after the
	// first flushes, so no data block stayed cached: every read of a block
	// went to the file again (the bloom filter and index blocks too), 40 µs
	// and a fresh buffer per 4 KiB S3 GET. The memtables' memory is
	// allocated anyway; the reservation only keeps the blocks from being
	// counted twice.
	s.cache = pebble.NewCache(opts.CacheSize + memTableReserve*memTableSize)
	popts := &pebble.Options{
		Cache:        s.cache,
		MemTableSize: memTableSize,
		Logger:       quietLogger{},
	}
	popts.EnsureDefaults()
	for i := range popts.Levels {
		// Every Put first asks whether the block is already stored; for a
		// new block the answer is no, and bloom filters give it without
		// reading data blocks. Small blocks are content-addressed hashes
		// and their (mostly incompressible) bytes: compression costs CPU
		// for nothing.
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		popts.Levels[i].Compression = pebble.NoCompression
	}
	db, err := pebble.Open(filepath.Join(dir, "index"), popts)
	if err != nil {
		s.cache.Unref()
		return nil, fmt.Errorf("silo: open index: %w", err)
	}
	s.db = db
	if err := s.openSegments(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.recount(); err != nil {
		s.Close()
		return nil, err
	}
	if opts.CompactEvery > 0 {
		s.stop, s.loopDone = make(chan struct{}), make(chan struct{})
		go s.compactLoop(opts.CompactEvery)
	}
	return s, nil
}

const (
	// memTableSize is the LSM's memtable size: acceptor records of hot
	// mutable blocks (S3 index shards, up to 256 KiB) are rewritten on
	// every update, and larger memtables flush fewer of those versions.
	memTableSize = 16 << 20
	// memTableReserve is how many memtables may hold a reservation from
	// the block cache at once: the mutable one, one being flushed and one
	// kept for reuse (MemTableStopWritesThreshold is pebble's default, 2).
	memTableReserve = 3
)

// cacheStats are the LSM block cache's counters.
type cacheStats struct {
	Hits, Misses int64
	Bytes        int64
}

// cacheStats returns the LSM block cache's counters.
func (s *Silo) cacheStats() cacheStats {
	m := s.db.Metrics().BlockCache
	return cacheStats{Hits: m.Hits, Misses: m.Misses, Bytes: m.Size}
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

func (s *Silo) openSegments() error {
	ents, err := os.ReadDir(s.segsDir)
	if err != nil {
		return err
	}
	var ids []uint32
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 32)
		if err != nil {
			continue
		}
		ids = append(ids, uint32(id))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		seg, err := openSegment(s.segsDir, id)
		if err != nil {
			return err
		}
		s.segs[id] = seg
		s.cur = seg
	}
	if s.cur == nil {
		return s.rotateLocked(1)
	}
	return nil
}

func (s *Silo) rotateLocked(id uint32) error {
	seg, err := openSegment(s.segsDir, id)
	if err != nil {
		return err
	}
	if err := syncDir(s.segsDir); err != nil {
		return err
	}
	s.segs[id] = seg
	s.cur = seg
	return nil
}

func (s *Silo) recount() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{keyBlock}, UpperBound: []byte{keyBlock + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	var used, n int64
	for it.First(); it.Valid(); it.Next() {
		e, err := decodeEntry(it.Value())
		if err != nil {
			return err
		}
		used += int64(e.size)
		n++
		if !e.inline {
			if seg := s.segs[e.seg]; seg != nil {
				seg.live += int64(e.size)
			}
		}
		var a block.Address
		copy(a[:], it.Key()[1:])
		s.present.add(a)
	}
	s.used.Store(used)
	s.blocks.Store(n)
	return it.Error()
}

const (
	keyBlock = 'b'
	// keyTouch+address holds a block's touch time: 8 bytes, unix ms, LE.
	// It lives apart from the entry so the entry format is unchanged and a
	// touch rewrites 8 bytes, not the block.
	keyTouch = 't'
)

func touchKey(a block.Address) []byte {
	k := blockKey(a)
	k[0] = keyTouch
	return k
}

func touchVal(ms int64) []byte {
	v := make([]byte, 8)
	put64(v, uint64(ms))
	return v
}

func blockKey(a block.Address) []byte {
	k := make([]byte, 1+block.AddressSize)
	k[0] = keyBlock
	copy(k[1:], a[:])
	return k
}

// entry is the index value of a block.
//
//	inline:  0 | kind | crc32c(4) | data
//	segment: 1 | kind | crc32c(4) | seg(4) | off(8) | len(4)
type entry struct {
	inline bool
	kind   block.Kind
	crc    uint32
	data   []byte
	seg    uint32
	off    int64
	size   int
}

// segmentEntry encodes the index entry of a block stored in a segment.
func segmentEntry(kind block.Kind, crc, seg uint32, off int64, size int) []byte {
	val := make([]byte, 6+16)
	val[0], val[1] = 1, byte(kind)
	put32(val[2:], crc)
	put32(val[6:], seg)
	put64(val[10:], uint64(off))
	put32(val[18:], uint32(size))
	return val
}

func decodeEntry(v []byte) (entry, error) {
	if len(v) < 6 {
		return entry{}, fmt.Errorf("%w: short index entry", ErrCorrupt)
	}
	e := entry{kind: block.Kind(v[1]), crc: le32(v[2:])}
	switch v[0] {
	case 0:
		e.inline = true
		e.data = v[6:]
		e.size = len(e.data)
	case 1:
		if len(v) != 6+16 {
			return entry{}, fmt.Errorf("%w: bad segment pointer", ErrCorrupt)
		}
		e.seg = le32(v[6:])
		e.off = int64(le64(v[10:]))
		e.size = int(le32(v[18:]))
	default:
		return entry{}, fmt.Errorf("%w: unknown entry type %d", ErrCorrupt, v[0])
	}
	return e, nil
}

// Put stores data under addr and returns whether it was already present.
// It returns only once the block is durable.
func (s *Silo) Put(addr block.Address, kind block.Kind, data []byte) (existed bool, err error) {
	r := s.PutMany([]Item{{Addr: addr, Kind: kind, Data: data}})
	return r[0].Existed, r[0].Err
}

// Item is one block of a PutMany.
type Item struct {
	Addr block.Address
	Kind block.Kind
	Data []byte
}

// PutResult is one PutMany item's outcome.
type PutResult struct {
	Existed bool
	Err     error
}

// PutMany stores several blocks with one segment write, one index batch
// and one fsync of each, and returns once all of them are durable. Items
// succeed or fail one by one: a block that would exceed the capacity fails
// alone.
func (s *Silo) PutMany(items []Item) []PutResult {
	out := make([]PutResult, len(items))
	fail := func(err error) []PutResult {
		for i := range out {
			if out[i].Err == nil && !out[i].Existed {
				out[i].Err = err
			}
		}
		return out
	}
	if s.closed.Load() {
		return fail(ErrClosed)
	}
	addrs := make([]block.Address, len(items))
	for i, it := range items {
		addrs[i] = it.Addr
	}
	present, err := s.touchPresent(addrs)
	if err != nil {
		return fail(err)
	}
	// Decide what to store: not present, not a repeat within the batch,
	// not being stored by another PutMany, and within capacity. first[i] is
	// the item a repeat shares its fate with.
	first := make(map[block.Address]int, len(items))
	var cand []int
	for i, it := range items {
		if present[i] {
			out[i].Existed = true
			continue
		}
		if _, dup := first[it.Addr]; dup {
			continue
		}
		first[it.Addr] = i
		cand = append(cand, i)
	}
	mine, theirs := s.claim(items, cand)
	var store []int
	var added int64
	segBytes := 0
	for _, i := range mine {
		it := items[i]
		// A PutMany that ended between touchPresent and the claim has
		// stored it (it commits before it lets go of its claim).
		if ok, err := s.has(it.Addr); err != nil {
			out[i].Err = err
			continue
		} else if ok {
			out[i].Existed = true
			continue
		}
		if c := s.opts.Capacity; c > 0 && uint64(s.used.Load()+added)+uint64(len(it.Data)) > c {
			out[i].Err = fmt.Errorf("%w: %d of %d bytes used", ErrFull, s.used.Load()+added, c)
			continue
		}
		added += int64(len(it.Data))
		store = append(store, i)
		if len(it.Data) >= s.opts.SegmentThreshold {
			segBytes += len(it.Data)
		}
	}
	if len(store) > 0 {
		if err := diskFull(s.store(items, store, segBytes)); err != nil {
			for _, i := range store {
				out[i].Err = err
			}
		} else {
			s.used.Add(added)
			s.blocks.Add(int64(len(store)))
		}
	}
	s.unclaim(items, mine, out)
	// Never before our own store and unclaim: two PutMany calls waiting
	// for each other's blocks would wait forever.
	for i, p := range theirs {
		<-p.done
		if p.err != nil {
			out[i].Err = p.err
		} else {
			out[i].Existed = true
		}
	}
	for i, it := range items {
		if j := first[it.Addr]; j != i && !present[i] {
			out[i] = out[j]
		}
	}
	return out
}

// pendingPut is a block a PutMany is storing; done closes once err says
// how that went.
type pendingPut struct {
	done chan struct{}
	err  error
}

// claim splits items[cand] into those this call stores (mine, now
// claimed) and those another PutMany is storing (theirs, with its claim).
func (s *Silo) claim(items []Item, cand []int) (mine []int, theirs map[int]*pendingPut) {
	s.putMu.Lock()
	defer s.putMu.Unlock()
	for _, i := range cand {
		a := items[i].Addr
		if p := s.putting[a]; p != nil {
			if theirs == nil {
				theirs = map[int]*pendingPut{}
			}
			theirs[i] = p
			continue
		}
		s.putting[a] = &pendingPut{done: make(chan struct{})}
		mine = append(mine, i)
	}
	return mine, theirs
}

// unclaim ends the claims of items[mine] with their outcomes in out.
func (s *Silo) unclaim(items []Item, mine []int, out []PutResult) {
	s.putMu.Lock()
	defer s.putMu.Unlock()
	for _, i := range mine {
		a := items[i].Addr
		p := s.putting[a]
		delete(s.putting, a)
		p.err = out[i].Err
		close(p.done)
	}
}

// store writes items[idx]: the bodies at or above the segment threshold in
// one contiguous segment write, then every index entry in one batch.
func (s *Silo) store(items []Item, idx []int, segBytes int) error {
	var segID uint32
	var off int64
	if segBytes > 0 {
		var body []byte
		for _, i := range idx {
			if d := items[i].Data; len(d) >= s.opts.SegmentThreshold {
				if body == nil && len(d) == segBytes {
					body = d // the only segment body: no copy
					break
				}
				if body == nil {
					body = make([]byte, 0, segBytes)
				}
				body = append(body, d...)
			}
		}
		var err error
		if segID, off, err = s.appendSegment(body); err != nil {
			return err
		}
		defer s.indexed(segID)
	}
	b := s.db.NewBatch()
	now := touchVal(s.now().UnixMilli())
	for _, i := range idx {
		it := items[i]
		crc := crc32.Checksum(it.Data, castagnoli)
		var val []byte
		if len(it.Data) < s.opts.SegmentThreshold {
			val = make([]byte, 6+len(it.Data))
			val[0], val[1] = 0, byte(it.Kind)
			put32(val[2:], crc)
			copy(val[6:], it.Data)
		} else {
			val = segmentEntry(it.Kind, crc, segID, off, len(it.Data))
			off += int64(len(it.Data))
		}
		_ = b.Set(blockKey(it.Addr), val, nil)
		_ = b.Set(touchKey(it.Addr), now, nil)
		// Before the commit: once the entry is visible, the filter must
		// not deny it.
		s.present.add(it.Addr)
	}
	// pebble.Sync joins concurrent committers into one WAL fsync.
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("silo: index write: %w", err)
	}
	if segBytes > 0 {
		s.addLive(segID, int64(segBytes))
	}
	return nil
}

// diskFull makes a write that failed because the disk is full (ENOSPC from
// a segment or the index) an ErrFull: clients are told there is no room
// (S3 507, ENOSPC), not that the node failed, and the node stays up.
func diskFull(err error) error {
	if err != nil && errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrFull) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}

// addLive adjusts a segment's live bytes.
func (s *Silo) addLive(id uint32, n int64) {
	s.segMu.Lock()
	if seg := s.segs[id]; seg != nil {
		seg.live += n
	}
	s.segMu.Unlock()
}

// dropped accounts for an entry the index no longer holds; an entry that
// did not decode (decoded false) counts only as a block.
func (s *Silo) dropped(e entry, decoded bool) {
	s.blocks.Add(-1)
	if !decoded {
		return
	}
	s.used.Add(-int64(e.size))
	if !e.inline {
		s.addLive(e.seg, -int64(e.size))
	}
}

// appendSegment writes data durably at the end of the current segment. On
// success the caller must call indexed(id) once the index entries pointing
// at it are committed (or will not be): until then the segment counts a
// pending write and no compaction removes it.
func (s *Silo) appendSegment(data []byte) (uint32, int64, error) {
	s.segMu.Lock()
	seg := s.cur
	off := seg.reserve(int64(len(data)))
	seg.pending++
	if off+int64(len(data)) >= s.opts.SegmentSize {
		if err := s.rotateLocked(seg.id + 1); err != nil {
			seg.pending--
			s.segMu.Unlock()
			return 0, 0, err
		}
	}
	s.segMu.Unlock()
	if err := seg.write(data, off); err != nil {
		s.indexed(seg.id)
		return 0, 0, err
	}
	return seg.id, off, nil
}

// indexed ends a write's pending state (see appendSegment).
func (s *Silo) indexed(id uint32) {
	s.segMu.Lock()
	if seg := s.segs[id]; seg != nil {
		seg.pending--
	}
	s.segMu.Unlock()
}

func (s *Silo) has(a block.Address) (bool, error) {
	if !s.present.mayContain(a) {
		return false, nil
	}
	_, closer, err := s.db.Get(blockKey(a))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// Has reports whether addr is stored.
func (s *Silo) Has(addr block.Address) (bool, error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	return s.has(addr)
}

// Touch reports, for each address, whether it is stored, and refreshes the
// touch time of those that are (durably, before returning), so a sweep
// that has not yet deleted them will not.
func (s *Silo) Touch(addrs []block.Address) ([]bool, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	return s.touchPresent(addrs)
}

func (s *Silo) touchPresent(addrs []block.Address) ([]bool, error) {
	s.touchMu.RLock()
	defer s.touchMu.RUnlock()
	out := make([]bool, len(addrs))
	now := s.now().UnixMilli()
	var b *pebble.Batch
	for i, a := range addrs {
		ok, err := s.has(a)
		if err != nil {
			return nil, err
		}
		out[i] = ok
		if !ok {
			continue
		}
		t, err := s.touched(a)
		if err != nil {
			return nil, err
		}
		if now-t < TouchResolution.Milliseconds() {
			continue
		}
		if b == nil {
			b = s.db.NewBatch()
		}
		_ = b.Set(touchKey(a), touchVal(now), nil)
	}
	if b != nil {
		if err := b.Commit(pebble.Sync); err != nil {
			return nil, fmt.Errorf("silo: touch: %w", err)
		}
	}
	return out, nil
}

// touched returns a block's touch time (0 if none is recorded).
func (s *Silo) touched(a block.Address) (int64, error) {
	v, closer, err := s.db.Get(touchKey(a))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, nil
	}
	return int64(le64(v)), nil
}

// DeleteIfUntouched deletes a block only if its touch time is before
// before (unix ms), atomically against concurrent touches: a block a
// writer was told is present is never deleted under it. It reports whether
// the block was deleted, and whether it was kept for being touched. The
// delete is not fsync'd: a delete lost in a crash leaves garbage for the
// next sweep, and any later synced write persists it.
func (s *Silo) DeleteIfUntouched(addr block.Address, before int64) (deleted, kept bool, err error) {
	if s.closed.Load() {
		return false, false, ErrClosed
	}
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	key := blockKey(addr)
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	e, derr := decodeEntry(v)
	closer.Close()
	t, err := s.touched(addr)
	if err != nil {
		return false, false, err
	}
	if t >= before {
		return false, true, nil
	}
	b := s.db.NewBatch()
	_ = b.Delete(key, nil)
	_ = b.Delete(touchKey(addr), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return false, false, err
	}
	s.dropped(e, derr == nil)
	return true, false, nil
}

// Get returns the block's bytes after checking their checksum.
func (s *Silo) Get(addr block.Address) ([]byte, block.Kind, error) {
	return s.GetAlloc(addr, nil)
}

// GetAlloc is Get reading a segment-stored block into alloc(size) (a
// caller's pool) rather than a new slice; nil alloc is Get.
func (s *Silo) GetAlloc(addr block.Address, alloc func(int) []byte) ([]byte, block.Kind, error) {
	if s.closed.Load() {
		return nil, 0, ErrClosed
	}
	key := blockKey(addr)
	// A compaction may move the block and retire its segment between the
	// index lookup and the read: the lookup is then simply made again.
	for attempt := 0; ; attempt++ {
		data, kind, retry, err := s.get(key, addr, attempt < maxGetAttempts-1, alloc)
		if !retry {
			return data, kind, err
		}
	}
}

// maxGetAttempts bounds Get's lookups of a block whose segment keeps being
// retired under it (each retirement means a compaction moved it).
const maxGetAttempts = 4

func (s *Silo) get(key []byte, addr block.Address, mayRetry bool, alloc func(int) []byte) (data []byte, kind block.Kind, retry bool, err error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, 0, false, fmt.Errorf("%w: %s", block.ErrNotFound, addr)
	}
	if err != nil {
		return nil, 0, false, err
	}
	raw := append([]byte(nil), v...)
	closer.Close()
	e, err := decodeEntry(raw)
	if err != nil {
		return nil, 0, false, err
	}
	if e.inline {
		data = e.data
	} else {
		s.segMu.Lock()
		seg := s.segs[e.seg]
		s.segMu.Unlock()
		if seg == nil {
			if mayRetry {
				return nil, 0, true, nil
			}
			return nil, 0, false, s.quarantine(key, raw, e, fmt.Errorf("%w: segment %d missing", ErrCorrupt, e.seg))
		}
		if alloc != nil {
			data = alloc(int(e.size))
		} else {
			data = make([]byte, e.size)
		}
		seg.rw.RLock()
		if seg.retired {
			seg.rw.RUnlock()
			if mayRetry {
				return nil, 0, true, nil
			}
			return nil, 0, false, fmt.Errorf("silo: block %s: its segment keeps being compacted away", addr)
		}
		_, err := seg.f.ReadAt(data, e.off)
		seg.rw.RUnlock()
		if err != nil {
			return nil, 0, false, s.quarantine(key, raw, e, fmt.Errorf("%w: %v", ErrCorrupt, err))
		}
	}
	if crc32.Checksum(data, castagnoli) != e.crc {
		return nil, 0, false, s.quarantine(key, raw, e, fmt.Errorf("%w: block %s", ErrCorrupt, addr))
	}
	return data, e.kind, false, nil
}

// quarantine drops a corrupt entry so the block reads as missing and a
// repair can store it again; it returns cause.
func (s *Silo) quarantine(key []byte, raw []byte, e entry, cause error) error {
	s.touchMu.RLock()
	defer s.touchMu.RUnlock()
	// Only the entry found corrupt: a compaction may have moved the block
	// (a fresh entry, a good copy) since it was read.
	cur, closer, err := s.db.Get(key)
	if err != nil {
		return cause
	}
	same := bytes.Equal(cur, raw)
	closer.Close()
	if !same {
		return cause
	}
	tk := append([]byte(nil), key...)
	tk[0] = keyTouch
	b := s.db.NewBatch()
	_ = b.Delete(key, nil)
	_ = b.Delete(tk, nil)
	if err := b.Commit(pebble.Sync); err == nil {
		s.dropped(e, true)
	}
	return cause
}

// Stat returns a block's size and kind without reading it.
func (s *Silo) Stat(addr block.Address) (Info, error) {
	if s.closed.Load() {
		return Info{}, ErrClosed
	}
	v, closer, err := s.db.Get(blockKey(addr))
	if errors.Is(err, pebble.ErrNotFound) {
		return Info{}, fmt.Errorf("%w: %s", block.ErrNotFound, addr)
	}
	if err != nil {
		return Info{}, err
	}
	defer closer.Close()
	e, err := decodeEntry(v)
	if err != nil {
		return Info{}, err
	}
	t, err := s.touched(addr)
	if err != nil {
		return Info{}, err
	}
	return Info{Size: e.size, Kind: e.kind, Touched: t}, nil
}

// Delete removes a block; it reports whether it was present. Space in a
// segment file is reclaimed when the segment is compacted, not here.
func (s *Silo) Delete(addr block.Address) (bool, error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	// Shared: a compaction moving the block holds it exclusively between
	// reading the entry and replacing it, so a delete cannot fall between.
	s.touchMu.RLock()
	defer s.touchMu.RUnlock()
	key := blockKey(addr)
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	e, derr := decodeEntry(v)
	closer.Close()
	b := s.db.NewBatch()
	_ = b.Delete(key, nil)
	_ = b.Delete(touchKey(addr), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return false, err
	}
	s.dropped(e, derr == nil)
	return true, nil
}

// Range calls fn for each stored block after `after` (exclusive; zero
// address and first=true start at the beginning) in address order, until fn
// returns false.
func (s *Silo) Range(after *block.Address, fn func(block.Address, Info) bool) error {
	if s.closed.Load() {
		return ErrClosed
	}
	lower := []byte{keyBlock}
	if after != nil {
		lower = append(blockKey(*after), 0)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{keyBlock + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	// Touch keys sort like block keys: walk them alongside.
	tlower := append([]byte(nil), lower...)
	tlower[0] = keyTouch
	tit, err := s.db.NewIter(&pebble.IterOptions{LowerBound: tlower, UpperBound: []byte{keyTouch + 1}})
	if err != nil {
		return err
	}
	defer tit.Close()
	tit.First()
	for it.First(); it.Valid(); it.Next() {
		var a block.Address
		copy(a[:], it.Key()[1:])
		e, err := decodeEntry(it.Value())
		if err != nil {
			return err
		}
		for tit.Valid() && string(tit.Key()[1:]) < string(a[:]) {
			tit.Next()
		}
		var touched int64
		if tit.Valid() && string(tit.Key()[1:]) == string(a[:]) && len(tit.Value()) == 8 {
			touched = int64(le64(tit.Value()))
		}
		if !fn(a, Info{Size: e.size, Kind: e.kind, Touched: touched}) {
			break
		}
	}
	if err := tit.Error(); err != nil {
		return err
	}
	return it.Error()
}

// Usage reports stored bytes, capacity (0 = unlimited) and block count.
func (s *Silo) Usage() (used, capacity, blocks uint64) {
	return uint64(s.used.Load()), s.opts.Capacity, uint64(s.blocks.Load())
}

// Close flushes and closes the silo.
func (s *Silo) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.stop != nil {
		close(s.stop)
		<-s.loopDone
	}
	s.compactMu.Lock() // a Compact called directly finishes first
	defer s.compactMu.Unlock()
	var errs []error
	s.segMu.Lock()
	for _, seg := range s.segs {
		errs = append(errs, seg.close())
	}
	s.segMu.Unlock()
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	if s.cache != nil {
		s.cache.Unref()
	}
	return errors.Join(errs...)
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }
func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
func put64(b []byte, v uint64) { put32(b, uint32(v)); put32(b[4:], uint32(v>>32)) }

const keyPaxos = 'p'

// LoadRecord returns the acceptor record of a mutable block (nil if none).
// Acceptor records live in the LSM beside the block index, so they share its
// WAL and group commit.
func (s *Silo) LoadRecord(addr block.Address) ([]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	k := blockKey(addr)
	k[0] = keyPaxos
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// StoreRecord writes a mutable block's acceptor record, not yet durably:
// the acceptor calls SyncRecords before it replies, as Paxos requires, and
// concurrent acceptor writes share that fsync.
func (s *Silo) StoreRecord(addr block.Address, rec []byte) error {
	if s.closed.Load() {
		return ErrClosed
	}
	k := blockKey(addr)
	k[0] = keyPaxos
	return diskFull(s.db.Set(k, rec, pebble.NoSync))
}

// SyncRecords makes every StoreRecord that returned before it durable: the
// WAL is sequential, so syncing an empty log record syncs all before it.
func (s *Silo) SyncRecords() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return diskFull(s.db.LogData(nil, pebble.Sync))
}
