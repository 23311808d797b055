package dedup

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	sha256 "github.com/minio/sha256-simd"

	"shoal/shared/block"
	"shoal/shared/cpus"
	"shoal/shared/dedup/chunker"
	"shoal/shared/dedup/erasure"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
	"shoal/shared/dedup/seal"
	"shoal/shared/sizedcache"
)

// WriterConfig configures a Writer.
type WriterConfig struct {
	Policy policy.Policy
	// VolumeKey is the 32-byte volume key; required iff Policy.Encrypt.
	VolumeKey []byte
	// MaxInFlight bounds the bytes held between reading the stream and
	// finishing with them (default 64 MiB); it is the Write's memory bound.
	MaxInFlight int64
	// Workers seal chunks in parallel (default: the cores, cpus.N).
	Workers int
	// Puts bounds concurrent Put calls, and PutShard calls per chunk under
	// erasure coding (default 64: with 64 KiB chunks, 4 MiB in flight is
	// what keeps the nodes' batched, fsync'd writes busy; 16 left the put
	// at 40 MB/s where 64 gives 50 on the benchmark).
	Puts int
	// HasBatch is the most chunks asked about in one Has call (default 256).
	HasBatch int
	// Sealed, if set, remembers how chunks were sealed (see SealCache), so
	// writing data again costs a hash, not a compression, per chunk.
	Sealed *SealCache
}

// SealCache remembers, for chunks a Writer sealed, the sealed block's
// address by the plaintext's SHA-256. Sealing is deterministic (convergent
// encryption, zstd at a fixed level), so a chunk written again seals to the
// same block: with the cache, a re-write hashes each chunk, asks the store
// whether the block is there, and compresses only chunks it must send. It
// is only a cache: losing it (a restart, another dedup replica) costs
// compression again, never correctness, and a cached address is used only
// after the store confirms it holds the block, or once the chunk has been
// sealed again and found to match.
type SealCache struct {
	c *sizedcache.Cache[sealKey, sealedChunk]
}

// NewSealCache returns a cache of about budget bytes (~100 per chunk).
func NewSealCache(budget int) *SealCache {
	return &SealCache{c: sizedcache.New[sealKey, sealedChunk](budget)}
}

type sealKey struct {
	writer uint64 // the Writer: its policy and key decide the sealing
	sum    block.Address
}

type sealedChunk struct {
	addr       block.Address
	logical    int
	stored     int
	compressed bool
	shards     []block.Address // an erasure-coded chunk's shard addresses
}

const sealEntryBytes = 100

// digestLabel starts a stream's digest (manifest.Ref.ETag).
var digestLabel = []byte("shoal/dedup/v1 stream digest\x00")

// streamDigest is a stream's digest in the making: feed it each chunk's
// plaintext hash, in order.
type streamDigest struct{ h hash.Hash }

func newStreamDigest() streamDigest {
	h := sha256.New()
	h.Write(digestLabel)
	return streamDigest{h}
}

func (d streamDigest) add(sum block.Address) { d.h.Write(sum[:]) }

func (d streamDigest) etag() (e [16]byte) {
	copy(e[:], d.h.Sum(nil))
	return e
}

var writerIDs atomic.Uint64

// Writer stores streams under one volume's policy. It is safe for
// concurrent use; each Write runs its own pipeline.
type Writer struct {
	id       uint64
	store    BlockStore
	cfg      WriterConfig
	sealer   *seal.Sealer
	nodeSeal *seal.Sealer
	ec       *erasure.Code
}

