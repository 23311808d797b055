package dedup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
)

// Extent replaces whole chunks of a fixed-chunked stream: Data, or Length
// zero bytes when Data is nil (a trim). Off and the length are multiples of
// the chunk size.
type Extent struct {
	Off    int64
	Length int64 // used when Data is nil
	Data   []byte
}

func (e Extent) size() int64 {
	if e.Data != nil {
		return int64(len(e.Data))
	}
	return e.Length
}

// ErrPatch refuses a patch that does not fit its stream.
var ErrPatch = errors.New("dedup: invalid patch")

// fixedSize is the chunk size of a stream the writer can patch: fixed
// chunking, so that a byte offset names a chunk.
func (w *Writer) fixedSize() (int64, error) {
	c := w.cfg.Policy.Chunking
	if c.Mode != policy.Fixed {
		return 0, fmt.Errorf("%w: only fixed chunking can be patched, not %s", ErrPatch, w.cfg.Policy)
	}
	return int64(c.Size), nil
}

// Zeros stores a stream of size zero bytes: what a new block device holds.
// It costs one chunk and the manifest, however large the stream (runs of
// equal leaves are one block), and its reference is the one a Write of
// those zeros would return. size must be a multiple of the chunk size.
func (w *Writer) Zeros(ctx context.Context, size int64) (manifest.Ref, error) {
	cs, err := w.fixedSize()
	if err != nil {
		return manifest.Ref{}, err
	}
	if size < 0 || size%cs != 0 {
		return manifest.Ref{}, fmt.Errorf("%w: size %d is not a multiple of the chunk size %d", ErrPatch, size, cs)
	}
	pol := w.cfg.Policy
	tree := newTreeBuilder(ctx, w.store, w.nodeSeal, pol.Encrypt, pol.Redundancy.Data, pol.Redundancy.Parity)
	digest := newStreamDigest()
	if size > 0 {
		zero, err := w.storeChunks(ctx, [][]byte{make([]byte, cs)})
		if err != nil {
			return manifest.Ref{}, err
		}
		unique := int64(manifest.PhysicalSize(zero[0].entry.Stored, pol.Redundancy.Data, pol.Redundancy.Parity))
		for range size / cs {
			digest.add(zero[0].sum)
			if err := tree.addChunk(zero[0].entry, unique); err != nil {
				return manifest.Ref{}, err
			}
			unique = 0
		}
	}
	root, seed, inline, depth, st, err := tree.finish()
	if err != nil {
		return manifest.Ref{}, err
	}
	if st.Logical != size {
		return manifest.Ref{}, fmt.Errorf("dedup: internal error: tree holds %d bytes of %d", st.Logical, size)
	}
	return manifest.Ref{Root: root, Inline: string(inline), Seed: seed, Depth: depth, Size: size, ETag: digest.etag(), Policy: pol}, nil
}

// storedChunk is a chunk sealed and stored by storeChunks.
type storedChunk struct {
	sum   block.Address
	entry manifest.Chunk
}

