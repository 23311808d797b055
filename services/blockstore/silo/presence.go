package silo

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"

	"shoal/shared/block"
)

// presence is an in-memory filter of the blocks a silo holds. Nearly every
// put stores a new block, and asking the LSM "already stored?" for it
// searched the memtable's skiplist (cache misses all the way down): about a
// fifth of a storage node's CPU under 4 KiB puts. The filter answers "not
// stored" for most of those with one cache line per layer.
//
// It may answer "maybe" for a block that is absent (a false positive, or a
// deleted block: bloom filters cannot forget), and the caller then asks the
// LSM; it never answers "no" for a block that is stored, because a block is
// added before its index entry is committed and every stored block is added
// when the silo opens.
//
// It grows by layers, each twice the capacity of the one before, so it
// needs no rebuild and costs ~2 bytes per block.
type presence struct {
	seed   [2]maphash.Seed
	mu     sync.Mutex // serializes growth
	layers atomic.Pointer[[]*bloomLayer]
}

// bloomLayer is a blocked bloom filter: a key's bits all fall in one
// 512-bit block, so a lookup touches one cache line.
type bloomLayer struct {
	words  []atomic.Uint64
	blocks uint64 // number of 8-word blocks, a power of two
	cap    int64
	n      atomic.Int64
}

const (
	presenceFirstCap = 1 << 16
	presenceBitsPer  = 16 // bits per key at capacity: ~0.1% false positives per layer
	presenceProbes   = 7
)

func newPresence() *presence {
	p := &presence{seed: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
	layers := []*bloomLayer{newBloomLayer(presenceFirstCap)}
	p.layers.Store(&layers)
	return p
}

func newBloomLayer(capacity int64) *bloomLayer {
	nbits := uint64(capacity) * presenceBitsPer
	blocks := uint64(1) << bits.Len64((nbits+511)/512-1)
	return &bloomLayer{words: make([]atomic.Uint64, blocks*8), blocks: blocks, cap: capacity}
}

// hash returns the block a key falls in (h1) and its probes: seven 9-bit
// bit positions within the block, taken from h2.
func (p *presence) hash(a block.Address) (h1, h2 uint64) {
	return maphash.Bytes(p.seed[0], a[:]), maphash.Bytes(p.seed[1], a[:])
}

// add records a as stored.
func (p *presence) add(a block.Address) {
	layers := *p.layers.Load()
	top := layers[len(layers)-1]
	if top.n.Add(1) > top.cap {
		top = p.grow(top)
	}
	h1, h2 := p.hash(a)
	top.set(h1, h2)
}

func (p *presence) grow(full *bloomLayer) *bloomLayer {
	p.mu.Lock()
	defer p.mu.Unlock()
	layers := *p.layers.Load()
	top := layers[len(layers)-1]
	if top == full {
		top = newBloomLayer(full.cap * 2)
		next := append(append([]*bloomLayer(nil), layers...), top)
		p.layers.Store(&next)
	}
	top.n.Add(1)
	return top
}

// mayContain reports false only if a is certainly not stored.
func (p *presence) mayContain(a block.Address) bool {
	h1, h2 := p.hash(a)
	for _, l := range *p.layers.Load() {
		if l.test(h1, h2) {
			return true
		}
	}
	return false
}

func (l *bloomLayer) set(h1, h2 uint64) {
	base := (h1 & (l.blocks - 1)) * 8
	for i := 0; i < presenceProbes; i++ {
		bit := (h2 >> (9 * i)) & 511
		w := &l.words[base+bit/64]
		if w.Load()&(1<<(bit%64)) == 0 {
			w.Or(1 << (bit % 64))
		}
	}
}

func (l *bloomLayer) test(h1, h2 uint64) bool {
	base := (h1 & (l.blocks - 1)) * 8
	for i := 0; i < presenceProbes; i++ {
		bit := (h2 >> (9 * i)) & 511
		if l.words[base+bit/64].Load()&(1<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}