// NewWriter checks cfg and returns a Writer.
func NewWriter(store BlockStore, cfg WriterConfig) (*Writer, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrConfig)
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.Policy.Encrypt != (cfg.VolumeKey != nil) || cfg.VolumeKey != nil && len(cfg.VolumeKey) != seal.KeySize {
		return nil, ErrKey
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64 << 20
	}
	if cfg.Workers <= 0 {
		cfg.Workers = cpus.N()
	}
	if cfg.Puts <= 0 {
		cfg.Puts = 64
	}
	if cfg.HasBatch <= 0 {
		cfg.HasBatch = 256
	}
	w := &Writer{id: writerIDs.Add(1), store: store, cfg: cfg}
	var err error
	if w.sealer, err = seal.New(cfg.Policy.Compression, cfg.VolumeKey); err != nil {
		return nil, err
	}
	if w.nodeSeal, err = seal.New(policy.Compression{}, cfg.VolumeKey); err != nil {
		return nil, err
	}
	if r := cfg.Policy.Redundancy; r.Mode == policy.Erasure {
		if w.ec, err = erasure.New(r.Data, r.Parity); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func (w *Writer) cutter() (chunker.Cutter, error) { return cutter(w.cfg.Policy.Chunking) }

// Policy is the policy the Writer stores streams under.
func (w *Writer) Policy() policy.Policy { return w.cfg.Policy }

// NewCutter returns the chunker a Writer of chunking c cuts streams with:
// what a client offering chunks (Resolve) must cut with.
func NewCutter(c policy.Chunking) (chunker.Cutter, error) { return cutter(c) }

func cutter(c policy.Chunking) (chunker.Cutter, error) {
	if c.Mode == policy.Fixed {
		return chunker.NewFixed(c.Size)
	}
	return chunker.NewFastCDC(c.Min, c.Avg, c.Max)
}

// job is one chunk on its way through the pipeline.
type job struct {
	plain []byte
	sum   block.Address // SHA-256(plain)
	// lazy: the entry came from the SealCache and stored is not made yet;
	// put seals the chunk if the store turns out not to hold it.
	lazy bool
	// known: the chunk came from Resolve, the store holds it and entry is
	// set; there are no bytes. claimed: sum is what the client offered,
	// to be checked against plain.
	known, claimed bool
	cost           int64
	done           chan struct{} // closed by the worker that sealed it
	stored         []byte
	owned          bool     // stored is a pooled buffer of its own
	shards         [][]byte // carved out of shardBuf, a pooled buffer
	shardBuf       []byte
	entry          manifest.Chunk
	// missing lists the ranks of an erasure-coded chunk's shards that the
	// store lacks, when it could say (nil: send them all).
	missing []int
	err     error
}

// askMin: a write whose first chunk is stored smaller than this, and
// comes alone, sends it without asking whether it is stored.
const askMin = 16 << 10

// recentSize bounds the per-Write set of addresses already stored or being
// stored, so repeats (runs of zeros, say) are neither asked about nor sent
// twice. It is a FIFO, so memory stays bounded (~5 MiB) however long the
// stream; Stats.Unique is exact for streams of up to this many chunks.
const recentSize = 1 << 16

type recent struct {
	set  map[block.Address]struct{}
	fifo []block.Address
	next int
}

func (r *recent) add(a block.Address) {
	if r.set == nil {
		// Grown as chunks come, not sized for the bound up front: a small
		// object (most S3 PUTs) must not pay for zeroing ~5 MiB.
		r.set = map[block.Address]struct{}{}
	}
	if len(r.fifo) < recentSize {
		r.fifo = append(r.fifo, a)
	} else {
		delete(r.set, r.fifo[r.next])
		r.fifo[r.next] = a
		r.next = (r.next + 1) % recentSize
	}
	r.set[a] = struct{}{}
}

func (r *recent) has(a block.Address) bool { _, ok := r.set[a]; return ok }

// pipeline is the state of one Write.
type pipeline struct {
	w       *Writer
	ctx     context.Context
	cancel  context.CancelCauseFunc
	budget  *budget
	costPer float64      // bytes held per plaintext byte
	digest  streamDigest // fed by collect, in stream order
	wg      sync.WaitGroup
}

func (p *pipeline) fail(err error) { p.cancel(err) }

func (p *pipeline) release(j *job) {
	putBuf(j.plain)
	if j.owned {
		putBuf(j.stored)
	}
	if j.shardBuf != nil {
		putBuf(j.shardBuf)
	}
	j.plain, j.stored, j.shards, j.shardBuf = nil, nil, nil, nil
	p.budget.release(j.cost)
}

// Write stores everything r yields and returns the stream's reference. Only
// when it returns without error is every block of the stream stored. Stages
// overlap: reading and chunking, hashing and sealing (Workers goroutines), Has
// batches and Puts (Puts goroutines); MaxInFlight bounds what they hold.
func (w *Writer) Write(ctx context.Context, r io.Reader) (manifest.Ref, error) {
	ref, _, err := w.WritePublish(ctx, r, nil)
	return ref, err
}

// WritePublish is Write that also calls publish (registering the reference
// somewhere, e.g. as a live root) as soon as every manifest node of the
// stream is stored, while its last chunks may still be on their way, and
// returns once both are done: a small write then costs the longer of the
// two round trips, not their sum. publish runs to its end even if the
// write fails meanwhile (its context is not cancelled with the write's);
// published reports whether it succeeded, and if the write failed after
// it did, the caller undoes it.
//
// Publishing before the last chunks are stored is safe for space
// reclamation: its mark reads manifest nodes, all stored by then, and only
// names chunks; a chunk still being written is younger than the grace
// period, so the sweep keeps it either way.
func (w *Writer) WritePublish(ctx context.Context, r io.Reader, publish func(context.Context, manifest.Ref) error) (ref manifest.Ref, published bool, err error) {
	cut, err := w.cutter()
	if err != nil {
		return manifest.Ref{}, false, err
	}
	ch := chunker.New(r, cut)
	// WriteChunks has stopped calling next when it returns.
	defer ch.Release()
	return w.WriteChunks(ctx, func() (Chunk, error) {
		b, err := ch.Next()
		if err != nil && !errors.Is(err, io.EOF) {
			err = fmt.Errorf("dedup: reading stream: %w", err)
		}
		return Chunk{Plain: b}, err
	}, publish)
}

// WriteChunks is WritePublish for a stream the caller has cut: next
// returns its chunks in order (bytes, or what Resolve found), then io.EOF.
// Bytes offered as Claimed must hash to their Sum, or the write fails with
// ErrOffer. A chunk's Plain may be reused once next is called again.
func (w *Writer) WriteChunks(ctx context.Context, next func() (Chunk, error), publish func(context.Context, manifest.Ref) error) (ref manifest.Ref, published bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &pipeline{w: w, ctx: ctx, cancel: cancel, budget: newBudget(w.cfg.MaxInFlight), costPer: 1, digest: newStreamDigest()}
	pol := w.cfg.Policy
	if pol.Encrypt || pol.Compression.Algo != policy.NoCompression {
		p.costPer++
	}
	if w.ec != nil {
		p.costPer += float64(w.ec.Data()+w.ec.Parity()) / float64(w.ec.Data())
	}

	workCh := make(chan *job, 2*w.cfg.Workers)
	orderCh := make(chan *job, 4096)
	putCh := make(chan *job, w.cfg.Puts)

	var size int64
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(orderCh)
		defer close(workCh)
		n, err := p.produce(next, workCh, orderCh)
		if err != nil {
			p.fail(err)
		}
		size = n
	}()
	for range w.cfg.Workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for j := range workCh {
				p.seal(j)
				close(j.done)
			}
		}()
	}
	var putWG sync.WaitGroup
	for range w.cfg.Puts {
		putWG.Add(1)
		go func() {
			defer putWG.Done()
			for j := range putCh {
				if err := p.put(j); err != nil {
					p.fail(err)
				}
				p.release(j)
			}
		}()
	}

	tree := newTreeBuilder(ctx, w.store, w.nodeSeal, pol.Encrypt, pol.Redundancy.Data, pol.Redundancy.Parity)
	collectErr := p.collect(orderCh, putCh, tree)
	close(putCh)
	var (
		finishErr error
		pubDone   chan error
	)
	if collectErr == nil {
		// The last manifest nodes are stored while the last chunks still
		// are: a small object's write is then one round of puts, not two.
		// (collect returning nil means the producer is done: size is set.)
		root, seed, inline, depth, st, err := tree.finish()
		switch {
		case err != nil:
			finishErr = err
		case st.Logical != size:
			finishErr = fmt.Errorf("dedup: internal error: tree holds %d bytes of %d", st.Logical, size)
		default:
			ref = manifest.Ref{Root: root, Inline: string(inline), Seed: seed, Depth: depth, Size: size, ETag: p.digest.etag(), Policy: pol}
			if publish != nil {
				pubDone = make(chan error, 1)
				// Not cancelled with the write: whether it happened must be
				// known, so a failed write can undo it.
				pub, pctx := ref, context.WithoutCancel(ctx)
				go func() { pubDone <- publish(pctx, pub) }()
			}
		}
	}
	putWG.Wait()
	if collectErr != nil {
		p.fail(collectErr)
		// Drain so the producer and workers can exit.
		for j := range orderCh {
			<-j.done
			p.release(j)
		}
	}
	p.wg.Wait()
	var pubErr error
	if pubDone != nil {
		pubErr = <-pubDone
		published = pubErr == nil
	}
	if err := context.Cause(ctx); err != nil {
		return manifest.Ref{}, published, err
	}
	if finishErr != nil {
		return manifest.Ref{}, published, finishErr
	}
	if pubErr != nil {
		return manifest.Ref{}, false, pubErr
	}
	return ref, published, nil
}

