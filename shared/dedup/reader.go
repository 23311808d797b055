package dedup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"shoal/shared/block"
	"shoal/shared/dedup/erasure"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
	"shoal/shared/dedup/seal"
)

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	// VolumeKey is the volume's 32-byte key; needed for encrypted refs only.
	VolumeKey []byte
	// ReadaheadBytes is how far ahead of the consumer a sequential read
	// fetches chunks (default 16 MiB), counted in the policy's largest
	// chunk, at least 2 chunks. Memory per open read is about this plus
	// two chunks. Counting bytes, not chunks, keeps enough in flight to
	// cover the nodes' round trips with small chunks (64 KiB CDC) without
	// letting 4 MiB fixed chunks hold hundreds of MiB.
	ReadaheadBytes int64
	// Repair re-puts erasure-coding shards found missing or corrupt.
	Repair bool
	// OnDamage, if set, hears about every bad shard met while reading.
	OnDamage func(Damage)
	// NodeCache is how many decoded manifest nodes are kept (default 256).
	// Nodes are immutable, so a cached node never goes stale.
	NodeCache int
}

// Damage describes one erasure-coding shard that was missing or corrupt.
type Damage struct {
	Stripe   block.Address
	Rank     int
	Shard    block.Address
	Err      error // why the shard was unusable
	Repaired bool
	// RepairErr is why a repair was not done or failed.
	RepairErr error
}

// Reader reads streams written by Writer. It is safe for concurrent use.
type Reader struct {
	store  BlockStore
	cfg    ReaderConfig
	plain  *seal.Sealer
	keyed  *seal.Sealer
	nodes  nodeCache
	damage sync.Mutex // serializes OnDamage calls
	// recycle gives back a chunk's or shard's bytes to the store that
	// returned them (nil: the store does not take them back).
	recycle func([]byte)
}

// A recycler is a BlockStore whose Get and GetShard results are the
// caller's own, to hand back with Recycle when done (dht.Client's are
// pooled buffers).
type recycler interface{ Recycle([]byte) }

// NewReader checks cfg and returns a Reader.
func NewReader(store BlockStore, cfg ReaderConfig) (*Reader, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrConfig)
	}
	if cfg.ReadaheadBytes <= 0 {
		cfg.ReadaheadBytes = 16 << 20
	}
	if cfg.NodeCache <= 0 {
		cfg.NodeCache = 256
	}
	r := &Reader{store: store, cfg: cfg}
	if rc, ok := store.(recycler); ok {
		r.recycle = rc.Recycle
	}
	r.nodes.max = cfg.NodeCache
	var err error
	if r.plain, err = seal.New(policy.Compression{}, nil); err != nil {
		return nil, err
	}
	if cfg.VolumeKey != nil {
		if r.keyed, err = seal.New(policy.Compression{}, cfg.VolumeKey); err != nil {
			return nil, ErrKey
		}
	}
	return r, nil
}

// view is one reference being read: the ref plus what it implies.
type view struct {
	ref    manifest.Ref
	sealer *seal.Sealer
	ec     *erasure.Code
	k, m   int
}

func (r *Reader) view(ref manifest.Ref) (*view, error) {
	if err := ref.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	v := &view{ref: ref, sealer: r.plain}
	if ref.Policy.Encrypt {
		if r.keyed == nil {
			return nil, ErrKey
		}
		v.sealer = r.keyed
	}
	if red := ref.Policy.Redundancy; red.Mode == policy.Erasure {
		var err error
		if v.ec, err = erasure.New(red.Data, red.Parity); err != nil {
			return nil, err
		}
		v.k, v.m = red.Data, red.Parity
	}
	return v, nil
}

