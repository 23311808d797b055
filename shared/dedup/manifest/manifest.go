// Package manifest is the on-store format of a stream stored by the dedup
// tier: a tree of immutable blocks whose leaves list chunks and whose inner
// nodes list subtrees with the byte counts needed to seek, plus the compact
// reference (Ref) that names a whole stream. It encodes and decodes with full
// validation and no I/O; reading and writing trees is shared/dedup's job.
//
// Every decoder treats its input as hostile: lengths are bounded before they
// are allocated, varints must be minimal (so encodings are canonical), sums
// must agree, and trailing bytes are an error.
package manifest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"shoal/shared/block"
	"shoal/shared/dedup/policy"
	"shoal/shared/dedup/seal"
)

var (
	// ErrTruncated means the input ended early.
	ErrTruncated = errors.New("manifest: truncated")
	// ErrCorrupt means the input is well-framed but inconsistent or out of range.
	ErrCorrupt = errors.New("manifest: corrupt")
	// ErrVersion means the input is not a manifest of a version we read.
	ErrVersion = errors.New("manifest: unknown format or version")
)

// Limits on what a decoder accepts.
const (
	// MaxDepth bounds a tree's height; at the default fan-out 5 levels
	// already address more than 1 EiB.
	MaxDepth = 8
	// MaxEntries bounds one node.
	MaxEntries = 1 << 16
	// MaxStored is the largest stored chunk: a whole chunk plus sealing.
	MaxStored = policy.MaxChunkSize + seal.Overhead
)

var nodeMagic = [4]byte{'S', 'H', 'N', 1}

// Chunk is a leaf entry: one chunk of the stream.
type Chunk struct {
	// Addr is the stored chunk's address, SHA-256 of its sealed bytes.
	// Under erasure coding no block has this address: it names the stripe.
	Addr block.Address
	// Seed is SHA-256 of the plaintext, from which the chunk key derives;
	// only present (non-zero) in encrypted trees.
	Seed block.Address
	// Logical is the plaintext length, Stored the sealed length.
	Logical    int
	Stored     int
	Compressed bool
	// Shards are the k+m shard addresses in rank order (erasure only).
	Shards []block.Address
}

// Child is an inner-node entry: one subtree.
type Child struct {
	Addr    block.Address // address of the child node block
	Seed    block.Address // SHA-256 of the child node's plaintext when encrypted
	Logical int64         // stream bytes below it
	Chunks  int64         // chunks below it
}

// Stats summarize a subtree at write time.
type Stats struct {
	Logical  int64 // plaintext bytes
	Chunks   int64 // chunk references, duplicates included
	Stored   int64 // sealed bytes of those chunks, duplicates included
	Physical int64 // bytes of data blocks or shards, duplicates included
	// Unique is Physical counting each chunk once per stream (exact within
	// a window of recent chunks, see shared/dedup). It depends only on the
	// content, so equal streams still get equal trees.
	Unique int64
}

// Node is one manifest block.
type Node struct {
	Level     int // 0 for leaves
	Encrypted bool
	// Data and Parity are k and m of the erasure code, zero when replicated.
	Data, Parity int
	Stats        Stats
	Chunks       []Chunk // leaves
	Children     []Child // inner nodes
}

// Encode appends the node's encoding to b.
func (n *Node) Encode(b []byte) []byte {
	b = append(b, nodeMagic[:]...)
	var flags byte
	if n.Encrypted {
		flags |= 1
	}
	b = append(b, byte(n.Level), flags, byte(n.Data), byte(n.Parity))
	for _, v := range []int64{n.Stats.Logical, n.Stats.Chunks, n.Stats.Stored, n.Stats.Physical, n.Stats.Unique} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	if n.Level == 0 {
		b = binary.AppendUvarint(b, uint64(len(n.Chunks)))
		for i := range n.Chunks {
			b = n.appendChunk(b, &n.Chunks[i])
		}
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(n.Children)))
	for i := range n.Children {
		b = n.appendChild(b, &n.Children[i])
	}
	return b
}