func (p *pipeline) produce(next func() (Chunk, error), workCh, orderCh chan<- *job) (int64, error) {
	var size int64
	for {
		c, err := next()
		if errors.Is(err, io.EOF) {
			return size, nil
		}
		if err != nil {
			return size, err
		}
		if c.Known != nil {
			// Resolve found it stored: nothing to seal, hash or send.
			size += int64(c.Known.entry.Logical)
			j := &job{sum: c.Known.sum, known: true, entry: c.Known.entry, done: closedDone}
			select {
			case orderCh <- j:
			case <-p.ctx.Done():
				return size, context.Cause(p.ctx)
			}
			continue
		}
		b := c.Plain
		size += int64(len(b))
		// Acquire before allocating, so a stalled store stops the reading.
		cost, err := p.budget.acquire(p.ctx, int64(float64(bufCap(len(b)))*p.costPer))
		if err != nil {
			return size, err
		}
		j := &job{plain: getBuf(len(b)), cost: cost, done: make(chan struct{}), sum: c.Sum, claimed: c.Claimed}
		copy(j.plain, b)
		for _, c := range []chan<- *job{workCh, orderCh} {
			select {
			case c <- j:
			case <-p.ctx.Done():
				// Whatever did not get the job will never release it; the
				// Write is failing anyway, so its buffer goes to the GC.
				return size, context.Cause(p.ctx)
			}
		}
	}
}

