package dedup

import (
	"context"
	"fmt"

	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/seal"
)

// nodeTarget is the size a manifest node grows to before it is closed. At
// about 40-75 bytes a leaf entry, a 64 KiB leaf maps ~1000 chunks (~64 MiB
// at 64 KiB chunks), so 1 TiB needs three levels and a writer holds at most
// one open node per level.
const nodeTarget = 64 << 10

// treeBuilder turns the ordered chunk entries of a stream into a manifest
// tree, storing each node as soon as it is full.
type treeBuilder struct {
	ctx    context.Context
	store  BlockStore
	sealer *seal.Sealer // never compresses: nodes are mostly hashes
	proto  manifest.Node
	levels []*openNode
	buf    []byte
	nodes  int64 // node blocks written
	// last is the node stored last: runs of equal nodes (a long run of
	// zeros) are stored once.
	last block.Address
}

type openNode struct {
	node    manifest.Node
	size    int
	flushed int
}

func newTreeBuilder(ctx context.Context, store BlockStore, sealer *seal.Sealer, encrypted bool, k, m int) *treeBuilder {
	t := &treeBuilder{ctx: ctx, store: store, sealer: sealer}
	t.proto = manifest.Node{Encrypted: encrypted, Data: k, Parity: m}
	return t
}

func (t *treeBuilder) level(i int) *openNode {
	for len(t.levels) <= i {
		n := t.proto
		n.Level = len(t.levels)
		t.levels = append(t.levels, &openNode{node: n})
	}
	return t.levels[i]
}

// addChunk appends a leaf entry; unique is its physical size if it is the
// first time the stream uses it, else 0.
func (t *treeBuilder) addChunk(c manifest.Chunk, unique int64) error {
	lv := t.level(0)
	size := lv.node.ChunkSize(&c)
	if len(lv.node.Chunks) > 0 && (lv.size+size > nodeTarget || len(lv.node.Chunks) >= manifest.MaxEntries) {
		if err := t.flush(0); err != nil {
			return err
		}
	}
	lv.node.Chunks = append(lv.node.Chunks, c)
	lv.size += size
	st := &lv.node.Stats
	st.Logical += int64(c.Logical)
	st.Chunks++
	st.Stored += int64(c.Stored)
	st.Physical += int64(manifest.PhysicalSize(c.Stored, t.proto.Data, t.proto.Parity))
	st.Unique += unique
	return nil
}

func (t *treeBuilder) addChild(i int, c manifest.Child, sub manifest.Stats) error {
	lv := t.level(i)
	size := lv.node.ChildSize(&c)
	if len(lv.node.Children) > 0 && (lv.size+size > nodeTarget || len(lv.node.Children) >= manifest.MaxEntries) {
		if err := t.flush(i); err != nil {
			return err
		}
	}
	lv.node.Children = append(lv.node.Children, c)
	lv.size += size
	st := &lv.node.Stats
	st.Logical += sub.Logical
	st.Chunks += sub.Chunks
	st.Stored += sub.Stored
	st.Physical += sub.Physical
	st.Unique += sub.Unique
	return nil
}

// sealNode encodes and seals one node.
func (t *treeBuilder) sealNode(n *manifest.Node) (stored []byte, seed block.Address, err error) {
	t.buf = n.Encode(t.buf[:0])
	stored, seed, _, err = t.sealer.Seal(nil, t.buf)
	return stored, seed, err
}

// store writes one node and returns how a parent points at it.
func (t *treeBuilder) storeNode(n *manifest.Node) (block.Address, block.Address, error) {
	stored, seed, err := t.sealNode(n)
	if err != nil {
		return block.Address{}, block.Address{}, err
	}
	return t.put(stored, seed)
}

func (t *treeBuilder) put(stored []byte, seed block.Address) (block.Address, block.Address, error) {
	want := block.Sum(stored)
	if want == t.last {
		return want, seed, nil
	}
	if err := putBlock(t.ctx, t.store, want, stored); err != nil {
		return block.Address{}, block.Address{}, fmt.Errorf("dedup: storing manifest node: %w", err)
	}
	t.nodes++
	t.last = want
	return want, seed, nil
}

func (t *treeBuilder) flush(i int) error {
	lv := t.levels[i]
	addr, seed, err := t.storeNode(&lv.node)
	if err != nil {
		return err
	}
	st := lv.node.Stats
	lv.flushed++
	n := t.proto
	n.Level = i
	lv.node, lv.size = n, 0
	return t.addChild(i+1, manifest.Child{Addr: addr, Seed: seed, Logical: st.Logical, Chunks: st.Chunks}, st)
}

// finish closes every open node bottom-up and returns the root, its seed,
// level and stats. An empty stream gets an empty leaf as its root so every
// reference has a real node. A root that is a leaf of at most
// manifest.MaxInline sealed bytes is returned inline, not stored.
func (t *treeBuilder) finish() (root, seed block.Address, inline []byte, depth int, st manifest.Stats, err error) {
	t.level(0)
	for i := 0; ; i++ {
		lv := t.levels[i]
		if i == len(t.levels)-1 && lv.flushed == 0 {
			stored, seed, err := t.sealNode(&lv.node)
			if err != nil {
				return root, seed, nil, i, st, err
			}
			if i == 0 && len(stored) <= manifest.MaxInline {
				return root, seed, stored, 0, lv.node.Stats, nil
			}
			root, seed, err = t.put(stored, seed)
			return root, seed, nil, i, lv.node.Stats, err
		}
		if lv.node.Stats.Chunks > 0 {
			if err := t.flush(i); err != nil {
				return root, seed, nil, 0, st, err
			}
		}
	}
}