func (n *Node) appendChunk(b []byte, c *Chunk) []byte {
	var flags byte
	if c.Compressed {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(c.Logical))
	b = binary.AppendUvarint(b, uint64(c.Stored))
	b = append(b, c.Addr[:]...)
	if n.Encrypted {
		b = append(b, c.Seed[:]...)
	}
	for _, s := range c.Shards {
		b = append(b, s[:]...)
	}
	return b
}

func (n *Node) appendChild(b []byte, c *Child) []byte {
	b = binary.AppendUvarint(b, uint64(c.Logical))
	b = binary.AppendUvarint(b, uint64(c.Chunks))
	b = append(b, c.Addr[:]...)
	if n.Encrypted {
		b = append(b, c.Seed[:]...)
	}
	return b
}

// ChunkSize is the encoded size of a leaf entry, for fan-out planning.
func (n *Node) ChunkSize(c *Chunk) int { return len(n.appendChunk(make([]byte, 0, 512), c)) }

// ChildSize is the encoded size of an inner entry.
func (n *Node) ChildSize(c *Child) int { return len(n.appendChild(make([]byte, 0, 96), c)) }

// DecodeNode parses and validates one manifest block.
func DecodeNode(b []byte) (*Node, error) {
	d := reader{b: b}
	if len(b) < len(nodeMagic) || [4]byte(b[:4]) != nodeMagic {
		return nil, ErrVersion
	}
	d.off = 4
	n := &Node{}
	n.Level = int(d.byte())
	flags := d.byte()
	n.Data, n.Parity = int(d.byte()), int(d.byte())
	st := &n.Stats
	st.Logical, st.Chunks, st.Stored, st.Physical, st.Unique = d.int63(), d.int63(), d.int63(), d.int63(), d.int63()
	count := d.uvarint()
	if d.err != nil {
		return nil, d.err
	}
	if n.Level > MaxDepth {
		return nil, fmt.Errorf("%w: level %d", ErrCorrupt, n.Level)
	}
	if flags&^1 != 0 {
		return nil, fmt.Errorf("%w: node flags %#x", ErrCorrupt, flags)
	}
	n.Encrypted = flags&1 != 0
	ec := n.Data+n.Parity > 0
	if ec && (n.Data < 1 || n.Parity < 1 || n.Data+n.Parity > policy.MaxShards) {
		return nil, fmt.Errorf("%w: erasure %d+%d", ErrCorrupt, n.Data, n.Parity)
	}
	addrs := 1
	if n.Encrypted {
		addrs++
	}
	var minEntry int
	if n.Level == 0 {
		minEntry = 3 + 32*(addrs+n.Data+n.Parity)
	} else {
		minEntry = 2 + 32*addrs
	}
	// Bound the count by what the bytes can hold before allocating for it.
	if count > MaxEntries || count*uint64(minEntry) > uint64(len(b)-d.off) {
		return nil, fmt.Errorf("%w: %d entries in %d bytes", ErrTruncated, count, len(b)-d.off)
	}
	var sum Stats
	if n.Level == 0 {
		n.Chunks = make([]Chunk, count)
		var shards []block.Address
		if ec {
			shards = make([]block.Address, int(count)*(n.Data+n.Parity))
		}
		for i := range n.Chunks {
			c := &n.Chunks[i]
			f := d.byte()
			c.Logical, c.Stored = int(d.uvarint()), int(d.uvarint())
			c.Addr = d.addr()
			if n.Encrypted {
				c.Seed = d.addr()
			}
			if ec {
				c.Shards = shards[: n.Data+n.Parity : n.Data+n.Parity]
				shards = shards[n.Data+n.Parity:]
				for j := range c.Shards {
					c.Shards[j] = d.addr()
				}
			}
			if d.err != nil {
				return nil, d.err
			}
			if f&^1 != 0 {
				return nil, fmt.Errorf("%w: chunk %d flags %#x", ErrCorrupt, i, f)
			}
			c.Compressed = f&1 != 0
			if c.Logical < 1 || c.Logical > policy.MaxChunkSize || c.Stored < 1 || c.Stored > MaxStored {
				return nil, fmt.Errorf("%w: chunk %d sizes %d/%d", ErrCorrupt, i, c.Logical, c.Stored)
			}
			if raw := c.Logical + overhead(n.Encrypted); c.Compressed && c.Stored >= raw || !c.Compressed && c.Stored != raw {
				return nil, fmt.Errorf("%w: chunk %d stored %d bytes for %d (compressed %v)", ErrCorrupt, i, c.Stored, c.Logical, c.Compressed)
			}
			sum.Logical += int64(c.Logical)
			sum.Stored += int64(c.Stored)
			sum.Physical += int64(PhysicalSize(c.Stored, n.Data, n.Parity))
		}
		sum.Chunks = int64(count)
		if sum.Stored != st.Stored || sum.Physical != st.Physical {
			return nil, fmt.Errorf("%w: stored/physical bytes %d/%d, entries sum to %d/%d",
				ErrCorrupt, st.Stored, st.Physical, sum.Stored, sum.Physical)
		}
	} else {
		n.Children = make([]Child, count)
		for i := range n.Children {
			c := &n.Children[i]
			c.Logical, c.Chunks = d.int63(), d.int63()
			c.Addr = d.addr()
			if n.Encrypted {
				c.Seed = d.addr()
			}
			if d.err != nil {
				return nil, d.err
			}
			if c.Chunks < 1 || c.Logical < c.Chunks || c.Logical > math.MaxInt64-sum.Logical || c.Chunks > math.MaxInt64-sum.Chunks {
				return nil, fmt.Errorf("%w: child %d sizes %d/%d", ErrCorrupt, i, c.Logical, c.Chunks)
			}
			sum.Logical += c.Logical
			sum.Chunks += c.Chunks
		}
	}
	if d.off != len(b) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(b)-d.off)
	}
	if st.Unique > st.Physical {
		return nil, fmt.Errorf("%w: unique bytes %d above physical %d", ErrCorrupt, st.Unique, st.Physical)
	}
	if sum.Logical != st.Logical || sum.Chunks != st.Chunks {
		return nil, fmt.Errorf("%w: node claims %d bytes in %d chunks, entries sum to %d in %d",
			ErrCorrupt, st.Logical, st.Chunks, sum.Logical, sum.Chunks)
	}
	return n, nil
}