// closedDone is the done channel of jobs that need no sealing.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// seal computes a chunk's stored form, address and shards.
func (p *pipeline) seal(j *job) {
	if p.ctx.Err() != nil {
		j.err = context.Cause(p.ctx)
		return
	}
	w := p.w
	sum := block.Sum(j.plain)
	if j.claimed && sum != j.sum {
		j.err = fmt.Errorf("%w: a chunk's bytes do not match the hash offered for them", ErrOffer)
		return
	}
	j.sum = sum
	if !w.sealing() {
		// Stored as is: the plaintext's hash is the address.
		j.stored = j.plain
		j.entry = manifest.Chunk{Addr: j.sum, Logical: len(j.plain), Stored: len(j.plain)}
	} else {
		if c := w.cfg.Sealed; c != nil && w.caches() {
			if s, ok := c.c.Get(sealKey{w.id, j.sum}); ok && (w.ec == nil) == (s.shards == nil) {
				j.lazy = true
				j.entry = w.chunkEntry(j.sum, len(j.plain), s)
				return
			}
		}
		if j.err = p.sealNow(j); j.err != nil {
			return
		}
	}
	if w.ec != nil {
		j.err = p.encode(j)
	}
}

// caches reports whether the SealCache can spare this Writer's sealing: a
// cached chunk is sealed only if the store lacks it, which for
// erasure-coded chunks only a ShardChecker can say.
func (w *Writer) caches() bool {
	if w.ec == nil {
		return true
	}
	_, ok := w.store.(ShardChecker)
	return ok
}