// node fetches, verifies, opens and decodes one manifest node, and checks it
// is the node its parent described. chunks < 0 skips the chunk-count check
// (the root's count is not in the ref).
func (r *Reader) node(ctx context.Context, v *view, addr, seed block.Address, level int, logical, chunks int64) (*manifest.Node, error) {
	n := r.nodes.get(addr)
	if n == nil {
		data, err := r.store.Get(ctx, addr) // verified by the store
		if err != nil {
			return nil, fmt.Errorf("dedup: manifest node %s: %w", addr, corrupt(err))
		}
		if n, err = decodeSealedNode(v, data, seed); err != nil {
			return nil, fmt.Errorf("%w: manifest node %s: %w", ErrCorrupt, addr, err)
		}
		r.nodes.put(addr, n)
	}
	if err := checkNode(v, n, level, logical, chunks); err != nil {
		return nil, fmt.Errorf("%w: node %s %w", ErrCorrupt, addr, err)
	}
	return n, nil
}

// decodeSealedNode opens and decodes a node's sealed bytes.
func decodeSealedNode(v *view, data []byte, seed block.Address) (*manifest.Node, error) {
	size := len(data)
	if v.ref.Policy.Encrypt {
		size -= seal.Overhead
	}
	plain, err := v.sealer.Open(nil, data, seed, false, size)
	if err != nil {
		return nil, err
	}
	return manifest.DecodeNode(plain)
}

// checkNode checks n is the node its parent (or the ref) described.
func checkNode(v *view, n *manifest.Node, level int, logical, chunks int64) error {
	switch {
	case n.Level != level:
		return fmt.Errorf("at level %d, expected %d", n.Level, level)
	case n.Encrypted != v.ref.Policy.Encrypt || n.Data != v.k || n.Parity != v.m:
		return fmt.Errorf("does not match the policy %s", v.ref.Policy)
	case n.Stats.Logical != logical || chunks >= 0 && n.Stats.Chunks != chunks:
		return fmt.Errorf("holds %d bytes in %d chunks, parent says %d in %d",
			n.Stats.Logical, n.Stats.Chunks, logical, chunks)
	}
	return nil
}

// root returns the ref's root node: from the ref itself when it carries
// it inline, else fetched.
func (r *Reader) root(ctx context.Context, v *view) (*manifest.Node, error) {
	if v.ref.Inline == "" {
		return r.node(ctx, v, v.ref.Root, v.ref.Seed, v.ref.Depth, v.ref.Size, -1)
	}
	n, err := decodeSealedNode(v, []byte(v.ref.Inline), v.ref.Seed)
	if err == nil {
		err = checkNode(v, n, 0, v.ref.Size, -1)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: inline root node %w", ErrCorrupt, err)
	}
	return n, nil
}

// Stat is what a stream costs, as recorded when it was written.
type Stat struct {
	Size   int64
	Chunks int64
	// Stored is the sealed (compressed, encrypted) size of all chunk
	// references; Physical adds erasure-coding parity. Both count a chunk
	// each time the stream uses it and one copy per block (replicas not
	// counted); manifest nodes are not included.
	Stored   int64
	Physical int64
	// Unique is Physical with each distinct chunk counted once (exact up
	// to 65536 chunks, a lower bound on the savings beyond).
	Unique int64
}

// CompressionRatio is logical bytes per stored byte (1 when nothing
// compressed; encryption makes it slightly below 1).
func (s Stat) CompressionRatio() float64 { return ratio(s.Size, s.Stored) }

// DedupRatio is how much deduplication within the stream saves: physical
// bytes referenced per distinct physical byte. Sharing with other streams
// shows in the store's totals, not here: a stream's tree depends only on
// its content, not on what was stored before it.
func (s Stat) DedupRatio() float64 { return ratio(s.Physical, s.Unique) }

func ratio(a, b int64) float64 {
	switch {
	case b > 0:
		return float64(a) / float64(b)
	case a == 0:
		return 1
	default:
		return math.Inf(1)
	}
}

// Stat reads the root node only.
func (r *Reader) Stat(ctx context.Context, ref manifest.Ref) (Stat, error) {
	v, err := r.view(ref)
	if err != nil {
		return Stat{}, err
	}
	n, err := r.root(ctx, v)
	if err != nil {
		return Stat{}, err
	}
	st := n.Stats
	return Stat{Size: st.Logical, Chunks: st.Chunks, Stored: st.Stored, Physical: st.Physical, Unique: st.Unique}, nil
}