// PhysicalSize is what a stored chunk of n bytes occupies in blocks: itself
// when replicated (one copy counted), its k+m shards under erasure coding.
func PhysicalSize(n, k, m int) int {
	if k == 0 {
		return n
	}
	return (n + k - 1) / k * (k + m)
}

func overhead(encrypted bool) int {
	if encrypted {
		return seal.Overhead
	}
	return 0
}

// reader decodes with sticky errors so call sites stay flat.
type reader struct {
	b   []byte
	off int
	err error
}

func (d *reader) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.err = ErrTruncated
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *reader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.err = ErrTruncated
		return 0
	case n < 0:
		d.err = fmt.Errorf("%w: varint overflow", ErrCorrupt)
		return 0
	case n > 1 && d.b[d.off+n-1] == 0:
		// Overlong varints would give one value two encodings.
		d.err = fmt.Errorf("%w: non-minimal varint", ErrCorrupt)
		return 0
	}
	d.off += n
	return v
}

func (d *reader) int63() int64 {
	v := d.uvarint()
	if v > math.MaxInt64 && d.err == nil {
		d.err = fmt.Errorf("%w: value %d out of range", ErrCorrupt, v)
	}
	return int64(v)
}

func (d *reader) addr() block.Address {
	var a block.Address
	if d.err != nil {
		return a
	}
	if len(d.b)-d.off < block.AddressSize {
		d.err = ErrTruncated
		return a
	}
	copy(a[:], d.b[d.off:])
	d.off += block.AddressSize
	return a
}

func (d *reader) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.err = ErrTruncated
		return nil
	}
	d.off += n
	return d.b[d.off-n : d.off]
}