// encode makes an erasure-coded chunk's shards from its stored form and
// records their addresses; for a lazy chunk they must be the cached ones.
func (p *pipeline) encode(j *job) error {
	w := p.w
	buf := getBuf(w.ec.EncodedSize(len(j.stored)))
	shards, err := w.ec.Encode(buf, j.stored)
	if err != nil {
		putBuf(buf)
		return err
	}
	j.shardBuf = buf
	addrs := make([]block.Address, len(shards))
	for i, s := range shards {
		addrs[i] = block.Sum(s)
	}
	if j.entry.Shards != nil {
		// A lazy chunk's manifest entry already names its shards.
		if !slices.Equal(addrs, j.entry.Shards) {
			return fmt.Errorf("dedup: internal error: chunk %s encoded to other shards than cached", j.entry.Addr)
		}
	} else {
		j.entry.Shards = addrs
		if c := w.cfg.Sealed; c != nil && w.sealing() && w.caches() {
			c.c.Put(sealKey{w.id, j.sum}, sealedChunk{addr: j.entry.Addr, logical: j.entry.Logical, stored: j.entry.Stored,
				compressed: j.entry.Compressed, shards: addrs}, sealEntryBytes+len(addrs)*len(block.Address{}))
		}
	}
	j.shards = shards
	return nil
}

// sealing reports whether chunks are stored other than as they are.
func (w *Writer) sealing() bool {
	return w.cfg.Policy.Encrypt || w.cfg.Policy.Compression.Algo != policy.NoCompression
}

// chunkEntry is the manifest entry of a chunk of plaintext hash sum and
// logical bytes, sealed as s.
func (w *Writer) chunkEntry(sum block.Address, logical int, s sealedChunk) manifest.Chunk {
	c := manifest.Chunk{Addr: s.addr, Logical: logical, Stored: s.stored, Compressed: s.compressed, Shards: s.shards}
	if w.sealer.Encrypted() {
		c.Seed = sum // seal derives the chunk key from the plaintext hash
	}
	return c
}

// sealNow makes j's stored form; j.sum is set. A lazy job's entry is
// already in the manifest, so the sealed block must be the one it names.
func (p *pipeline) sealNow(j *job) error {
	w := p.w
	dst := getBuf(len(j.plain) + len(j.plain)/64 + 64 + seal.Overhead)
	stored, _, compressed, err := w.sealer.SealSum(dst, j.plain, j.sum)
	if err != nil {
		putBuf(dst)
		return err
	}
	j.stored = stored
	j.owned = cap(stored) > 0 && &stored[:1][0] == &dst[:1][0]
	if !j.owned {
		putBuf(dst)
	}
	s := sealedChunk{logical: len(j.plain), stored: len(stored), compressed: compressed}
	if !compressed && !w.sealer.Encrypted() {
		s.addr = j.sum // compression did not pay: stored as is
	} else {
		s.addr = block.Sum(stored)
	}
	if j.lazy {
		if s.addr != j.entry.Addr {
			return fmt.Errorf("dedup: internal error: chunk sealed to %s, cached as %s", s.addr, j.entry.Addr)
		}
		j.lazy = false
		return nil
	}
	j.entry = w.chunkEntry(j.sum, len(j.plain), s)
	if c := w.cfg.Sealed; c != nil && w.ec == nil {
		// Erasure-coded chunks are cached by encode, with their shards.
		c.c.Put(sealKey{w.id, j.sum}, s, sealEntryBytes)
	}
	return nil
}