// frame is one level of a cursor: a node, the entry being visited and the
// stream offset where that entry starts.
type frame struct {
	node *manifest.Node
	idx  int
	pos  int64
}

// cursor walks the chunks of a stream in order, holding one node per level.
type cursor struct {
	r     *Reader
	v     *view
	stack []frame
}

func (c *cursor) entries(f *frame) int {
	if f.node.Level == 0 {
		return len(f.node.Chunks)
	}
	return len(f.node.Children)
}

func (c *cursor) entryLen(f *frame) int64 {
	if f.node.Level == 0 {
		return int64(f.node.Chunks[f.idx].Logical)
	}
	return f.node.Children[f.idx].Logical
}

// seek positions the cursor on the chunk holding off (< size).
func (c *cursor) seek(ctx context.Context, root *manifest.Node, off int64) error {
	c.stack = append(c.stack[:0], frame{node: root})
	for {
		f := &c.stack[len(c.stack)-1]
		for f.idx < c.entries(f) && f.pos+c.entryLen(f) <= off {
			f.pos += c.entryLen(f)
			f.idx++
		}
		if f.idx == c.entries(f) {
			return fmt.Errorf("%w: offset %d beyond the tree", ErrCorrupt, off)
		}
		if f.node.Level == 0 {
			return nil
		}
		if err := c.descend(ctx); err != nil {
			return err
		}
	}
}

func (c *cursor) descend(ctx context.Context) error {
	f := c.stack[len(c.stack)-1]
	ch := &f.node.Children[f.idx]
	n, err := c.r.node(ctx, c.v, ch.Addr, ch.Seed, f.node.Level-1, ch.Logical, ch.Chunks)
	if err != nil {
		return err
	}
	c.stack = append(c.stack, frame{node: n, pos: f.pos})
	return nil
}

// chunk is the current chunk and its stream offset.
func (c *cursor) chunk() (*manifest.Chunk, int64) {
	f := &c.stack[len(c.stack)-1]
	return &f.node.Chunks[f.idx], f.pos
}

// next moves to the following chunk; false at the end of the stream.
func (c *cursor) next(ctx context.Context) (bool, error) {
	for {
		f := &c.stack[len(c.stack)-1]
		f.pos += c.entryLen(f)
		f.idx++
		if f.idx < c.entries(f) {
			break
		}
		if len(c.stack) == 1 {
			return false, nil
		}
		c.stack = c.stack[:len(c.stack)-1]
	}
	for c.stack[len(c.stack)-1].node.Level > 0 {
		if err := c.descend(ctx); err != nil {
			return false, err
		}
	}
	return true, nil
}

// corrupt marks a store error that means no copy matched its address as
// ErrCorrupt, leaving others (not found, unreachable) as they are.
func corrupt(err error) error {
	if errors.Is(err, block.ErrHashMismatch) && !errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}

// loadChunk fetches, verifies and opens one chunk. A non-nil free takes
// the result back once the caller is done with it (nothing else refers to
// it): a stripe's join goes back to this package's pool, a block's bytes
// to its store.
func (r *Reader) loadChunk(ctx context.Context, v *view, c *manifest.Chunk) (plain []byte, free func([]byte), _ error) {
	var stored []byte
	free = r.recycle
	if v.ec != nil {
		var err error
		if stored, err = r.loadStripe(ctx, v, c, false, r.cfg.OnDamage); err != nil {
			return nil, nil, err
		}
		free = putBuf
	} else {
		// Verified against its address by the store (hashing it again
		// here was a fifth of the tier's CPU on reads).
		data, err := r.store.Get(ctx, c.Addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dedup: chunk %s: %w", c.Addr, corrupt(err))
		}
		if len(data) != c.Stored {
			if free != nil {
				free(data)
			}
			return nil, nil, fmt.Errorf("%w: chunk %s is %d bytes, the manifest says %d", ErrCorrupt, c.Addr, len(data), c.Stored)
		}
		stored = data
	}
	plain, err := v.sealer.Open(nil, stored, c.Seed, c.Compressed, c.Logical)
	// Opening a chunk stored as is returns the stored bytes themselves;
	// otherwise they are done with here.
	if free != nil && (err != nil || len(plain) == 0 || &plain[0] != &stored[0]) {
		free(stored)
		free = nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: chunk %s: %w", ErrCorrupt, c.Addr, err)
	}
	return plain, free, nil
}

