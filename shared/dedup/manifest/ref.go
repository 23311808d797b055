package manifest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"

	"shoal/shared/block"
	"shoal/shared/dedup/policy"
)

// Reference formats: 1 names the root node by address; 2 carries a small
// root node (sealed, as it would be stored) in the reference itself.
const (
	refVersion       = 1
	refVersionInline = 2
)

// MaxInline is the largest sealed root node a reference carries inline. A
// one-chunk leaf is 55 bytes (103 encrypted, 151 under EC 2+1), so a
// one-chunk stream (most small objects) is one block, and reading it one
// fetch, not two. Larger leaves stay blocks: frontends keep references in
// their indexes, whose density (keys per index shard, shards per
// directory) would suffer.
const MaxInline = 160

// Ref names one stored stream: its manifest root, its size, its ETag and
// the policy it was written with. It is what frontends keep in inodes,
// object indexes and extent maps. Typically 60-100 bytes encoded.
type Ref struct {
	Root block.Address
	// Inline, when set, is the root node's sealed bytes (Root is then
	// zero and unused): the node was never stored as a block. A string,
	// so a Ref stays comparable.
	Inline string
	// Seed derives the root node's key in an encrypted tree (zero
	// otherwise). It is useless without the volume key.
	Seed block.Address
	// Depth is the root's level; 0 means the root is a leaf.
	Depth int
	Size  int64
	// ETag is the stream's digest, S3-multipart style: the first 16 bytes
	// of SHA-256 over the SHA-256 of each chunk's plaintext, in order.
	// Equal bytes written under the same chunking have equal digests. It
	// is not an MD5 (S3 computes those itself): MD5 is sequential and runs
	// at ~600 MB/s on one core, below what a re-write of stored data costs
	// otherwise, while the chunk hashes are computed anyway, in parallel.
	ETag   [16]byte
	Policy policy.Policy
}

// ETagHex is the ETag in hex.
func (r Ref) ETagHex() string { return hex.EncodeToString(r.ETag[:]) }

// AppendBinary appends the compact encoding of r.
func (r Ref) AppendBinary(b []byte) ([]byte, error) {
	if r.Depth < 0 || r.Depth > MaxDepth || r.Size < 0 {
		return b, fmt.Errorf("%w: depth %d size %d", ErrCorrupt, r.Depth, r.Size)
	}
	if !r.Policy.Encrypt && !r.Seed.IsZero() {
		return b, fmt.Errorf("%w: seed on an unencrypted ref", ErrCorrupt)
	}
	if len(r.Inline) > MaxInline || r.Inline != "" && (r.Depth != 0 || !r.Root.IsZero()) {
		return b, fmt.Errorf("%w: inline root of %d bytes at depth %d", ErrCorrupt, len(r.Inline), r.Depth)
	}
	if r.Inline != "" {
		b = append(b, refVersionInline)
	} else {
		b = append(b, refVersion)
	}
	b, err := r.Policy.AppendBinary(b)
	if err != nil {
		return b, err
	}
	if r.Inline != "" {
		b = binary.AppendUvarint(b, uint64(len(r.Inline)))
		b = append(b, r.Inline...)
	} else {
		b = append(b, r.Root[:]...)
	}
	if r.Policy.Encrypt {
		b = append(b, r.Seed[:]...)
	}
	b = append(b, byte(r.Depth))
	b = binary.AppendUvarint(b, uint64(r.Size))
	return append(b, r.ETag[:]...), nil
}

// MarshalBinary implements encoding.BinaryMarshaler.
func (r Ref) MarshalBinary() ([]byte, error) { return r.AppendBinary(nil) }

// UnmarshalBinary implements encoding.BinaryUnmarshaler.
func (r *Ref) UnmarshalBinary(b []byte) error {
	x, err := ParseRef(b)
	if err != nil {
		return err
	}
	*r = x
	return nil
}

// ParseRef decodes and validates a reference. It never trusts b.
func ParseRef(b []byte) (Ref, error) {
	var r Ref
	if len(b) == 0 {
		return r, ErrTruncated
	}
	if b[0] != refVersion && b[0] != refVersionInline {
		return r, ErrVersion
	}
	p, n, err := policy.DecodeBinary(b[1:])
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	r.Policy = p
	d := reader{b: b, off: 1 + n}
	if b[0] == refVersionInline {
		size := d.uvarint()
		if d.err == nil && (size == 0 || size > MaxInline) {
			return Ref{}, fmt.Errorf("%w: inline root of %d bytes", ErrCorrupt, size)
		}
		r.Inline = string(d.bytes(int(size)))
	} else {
		r.Root = d.addr()
	}
	if p.Encrypt {
		r.Seed = d.addr()
	}
	r.Depth = int(d.byte())
	size := d.uvarint()
	if len(b)-d.off < 16 && d.err == nil {
		d.err = ErrTruncated
	}
	if d.err != nil {
		return Ref{}, d.err
	}
	copy(r.ETag[:], b[d.off:])
	d.off += 16
	switch {
	case d.off != len(b):
		return Ref{}, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(b)-d.off)
	case r.Depth > MaxDepth, r.Inline != "" && r.Depth != 0:
		return Ref{}, fmt.Errorf("%w: depth %d", ErrCorrupt, r.Depth)
	case size > math.MaxInt64:
		return Ref{}, fmt.Errorf("%w: size %d", ErrCorrupt, size)
	}
	r.Size = int64(size)
	return r, nil
}

// String is the URL-safe base64 of the binary form, for logs, headers and
// the CLI.
func (r Ref) String() string {
	b, err := r.AppendBinary(nil)
	if err != nil {
		return "invalid-ref"
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseRefString reads the form String writes.
func ParseRefString(s string) (Ref, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return ParseRef(b)
}
