package dedup

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"shoal/shared/block"
	"shoal/shared/cpus"
	"shoal/shared/dedup/chunker"
	"shoal/shared/dedup/erasure"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
	"shoal/shared/dedup/seal"
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
	// erasure coding (default 16).
	Puts int
	// HasBatch is the most chunks asked about in one Has call (default 256).
	HasBatch int
}

// Writer stores streams under one volume's policy. It is safe for
// concurrent use; each Write runs its own pipeline.
type Writer struct {
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
		cfg.Puts = 16
	}
	if cfg.HasBatch <= 0 {
		cfg.HasBatch = 256
	}
	w := &Writer{store: store, cfg: cfg}
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

func (w *Writer) cutter() (chunker.Cutter, error) {
	c := w.cfg.Policy.Chunking
	if c.Mode == policy.Fixed {
		return chunker.NewFixed(c.Size)
	}
	return chunker.NewFastCDC(c.Min, c.Avg, c.Max)
}

// job is one chunk on its way through the pipeline. Its plaintext buffer is
// shared by the MD5 stage and the sealing stage, hence the reference count.
type job struct {
	plain  []byte
	cost   int64
	refs   atomic.Int32
	done   chan struct{} // closed by the worker that sealed it
	stored []byte
	owned  bool // stored is a pooled buffer of its own
	shards [][]byte
	entry  manifest.Chunk
	err    error
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
	costPer float64 // bytes held per plaintext byte
	wg      sync.WaitGroup
}

func (p *pipeline) fail(err error) { p.cancel(err) }

func (p *pipeline) release(j *job) {
	if j.refs.Add(-1) != 0 {
		return
	}
	putBuf(j.plain)
	if j.owned {
		putBuf(j.stored)
	}
	j.plain, j.stored, j.shards = nil, nil, nil
	p.budget.release(j.cost)
}

// Write stores everything r yields and returns the stream's reference. Only
// when it returns without error is every block of the stream stored. Stages
// overlap: reading and chunking, MD5, sealing (Workers goroutines), Has
// batches and Puts (Puts goroutines); MaxInFlight bounds what they hold.
func (w *Writer) Write(ctx context.Context, r io.Reader) (manifest.Ref, error) {
	cut, err := w.cutter()
	if err != nil {
		return manifest.Ref{}, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &pipeline{w: w, ctx: ctx, cancel: cancel, budget: newBudget(w.cfg.MaxInFlight), costPer: 1}
	pol := w.cfg.Policy
	if pol.Encrypt || pol.Compression.Algo != policy.NoCompression {
		p.costPer++
	}
	if w.ec != nil {
		p.costPer += float64(w.ec.Data()+w.ec.Parity()) / float64(w.ec.Data())
	}

	md5Ch := make(chan *job, 64)
	workCh := make(chan *job, 2*w.cfg.Workers)
	orderCh := make(chan *job, 4096)
	putCh := make(chan *job, w.cfg.Puts)

	var etag [16]byte
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		h := md5.New()
		for j := range md5Ch {
			h.Write(j.plain)
			p.release(j)
		}
		h.Sum(etag[:0])
	}()
	var size int64
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(orderCh)
		defer close(workCh)
		defer close(md5Ch)
		n, err := p.produce(chunker.New(r, cut), md5Ch, workCh, orderCh)
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
	if err := context.Cause(ctx); err != nil {
		return manifest.Ref{}, err
	}
	root, seed, depth, st, err := tree.finish()
	if err != nil {
		return manifest.Ref{}, err
	}
	if st.Logical != size {
		return manifest.Ref{}, fmt.Errorf("dedup: internal error: tree holds %d bytes of %d", st.Logical, size)
	}
	return manifest.Ref{Root: root, Seed: seed, Depth: depth, Size: size, ETag: etag, Policy: pol}, nil
}