// loadStripe gets a chunk's stored bytes from its shards. It asks for the k
// data shards first (all k+m when all is set, as a scrub does) and for
// parity only when some are unusable; a shard that does not hash to its
// recorded address counts as missing. Damaged shards are reported and, with
// Repair, rebuilt on their nodes.
func (r *Reader) loadStripe(ctx context.Context, v *view, c *manifest.Chunk, all bool, onDamage func(Damage)) ([]byte, error) {
	k, m := v.k, v.m
	size := v.ec.ShardSize(c.Stored)
	shards := make([][]byte, k+m)
	errs := make([]error, k+m)
	fetch := func(ranks []int) {
		var wg sync.WaitGroup
		for _, rank := range ranks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data, err := r.store.GetShard(ctx, c.Addr, rank, c.Shards[rank]) // verified
				switch {
				case err != nil:
					errs[rank] = corrupt(err)
				case len(data) != size:
					errs[rank] = fmt.Errorf("%w: shard %d of %s is %d bytes, want %d", ErrCorrupt, rank, c.Addr, len(data), size)
				default:
					shards[rank] = data
				}
			}()
		}
		wg.Wait()
	}
	first := k
	if all {
		first = k + m
	}
	fetch(seq(0, first))
	have := 0
	for _, s := range shards {
		if s != nil {
			have++
		}
	}
	if have < k && first < k+m {
		fetch(seq(first, k+m))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var bad []int
	for rank := range first {
		if shards[rank] == nil {
			bad = append(bad, rank)
		}
	}
	if len(bad) > 0 && first < k+m {
		for rank := first; rank < k+m; rank++ {
			if shards[rank] == nil {
				bad = append(bad, rank)
			}
		}
	}
	repair := r.cfg.Repair && len(bad) > 0
	// The join goes into a pooled buffer: a new one per chunk was mostly
	// pages this process had not touched (see rpc.Reused), a tenth of a
	// direct EC get's CPU in page faults.
	buf := getBuf(size * k)
	data, err := v.ec.Reconstruct(buf, shards, c.Stored, repair)
	if err != nil {
		putBuf(buf)
		r.report(onDamage, c, bad, errs, nil)
		return nil, fmt.Errorf("%w: chunk %s: %w", ErrCorrupt, c.Addr, err)
	}
	// With every data shard read and verified (bad empty) there was
	// nothing to rebuild: the chunk is their concatenation, each checked
	// against an address the content-addressed manifest names, so hashing
	// it again would only re-check the writer (a quarter of an EC get's
	// hashing). A chunk rebuilt from parity is checked whole.
	if len(bad) > 0 && block.Sum(data) != c.Addr {
		putBuf(data)
		return nil, fmt.Errorf("%w: chunk %s rebuilt from shards does not match its address", ErrCorrupt, c.Addr)
	}
	if len(bad) > 0 {
		var repairErrs []error
		if repair {
			repairErrs = r.repair(ctx, c, shards, bad)
		}
		r.report(onDamage, c, bad, errs, repairErrs)
	} else if r.recycle != nil {
		// Joined, the shards are done with (a repair's puts may still hold
		// them, so only when there was none).
		for _, s := range shards {
			if s != nil {
				r.recycle(s)
			}
		}
	}
	return data, nil
}