// collect takes sealed chunks in stream order, skips those already stored,
// hands the rest to the putters and builds the manifest.
func (p *pipeline) collect(orderCh <-chan *job, putCh chan<- *job, tree *treeBuilder) error {
	var seen recent
	firstBatch := true
	batch := make([]*job, 0, p.w.cfg.HasBatch)
	ask := make([]block.Address, 0, p.w.cfg.HasBatch)
	for {
		batch = batch[:0]
		select {
		case j, ok := <-orderCh:
			if !ok {
				return nil
			}
			batch = append(batch, j)
		case <-p.ctx.Done():
			return context.Cause(p.ctx)
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case j, ok := <-orderCh:
				if !ok {
					break more
				}
				batch = append(batch, j)
			default:
				break more
			}
		}
		for _, j := range batch {
			select {
			case <-j.done:
			case <-p.ctx.Done():
				return context.Cause(p.ctx)
			}
			if j.err != nil {
				return j.err
			}
		}
		// A write that starts with one small chunk (a small object, most
		// likely) sends it rather than asking first: the Put costs about
		// what the question does and saves a round trip. A Put of a block
		// already stored touches it just as Has does, so reclamation is
		// unchanged.
		sendSmall := firstBatch && len(batch) == 1 && int64(batch[0].entry.Stored) < askMin
		present := map[block.Address]bool{}
		if p.w.ec != nil {
			if !sendSmall {
				var err error
				if present, err = p.shardsPresent(batch, &seen); err != nil {
					return err
				}
			}
		} else {
			ask = ask[:0]
			for _, j := range batch {
				if !seen.has(j.entry.Addr) && !sendSmall && !j.known {
					ask = append(ask, j.entry.Addr)
				}
			}
			if len(ask) > 0 {
				has, err := p.w.has(p.ctx, ask)
				if err != nil {
					return err
				}
				for i, a := range ask {
					if has[i] {
						present[a] = true
					}
				}
			}
		}
		firstBatch = false
		for _, j := range batch {
			a := j.entry.Addr
			var unique int64
			repeat := seen.has(a)
			if !repeat {
				seen.add(a)
				unique = int64(manifest.PhysicalSize(j.entry.Stored, tree.proto.Data, tree.proto.Parity))
			}
			p.digest.add(j.sum)
			if err := tree.addChunk(j.entry, unique); err != nil {
				return err
			}
			skip := repeat || present[a] || j.known
			if skip {
				p.release(j)
				continue
			}
			select {
			case putCh <- j:
			case <-p.ctx.Done():
				p.release(j)
				return context.Cause(p.ctx)
			}
		}
	}
}

// shardsPresent asks a ShardChecker store which shards of the batch's
// erasure-coded chunks are already on their nodes (touching them, as Has
// does). A chunk with all its shards there is present; one with some
// there gets the missing ranks to send. Without a ShardChecker every
// shard is sent: shards are placed by stripe, not by their own address,
// so Has cannot find them (the nodes still dedupe what arrives).
func (p *pipeline) shardsPresent(batch []*job, seen *recent) (map[block.Address]bool, error) {
	present := map[block.Address]bool{}
	sc, ok := p.w.store.(ShardChecker)
	if !ok {
		return present, nil
	}
	var ask []*job
	var stripes []block.Address
	var shards [][]block.Address
	for _, j := range batch {
		if !seen.has(j.entry.Addr) && !j.known {
			ask = append(ask, j)
			stripes = append(stripes, j.entry.Addr)
			shards = append(shards, j.entry.Shards)
		}
	}
	if len(ask) == 0 {
		return present, nil
	}
	has, err := hasShards(p.ctx, sc, stripes, shards)
	if err != nil {
		return nil, err
	}
	for i, j := range ask {
		j.missing = j.missing[:0]
		for rank, ok := range has[i] {
			if !ok {
				j.missing = append(j.missing, rank)
			}
		}
		if len(j.missing) == 0 {
			present[j.entry.Addr] = true
		}
	}
	return present, nil
}