func (p *pipeline) produce(ch *chunker.Chunker, md5Ch, workCh, orderCh chan<- *job) (int64, error) {
	var size int64
	for {
		b, err := ch.Next()
		if errors.Is(err, io.EOF) {
			return size, nil
		}
		if err != nil {
			return size, fmt.Errorf("dedup: reading stream: %w", err)
		}
		size += int64(len(b))
		// Acquire before allocating, so a stalled store stops the reading.
		cost, err := p.budget.acquire(p.ctx, int64(float64(bufCap(len(b)))*p.costPer))
		if err != nil {
			return size, err
		}
		j := &job{plain: getBuf(len(b)), cost: cost, done: make(chan struct{})}
		copy(j.plain, b)
		j.refs.Store(2) // MD5 and the store path
		for _, c := range []chan<- *job{md5Ch, workCh, orderCh} {
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

// seal computes a chunk's stored form, address and shards.
func (p *pipeline) seal(j *job) {
	if p.ctx.Err() != nil {
		j.err = context.Cause(p.ctx)
		return
	}
	w := p.w
	var dst []byte
	sealing := w.cfg.Policy.Encrypt || w.cfg.Policy.Compression.Algo != policy.NoCompression
	if sealing {
		dst = getBuf(len(j.plain) + len(j.plain)/64 + 64 + seal.Overhead)
	}
	stored, seed, compressed, err := w.sealer.Seal(dst, j.plain)
	if err != nil {
		j.err = err
		return
	}
	j.stored = stored
	j.owned = sealing && cap(stored) > 0 && &stored[:1][0] == &dst[:1][0]
	if sealing && !j.owned {
		putBuf(dst)
	}
	j.entry = manifest.Chunk{
		Addr:       block.Sum(stored),
		Seed:       seed,
		Logical:    len(j.plain),
		Stored:     len(stored),
		Compressed: compressed,
	}
	if w.ec != nil {
		if j.shards, err = w.ec.Encode(stored); err != nil {
			j.err = err
			return
		}
		j.entry.Shards = make([]block.Address, len(j.shards))
		for i, s := range j.shards {
			j.entry.Shards[i] = block.Sum(s)
		}
	}
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
		// Shards are placed by stripe, not by their own address, so Has
		// cannot find them: erasure-coded chunks are deduplicated within a
		// Write and by the nodes themselves (an equal shard lands on the
		// same node under the same address), but always sent.
		present := map[block.Address]bool{}
		if p.w.ec == nil {
			ask = ask[:0]
			// A write that starts with one small chunk (a small object,
			// most likely) sends it rather than asking first: the Put
			// costs about what the question does and saves a round trip.
			// A Put of a block already stored touches it just as Has
			// does, so reclamation is unchanged.
			sendSmall := firstBatch && len(batch) == 1 && int64(batch[0].entry.Stored) < askMin
			for _, j := range batch {
				if !seen.has(j.entry.Addr) && !sendSmall {
					ask = append(ask, j.entry.Addr)
				}
			}
			if len(ask) > 0 {
				has, err := p.w.store.Has(p.ctx, ask)
				if err != nil {
					return fmt.Errorf("dedup: has: %w", err)
				}
				if len(has) != len(ask) {
					return fmt.Errorf("%w: has answered %d of %d", ErrStore, len(has), len(ask))
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
			if err := tree.addChunk(j.entry, unique); err != nil {
				return err
			}
			skip := repeat || present[a]
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

// put stores one chunk: one block, or its shards in parallel.
func (p *pipeline) put(j *job) error {
	if p.ctx.Err() != nil {
		return context.Cause(p.ctx)
	}
	if j.shards == nil {
		got, err := p.w.store.Put(p.ctx, j.stored)
		if err != nil {
			return fmt.Errorf("dedup: put chunk: %w", err)
		}
		if got != j.entry.Addr {
			return fmt.Errorf("%w: put returned %s for %s", ErrStore, got, j.entry.Addr)
		}
		return nil
	}
	return putShards(p.ctx, p.w.store, j.entry.Addr, j.shards, j.entry.Shards, nil, p.w.cfg.Puts)
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
			got, err := store.PutShard(ctx, stripe, rank, shards[rank])
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("dedup: put shard %d of %s: %w", rank, stripe, err)
			case got != addrs[rank]:
				errs[i] = fmt.Errorf("%w: put shard returned %s for %s", ErrStore, got, addrs[rank])
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