func seq(from, to int) []int {
	s := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// errNoRepair marks damage that was seen but not repaired.
var errNoRepair = errors.New("dedup: repair not enabled")

func (r *Reader) repair(ctx context.Context, c *manifest.Chunk, shards [][]byte, bad []int) []error {
	out := make([]error, len(bad))
	for i, rank := range bad {
		if block.Sum(shards[rank]) != c.Shards[rank] {
			out[i] = fmt.Errorf("%w: rebuilt shard %d of %s does not match the manifest", ErrCorrupt, rank, c.Addr)
			continue
		}
		out[i] = putShards(ctx, r.store, c.Addr, shards, c.Shards, []int{rank}, 1)
	}
	return out
}

func (r *Reader) report(onDamage func(Damage), c *manifest.Chunk, bad []int, errs, repairErrs []error) {
	if onDamage == nil {
		return
	}
	r.damage.Lock()
	defer r.damage.Unlock()
	for i, rank := range bad {
		d := Damage{Stripe: c.Addr, Rank: rank, Shard: c.Shards[rank], Err: errs[rank], RepairErr: errNoRepair}
		if repairErrs != nil {
			d.RepairErr = repairErrs[i]
			d.Repaired = repairErrs[i] == nil
		}
		onDamage(d)
	}
}

// Read returns the stream's bytes [off, off+n); n < 0 or past the end reads
// to the end. Only the chunks overlapping the range are fetched, each
// verified, and up to ReadaheadBytes of them ahead of the consumer. The caller
// must Close the result.
func (r *Reader) Read(ctx context.Context, ref manifest.Ref, off, n int64) (io.ReadCloser, error) {
	v, err := r.view(ref)
	if err != nil {
		return nil, err
	}
	if off < 0 || off > ref.Size {
		return nil, fmt.Errorf("%w: %d of %d", ErrRange, off, ref.Size)
	}
	if n < 0 || n > ref.Size-off {
		n = ref.Size - off
	}
	root, err := r.root(ctx, v)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	ahead := r.cfg.ReadaheadBytes / int64(ref.Policy.Chunking.MaxLen())
	rr := &rangeReader{cancel: cancel, futures: make(chan *future, min(max(ahead, 2), 1024))}
	if n == 0 {
		close(rr.futures)
		return rr, nil
	}
	cur := &cursor{r: r, v: v}
	end := off + n
	rr.wg.Add(1)
	go func() {
		defer rr.wg.Done()
		defer close(rr.futures)
		err := cur.seek(ctx, root, off)
		for err == nil {
			c, base := cur.chunk()
			f := &future{done: make(chan struct{}), skip: max(off-base, 0), lim: min(end-base, int64(c.Logical))}
			select {
			case rr.futures <- f:
			case <-ctx.Done():
				return
			}
			rr.wg.Add(1)
			go func() {
				defer rr.wg.Done()
				defer close(f.done)
				f.data, f.free, f.err = r.loadChunk(ctx, v, c)
			}()
			if base+int64(c.Logical) >= end {
				return
			}
			var more bool
			if more, err = cur.next(ctx); err == nil && !more {
				err = fmt.Errorf("%w: tree ends before its size", ErrCorrupt)
			}
		}
		// Hand the error to the consumer in stream order.
		f := &future{done: make(chan struct{}), err: err}
		close(f.done)
		select {
		case rr.futures <- f:
		case <-ctx.Done():
		}
	}()
	return rr, nil
}

type future struct {
	done      chan struct{}
	data      []byte
	free      func([]byte) // takes data back once read (loadChunk)
	err       error
	skip, lim int64
}

// release gives back f's data if it can; f is done.
func (f *future) release() {
	if f != nil && f.free != nil {
		f.free(f.data)
		f.data, f.free = nil, nil
	}
}

type rangeReader struct {
	cancel  context.CancelFunc
	futures chan *future
	wg      sync.WaitGroup
	// mu: a Close racing a Read must not give a buffer back twice.
	mu     sync.Mutex
	last   *future // the one cur is read from
	cur    []byte
	err    error
	closed bool
}

func (rr *rangeReader) Read(p []byte) (int, error) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if err := rr.fill(); err != nil {
		return 0, err
	}
	n := copy(p, rr.cur)
	rr.cur = rr.cur[n:]
	return n, nil
}

