package manifest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"shoal/shared/block"
	"shoal/shared/dedup/policy"
)

func addr(i byte) block.Address { return block.Sum([]byte{i}) }

func sampleLeaf(encrypted bool, k, m int) *Node {
	n := &Node{Encrypted: encrypted, Data: k, Parity: m}
	for i := range 5 {
		c := Chunk{Addr: addr(byte(i)), Logical: 1000 * (i + 1), Compressed: i%2 == 0}
		c.Stored = c.Logical + overhead(encrypted)
		if c.Compressed {
			c.Stored = c.Logical / 2
		}
		if encrypted {
			c.Seed = addr(byte(100 + i))
		}
		if k > 0 {
			for j := range k + m {
				c.Shards = append(c.Shards, addr(byte(50+j)))
			}
		}
		n.Chunks = append(n.Chunks, c)
		n.Stats.Logical += int64(c.Logical)
		n.Stats.Chunks++
		n.Stats.Stored += int64(c.Stored)
		n.Stats.Physical += int64(PhysicalSize(c.Stored, k, m))
	}
	n.Stats.Unique = n.Stats.Physical / 2
	return n
}

func sampleInner(encrypted bool) *Node {
	n := &Node{Level: 2, Encrypted: encrypted, Stats: Stats{Stored: 9, Physical: 9, Unique: 3}}
	for i := range 3 {
		c := Child{Addr: addr(byte(i)), Logical: int64(1 << (30 + i)), Chunks: int64(1000 + i)}
		if encrypted {
			c.Seed = addr(byte(200 + i))
		}
		n.Children = append(n.Children, c)
		n.Stats.Logical += c.Logical
		n.Stats.Chunks += c.Chunks
	}
	return n
}

func samples() []*Node {
	return []*Node{
		sampleLeaf(false, 0, 0), sampleLeaf(true, 0, 0), sampleLeaf(true, 4, 2),
		sampleLeaf(false, 10, 4), sampleInner(false), sampleInner(true),
		{}, // empty stream
	}
}