// storeChunks seals and stores chunks in parallel (Puts at a time) and
// returns their manifest entries.
func (w *Writer) storeChunks(ctx context.Context, chunks [][]byte) ([]storedChunk, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Only seal and put are used: no budget (the caller holds the chunks
	// already) and no digest.
	p := &pipeline{w: w, ctx: ctx, cancel: cancel}
	out := make([]storedChunk, len(chunks))
	sem := make(chan struct{}, w.cfg.Puts)
	var wg sync.WaitGroup
	for i, c := range chunks {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// The job borrows c: release must not pool it.
			j := &job{plain: c, done: make(chan struct{})}
			p.seal(j)
			if j.err == nil {
				j.err = p.put(j)
			}
			if j.owned {
				putBuf(j.stored)
			}
			if j.err != nil {
				p.fail(j.err)
				return
			}
			out[i] = storedChunk{sum: j.sum, entry: j.entry}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// Patch returns the reference of base with the extents' chunks replaced,
// later extents winning where they overlap. Only the manifest nodes on the
// paths to changed chunks are rewritten; the rest of the tree is shared with
// base, so a patch costs its own chunks plus a few nodes per level, however
// large the stream. r reads base (it must hold the volume's key when the
// policy encrypts), and base must have been written under w's policy.
//
// The result's ETag is zero: the stream digest needs every chunk's
// plaintext hash, which a patch does not read.
func (w *Writer) Patch(ctx context.Context, r *Reader, base manifest.Ref, extents []Extent) (manifest.Ref, error) {
	cs, err := w.fixedSize()
	if err != nil {
		return manifest.Ref{}, err
	}
	if base.Policy != w.cfg.Policy {
		return manifest.Ref{}, fmt.Errorf("%w: stream written as %s, patched as %s", ErrPatch, base.Policy, w.cfg.Policy)
	}
	// The chunks to replace, by index; nil data means zeros.
	repl := map[int64][]byte{}
	zeros := false
	for _, e := range extents {
		n := e.size()
		if e.Off < 0 || n < 0 || e.Off%cs != 0 || n%cs != 0 || e.Off > base.Size-n {
			return manifest.Ref{}, fmt.Errorf("%w: extent [%d, +%d) in a stream of %d bytes and %d-byte chunks", ErrPatch, e.Off, n, base.Size, cs)
		}
		for i := range n / cs {
			var d []byte
			if e.Data != nil {
				d = e.Data[i*cs : (i+1)*cs]
			} else {
				zeros = true
			}
			repl[e.Off/cs+i] = d
		}
	}
	if len(repl) == 0 {
		return base, nil
	}
	// Chunks to store, and which stream chunk each one is; zeros are
	// stored once, last.
	idx := make([]int64, 0, len(repl))
	chunks := make([][]byte, 0, len(repl)+1)
	slot := make([]int64, 0, len(repl))
	for i, d := range repl {
		idx = append(idx, i)
		if d != nil {
			chunks = append(chunks, d)
			slot = append(slot, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	if zeros {
		chunks = append(chunks, make([]byte, cs))
	}
	stored, err := w.storeChunks(ctx, chunks)
	if err != nil {
		return manifest.Ref{}, err
	}
	entries := make(map[int64]manifest.Chunk, len(repl))
	for k, i := range slot {
		entries[i] = stored[k].entry
	}
	if zeros {
		z := stored[len(stored)-1].entry
		for i, d := range repl {
			if d == nil {
				entries[i] = z
			}
		}
	}

	v, err := r.view(base)
	if err != nil {
		return manifest.Ref{}, err
	}
	root, err := r.root(ctx, v)
	if err != nil {
		return manifest.Ref{}, err
	}
	pol := w.cfg.Policy
	pt := &patcher{r: r, v: v, entries: entries,
		tree: newTreeBuilder(ctx, w.store, w.nodeSeal, pol.Encrypt, pol.Redundancy.Data, pol.Redundancy.Parity)}
	n, err := pt.rewrite(ctx, root, 0, idx)
	if err != nil {
		return manifest.Ref{}, err
	}
	ref := manifest.Ref{Depth: base.Depth, Size: base.Size, Policy: pol}
	sealed, seed, err := pt.tree.sealNode(n)
	if err != nil {
		return manifest.Ref{}, err
	}
	ref.Seed = seed
	if n.Level == 0 && len(sealed) <= manifest.MaxInline {
		ref.Inline = string(sealed)
		return ref, nil
	}
	if ref.Root, _, err = pt.tree.put(sealed, seed); err != nil {
		return manifest.Ref{}, err
	}
	r.nodes.put(ref.Root, n)
	return ref, nil
}

// patcher rewrites the paths of a tree that lead to replaced chunks.
type patcher struct {
	r       *Reader
	v       *view
	tree    *treeBuilder
	entries map[int64]manifest.Chunk
}

// rewrite returns a copy of n, whose first chunk is chunk first of the
// stream, with the chunks idx (sorted, all below n) replaced; the nodes
// below it on the way are stored.
func (pt *patcher) rewrite(ctx context.Context, n *manifest.Node, first int64, idx []int64) (*manifest.Node, error) {
	out := *n
	k, m := out.Data, out.Parity
	if n.Level == 0 {
		out.Chunks = append([]manifest.Chunk(nil), n.Chunks...)
		for _, i := range idx {
			out.Chunks[i-first] = pt.entries[i]
		}
		// Unique counts each chunk once within the leaf: a patched tree
		// cannot know what the rest of the stream holds.
		out.Stats = manifest.Stats{Logical: n.Stats.Logical, Chunks: n.Stats.Chunks}
		seen := map[block.Address]bool{}
		for _, c := range out.Chunks {
			phys := int64(manifest.PhysicalSize(c.Stored, k, m))
			out.Stats.Stored += int64(c.Stored)
			out.Stats.Physical += phys
			if !seen[c.Addr] {
				seen[c.Addr] = true
				out.Stats.Unique += phys
			}
		}
		return &out, nil
	}
	out.Children = append([]manifest.Child(nil), n.Children...)
	start := first
	for ci := range out.Children {
		c := &out.Children[ci]
		end := start + c.Chunks
		j := sort.Search(len(idx), func(i int) bool { return idx[i] >= end })
		if j > 0 {
			old, err := pt.r.node(ctx, pt.v, c.Addr, c.Seed, n.Level-1, c.Logical, c.Chunks)
			if err != nil {
				return nil, err
			}
			nn, err := pt.rewrite(ctx, old, start, idx[:j])
			if err != nil {
				return nil, err
			}
			if c.Addr, c.Seed, err = pt.tree.storeNode(nn); err != nil {
				return nil, err
			}
			pt.r.nodes.put(c.Addr, nn)
			out.Stats.Stored += nn.Stats.Stored - old.Stats.Stored
			out.Stats.Physical += nn.Stats.Physical - old.Stats.Physical
			out.Stats.Unique += nn.Stats.Unique - old.Stats.Unique
			idx = idx[j:]
		}
		start = end
	}
	if len(idx) > 0 {
		return nil, fmt.Errorf("%w: chunk %d beyond the tree", ErrCorrupt, idx[0])
	}
	// Unique may not exceed Physical (the decoder checks); per-leaf
	// counting can only lower it, but keep the invariant explicit.
	out.Stats.Unique = min(out.Stats.Unique, out.Stats.Physical)
	return &out, nil
}