// WriteTo hands w each chunk's bytes as they are, without the copy into a
// caller's buffer that Read makes (io.Copy uses it): for `shoal get` that
// copy, in 32 KiB steps, was a tenth of the client's CPU.
func (rr *rangeReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		n, err := rr.writeNext(w)
		total += int64(n)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// writeNext writes the rest of the current chunk to w. It holds mu while
// writing: a Close racing it must not take the buffer back under w.
func (rr *rangeReader) writeNext(w io.Writer) (int, error) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if err := rr.fill(); err != nil {
		return 0, err
	}
	n, err := w.Write(rr.cur)
	rr.cur = rr.cur[n:]
	if err == nil && len(rr.cur) > 0 {
		err = io.ErrShortWrite
	}
	return n, err
}

// fill makes cur the next bytes of the range, waiting for their chunk;
// mu is held. It returns io.EOF at the range's end.
func (rr *rangeReader) fill() error {
	if rr.closed {
		return errClosedRead
	}
	for len(rr.cur) == 0 {
		rr.last.release()
		rr.last = nil
		if rr.err != nil {
			return rr.err
		}
		f, ok := <-rr.futures
		if !ok {
			rr.err = io.EOF
			continue
		}
		<-f.done
		if f.err != nil {
			rr.err = f.err
			continue
		}
		rr.cur, rr.last = f.data[f.skip:f.lim], f
	}
	return nil
}

var errClosedRead = errors.New("dedup: read after close")

// Close stops the readahead and waits for it.
func (rr *rangeReader) Close() error {
	rr.cancel() // first: a Read blocked on a future holds mu
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.closed {
		return nil
	}
	rr.closed = true
	rr.last.release()
	rr.cur, rr.last = nil, nil
	for f := range rr.futures {
		<-f.done
		f.release()
	}
	rr.wg.Wait()
	return nil
}

// nodeCache keeps recently decoded nodes, evicting in insertion order.
type nodeCache struct {
	mu   sync.Mutex
	max  int
	m    map[block.Address]*manifest.Node
	fifo []block.Address
}

func (c *nodeCache) get(a block.Address) *manifest.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[a]
}

func (c *nodeCache) put(a block.Address, n *manifest.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[block.Address]*manifest.Node, c.max)
	}
	if _, ok := c.m[a]; ok {
		return
	}
	if len(c.fifo) >= c.max {
		delete(c.m, c.fifo[0])
		c.fifo = c.fifo[1:]
	}
	c.m[a] = n
	c.fifo = append(c.fifo, a)
}

// ReadFirst is Read that has the range's first bytes (up to first of
// them) in hand before it returns: a caller that must answer a failure
// before sending anything (an HTTP status, a fallback to another path)
// learns of it here. Errors of later reads go through wrap, as one
// returned here does.
func (r *Reader) ReadFirst(ctx context.Context, ref manifest.Ref, off, n int64, first int, wrap func(error) error) (io.ReadCloser, error) {
	rc, err := r.Read(ctx, ref, off, n)
	if err != nil {
		return nil, wrap(err)
	}
	if n < 0 || n > ref.Size-off {
		n = ref.Size - off
	}
	buf := make([]byte, min(n, int64(first)))
	k, err := io.ReadFull(rc, buf)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		_ = rc.Close()
		return nil, wrap(err)
	}
	if int64(k) == n {
		_ = rc.Close()
		return io.NopCloser(bytes.NewReader(buf[:k])), nil
	}
	return &firstReader{r: io.MultiReader(bytes.NewReader(buf[:k]), rc), c: rc, wrap: wrap}, nil
}

type firstReader struct {
	r    io.Reader
	c    io.Closer
	wrap func(error) error
}

func (r *firstReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = r.wrap(err)
	}
	return n, err
}

// WriteTo passes the range to w without copying it through a buffer
// (rangeReader.WriteTo); only read errors are wrapped.
func (r *firstReader) WriteTo(w io.Writer) (int64, error) {
	n, err := io.Copy(markWriter{w}, r.r)
	var we writeError
	if errors.As(err, &we) {
		return n, we.err
	}
	if err != nil {
		err = r.wrap(err)
	}
	return n, err
}

// markWriter marks its writer's errors, so that firstReader.WriteTo labels
// only read errors as such.
type markWriter struct{ w io.Writer }

func (m markWriter) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	if err != nil {
		err = writeError{err}
	}
	return n, err
}

type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

func (r *firstReader) Close() error { return r.c.Close() }