func TestNodeRoundTrip(t *testing.T) {
	for i, n := range samples() {
		b := n.Encode(nil)
		got, err := DecodeNode(b)
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		if again := got.Encode(nil); !bytes.Equal(again, b) {
			t.Fatalf("sample %d: re-encoding differs", i)
		}
		// Every strict prefix must be refused, never panic.
		for j := range b {
			if _, err := DecodeNode(b[:j]); err == nil {
				t.Fatalf("sample %d: %d-byte prefix of %d accepted", i, j, len(b))
			}
		}
		if _, err := DecodeNode(append(b, 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("sample %d: trailing byte: %v", i, err)
		}
	}
}

func TestNodeRejectsForgeries(t *testing.T) {
	forge := func(name string, edit func(n *Node)) {
		n := sampleLeaf(true, 4, 2)
		edit(n)
		if _, err := DecodeNode(n.Encode(nil)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	forge("stats lie about bytes", func(n *Node) { n.Stats.Logical++ })
	forge("stats lie about chunks", func(n *Node) { n.Stats.Chunks-- })
	forge("stats lie about stored", func(n *Node) { n.Stats.Stored++ })
	forge("stats lie about physical", func(n *Node) { n.Stats.Physical-- })
	forge("empty chunk", func(n *Node) {
		n.Stats.Logical -= int64(n.Chunks[1].Logical)
		n.Chunks[1].Logical = 0
	})
	forge("oversized chunk", func(n *Node) {
		n.Chunks[1].Logical = policy.MaxChunkSize + 1
		n.Chunks[1].Stored = n.Chunks[1].Logical + 16
	})
	forge("uncompressed size mismatch", func(n *Node) {
		n.Chunks[1].Stored--
		n.Stats.Stored--
		n.Stats.Physical = 0
		for _, c := range n.Chunks {
			n.Stats.Physical += int64(PhysicalSize(c.Stored, 4, 2))
		}
	})
	forge("too many shards", func(n *Node) { n.Data, n.Parity = 60, 10 })
	forge("deep", func(n *Node) { n.Level = MaxDepth + 1; n.Chunks = nil })

	b := sampleLeaf(false, 0, 0).Encode(nil)
	b[0] = 'X'
	if _, err := DecodeNode(b); !errors.Is(err, ErrVersion) {
		t.Errorf("bad magic: %v", err)
	}
	// A count that promises more entries than bytes must not allocate.
	huge := append([]byte{}, nodeMagic[:]...)
	huge = append(huge, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x03)
	if _, err := DecodeNode(huge); !errors.Is(err, ErrTruncated) {
		t.Errorf("huge count: %v", err)
	}
	// Overlong varint.
	n := &Node{}
	b = n.Encode(nil)
	b = append(b[:len(b)-1], 0x80, 0x00)
	if _, err := DecodeNode(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("overlong varint: %v", err)
	}
}

func sampleRefs() []Ref {
	p1 := policy.Default()
	p2, _ := policy.Parse("chunk=fixed:4m,encrypt=on,redundancy=ec:4+2")
	return []Ref{
		{Root: addr(1), Depth: 0, Size: 0, Policy: p1},
		{Root: addr(2), Seed: addr(3), Depth: 3, Size: 1 << 40, ETag: [16]byte{1, 2, 3}, Policy: p2},
	}
}

// roundTrip checks r survives its binary and string forms, and that no
// prefix of its binary form, nor an extra byte, is accepted. It returns the
// binary form.
func roundTrip(t *testing.T, r Ref) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRef(b)
	if err != nil || got != r {
		t.Fatalf("got %+v, %v", got, err)
	}
	s, err := ParseRefString(r.String())
	if err != nil || s != r {
		t.Fatalf("string round trip: %+v, %v", s, err)
	}
	for i := range b {
		if _, err := ParseRef(b[:i]); err == nil {
			t.Fatalf("%d-byte prefix accepted", i)
		}
	}
	if _, err := ParseRef(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	return b
}

func TestRefRoundTrip(t *testing.T) {
	for _, r := range sampleRefs() {
		if b := roundTrip(t, r); len(b) > 100 {
			t.Errorf("ref takes %d bytes", len(b))
		}
	}
	bad := sampleRefs()[0]
	bad.Seed = addr(9)
	if _, err := bad.MarshalBinary(); err == nil {
		t.Fatal("seed on an unencrypted ref accepted")
	}
	bad = sampleRefs()[0]
	bad.Depth = MaxDepth + 1
	if _, err := bad.MarshalBinary(); err == nil {
		t.Fatal("deep ref accepted")
	}
}

func FuzzDecodeNode(f *testing.F) {
	for _, n := range samples() {
		f.Add(n.Encode(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := DecodeNode(b)
		if err != nil {
			return
		}
		// Whatever decodes must be canonical: one node, one encoding.
		if again := n.Encode(nil); !bytes.Equal(again, b) {
			t.Fatalf("decoded node re-encodes differently:\n%x\n%x", b, again)
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, r := range sampleRefs() {
		b, _ := r.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRef(b)
		if err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed ref does not marshal: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("parsed ref re-encodes differently:\n%x\n%x", b, again)
		}
	})
}

func TestInlineRefRoundTrip(t *testing.T) {
	node := strings.Repeat("n", 120)
	for _, r := range []Ref{
		{Inline: node, Size: 4096, ETag: [16]byte{4}, Policy: policy.Default()},
		{Inline: node, Seed: addr(5), Size: 1, Policy: func() policy.Policy { p := policy.Default(); p.Encrypt = true; return p }()},
	} {
		roundTrip(t, r)
	}
	for name, r := range map[string]Ref{
		"too large":      {Inline: strings.Repeat("n", MaxInline+1)},
		"with a root":    {Inline: node, Root: addr(1)},
		"below the leaf": {Inline: node, Depth: 1},
	} {
		r.Policy = policy.Default()
		if _, err := r.MarshalBinary(); err == nil {
			t.Errorf("%s: marshalled", name)
		}
	}
	// A forged length is refused, not read past.
	b, _ := Ref{Inline: node, Policy: policy.Default()}.MarshalBinary()
	pl, _ := policy.Default().AppendBinary(nil)
	for _, n := range []uint64{0, MaxInline + 1, 1 << 40} {
		f := binary.AppendUvarint(append([]byte{b[0]}, pl...), n)
		f = append(f, b[1+len(pl)+1:]...)
		if _, err := ParseRef(f); err == nil {
			t.Errorf("inline length %d accepted", n)
		}
	}
}