// has asks the store which of addrs it holds (touching them), checking
// that it answered for each.
func (w *Writer) has(ctx context.Context, addrs []block.Address) ([]bool, error) {
	has, err := w.store.Has(ctx, addrs)
	if err != nil {
		return nil, fmt.Errorf("dedup: has: %w", err)
	}
	if len(has) != len(addrs) {
		return nil, fmt.Errorf("%w: has answered %d of %d", ErrStore, len(has), len(addrs))
	}
	return has, nil
}

// hasShards asks sc which shards of each stripe it holds (touching them),
// checking that it answered for each shard.
func hasShards(ctx context.Context, sc ShardChecker, stripes []block.Address, shards [][]block.Address) ([][]bool, error) {
	has, err := sc.HasShards(ctx, stripes, shards)
	if err != nil {
		return nil, fmt.Errorf("dedup: has shards: %w", err)
	}
	if len(has) != len(stripes) {
		return nil, fmt.Errorf("%w: has shards answered %d of %d chunks", ErrStore, len(has), len(stripes))
	}
	for i := range has {
		if len(has[i]) != len(shards[i]) {
			return nil, fmt.Errorf("%w: has shards answered %d of %d shards", ErrStore, len(has[i]), len(shards[i]))
		}
	}
	return has, nil
}

// put stores one chunk: one block, or its shards (those missing, when the
// store said) in parallel.
func (p *pipeline) put(j *job) error {
	if p.ctx.Err() != nil {
		return context.Cause(p.ctx)
	}
	if j.lazy {
		if err := p.sealNow(j); err != nil {
			return err
		}
		if p.w.ec != nil {
			if err := p.encode(j); err != nil {
				return err
			}
		}
	}
	if j.shards == nil {
		if err := putBlock(p.ctx, p.w.store, j.entry.Addr, j.stored); err != nil {
			return fmt.Errorf("dedup: put chunk: %w", err)
		}
		return nil
	}
	return putShards(p.ctx, p.w.store, j.entry.Addr, j.shards, j.entry.Shards, j.missing, p.w.cfg.Puts)
}

// putShards stores the shards whose rank is in ranks (all when nil), at most
// par at a time.
func putShards(ctx context.Context, store BlockStore, stripe block.Address, shards [][]byte, addrs []block.Address, ranks []int, par int) error {
	if ranks == nil {
		ranks = make([]int, len(shards))
		for i := range ranks {
			ranks[i] = i
		}
	}
	errs := make([]error, len(ranks))
	sem := make(chan struct{}, max(par, 1))
	var wg sync.WaitGroup
	for i, rank := range ranks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := putShardBlock(ctx, store, stripe, rank, addrs[rank], shards[rank]); err != nil {
				errs[i] = fmt.Errorf("dedup: put shard %d of %s: %w", rank, stripe, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Digest computes, without storing anything, the digest a Write of r under
// chunking would return as its reference's ETag.
func Digest(chunking policy.Chunking, r io.Reader) ([16]byte, error) {
	cut, err := cutter(chunking)
	if err != nil {
		return [16]byte{}, err
	}
	d := newStreamDigest()
	ch := chunker.New(r, cut)
	defer ch.Release()
	for {
		b, err := ch.Next()
		if errors.Is(err, io.EOF) {
			return d.etag(), nil
		}
		if err != nil {
			return [16]byte{}, err
		}
		d.add(block.Sum(b))
	}
}
