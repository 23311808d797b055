// Package policy is the per-volume storage policy of the dedup tier: how a
// volume's streams are chunked, compressed, encrypted and made redundant. It
// is shared by every frontend so a volume means the same thing through S3,
// FUSE and NBD. It says what to do, not how: the work is in shared/dedup.
package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

var (
	// ErrSyntax means a policy string could not be parsed.
	ErrSyntax = errors.New("policy: syntax error")
	// ErrInvalid means a policy is well-formed but not allowed.
	ErrInvalid = errors.New("policy: invalid")
	// ErrTruncated means a binary policy ended early.
	ErrTruncated = errors.New("policy: truncated")
)

// Limits. Chunks must fit one block (block.DefaultMaxSize) before the small
// sealing overhead; smaller CDC chunks would make manifests dominate.
const (
	MinFixedSize = 4 << 10
	MaxChunkSize = 4 << 20
	MinCDCSize   = 1 << 10
	MaxZstdLevel = 22
	MaxShards    = 64 // k+m; keeps one manifest entry well under a node
	MaxReplicas  = 16
)

// ChunkMode selects how a stream is cut.
type ChunkMode uint8

const (
	// Fixed cuts every Size bytes; it keeps block-device offsets aligned.
	Fixed ChunkMode = 1
	// CDC is FastCDC content-defined chunking; an insertion moves only the
	// chunks around it, so edited files still dedupe.
	CDC ChunkMode = 2
)

// Chunking says how to cut a stream into chunks.
type Chunking struct {
	Mode ChunkMode
	Size int // Fixed only
	Min  int // CDC only
	Avg  int // CDC only; a power of two
	Max  int // CDC only
}

// MaxLen is the largest chunk the chunking can produce.
func (c Chunking) MaxLen() int {
	if c.Mode == Fixed {
		return c.Size
	}
	return c.Max
}

// CompressAlgo selects the chunk compressor.
type CompressAlgo uint8

const (
	// NoCompression stores chunks as they are.
	NoCompression CompressAlgo = 0
	// Zstd compresses each chunk on its own with zstd at Level.
	Zstd CompressAlgo = 1
)

// Compression says how chunks are compressed. A chunk that does not shrink
// by at least 1/16 is stored uncompressed whatever the policy says.
type Compression struct {
	Algo  CompressAlgo
	Level int // zstd level 1..22
}

// RedundancyMode selects how chunks survive node loss.
type RedundancyMode uint8

const (
	// Replicate stores each chunk as one immutable block, replicated by the
	// cluster.
	Replicate RedundancyMode = 1
	// Erasure splits each chunk into Data+Parity Reed-Solomon shards, one
	// per node.
	Erasure RedundancyMode = 2
)

// Redundancy says how chunks are protected.
type Redundancy struct {
	Mode RedundancyMode
	// Replicas and WriteQuorum are R and W for Replicate; zero means the
	// cluster default.
	Replicas    int
	WriteQuorum int
	// Data and Parity are k and m for Erasure.
	Data   int
	Parity int
}

// Policy is a volume's storage policy. The zero value is not valid; start
// from Default or Parse.
type Policy struct {
	Chunking    Chunking
	Compression Compression
	// Encrypt turns on convergent AES-256-GCM under the volume key: equal
	// chunks dedupe within a volume, never across volumes.
	Encrypt    bool
	Redundancy Redundancy
}

// Default is the policy of a volume that asks for nothing in particular.
func Default() Policy {
	return Policy{
		Chunking:    Chunking{Mode: CDC, Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10},
		Compression: Compression{Algo: Zstd, Level: 3},
		Redundancy:  Redundancy{Mode: Replicate},
	}
}

// ErasureChunking is the chunking of an erasure-coded policy that names
// none: chunks of ~1 MiB, so each of a 4+2 code's shards is a block of
// ~256 KiB. With Default's 64 KiB chunks the shards were 16 KiB, and the
// per-block costs (placement, calls, index entries, fsync'd records)
// made EC 4+2 puts ~50% and gets ~45% slower (512 MiB through `shoal put`
// and `shoal get` on the all-in-one). MinIO likewise erasure-codes 1 MiB
// blocks. Small random reads cost more (a chunk's data shards are read
// whole), so a volume serving them names a smaller chunk.
var ErasureChunking = Chunking{Mode: CDC, Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20}

// Validate reports whether p is allowed.
func (p Policy) Validate() error {
	c := p.Chunking
	switch c.Mode {
	case Fixed:
		if c.Size < MinFixedSize || c.Size > MaxChunkSize {
			return fmt.Errorf("%w: fixed chunk size %d outside %d..%d", ErrInvalid, c.Size, MinFixedSize, MaxChunkSize)
		}
		if c.Min != 0 || c.Avg != 0 || c.Max != 0 {
			return fmt.Errorf("%w: fixed chunking takes one size", ErrInvalid)
		}
	case CDC:
		if c.Size != 0 {
			return fmt.Errorf("%w: cdc chunking takes min/avg/max, not size", ErrInvalid)
		}
		if c.Min < MinCDCSize || c.Max > MaxChunkSize || c.Min >= c.Avg || c.Avg >= c.Max {
			return fmt.Errorf("%w: cdc sizes need %d <= min < avg < max <= %d, got %d/%d/%d",
				ErrInvalid, MinCDCSize, MaxChunkSize, c.Min, c.Avg, c.Max)
		}
		if bits.OnesCount(uint(c.Avg)) != 1 {
			return fmt.Errorf("%w: cdc average %d is not a power of two", ErrInvalid, c.Avg)
		}
	default:
		return fmt.Errorf("%w: unknown chunking mode %d", ErrInvalid, c.Mode)
	}
	switch p.Compression.Algo {
	case NoCompression:
		if p.Compression.Level != 0 {
			return fmt.Errorf("%w: compression level without a compressor", ErrInvalid)
		}
	case Zstd:
		if p.Compression.Level < 1 || p.Compression.Level > MaxZstdLevel {
			return fmt.Errorf("%w: zstd level %d outside 1..%d", ErrInvalid, p.Compression.Level, MaxZstdLevel)
		}
	default:
		return fmt.Errorf("%w: unknown compression %d", ErrInvalid, p.Compression.Algo)
	}
	r := p.Redundancy
	switch r.Mode {
	case Replicate:
		if r.Data != 0 || r.Parity != 0 {
			return fmt.Errorf("%w: replication takes no shards", ErrInvalid)
		}
		if r.Replicas == 0 && r.WriteQuorum == 0 {
			break
		}
		if r.Replicas < 1 || r.Replicas > MaxReplicas || r.WriteQuorum < 1 || r.WriteQuorum > r.Replicas {
			return fmt.Errorf("%w: replication %d/%d needs 1 <= W <= R <= %d", ErrInvalid, r.Replicas, r.WriteQuorum, MaxReplicas)
		}
	case Erasure:
		if r.Replicas != 0 || r.WriteQuorum != 0 {
			return fmt.Errorf("%w: erasure coding takes no replica count", ErrInvalid)
		}
		if r.Data < 1 || r.Parity < 1 || r.Data+r.Parity > MaxShards {
			return fmt.Errorf("%w: erasure %d+%d needs k >= 1, m >= 1, k+m <= %d", ErrInvalid, r.Data, r.Parity, MaxShards)
		}
	default:
		return fmt.Errorf("%w: unknown redundancy mode %d", ErrInvalid, r.Mode)
	}
	return nil
}

// Parse reads the compact form, e.g.
//
//	chunk=cdc:16k/64k/256k,compress=zstd:3,encrypt=on,redundancy=rep:3/2
//	chunk=fixed:4m,compress=none,redundancy=ec:4+2
//
// Keys left out keep their Default value, except that an erasure-coded
// policy without a chunk key gets ErasureChunking; the result is validated.
func Parse(s string) (Policy, error) {
	p := Default()
	seen := map[string]bool{}
	for _, field := range strings.Split(strings.TrimSpace(s), ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		key, val, ok := strings.Cut(field, "=")
		if !ok {
			return Policy{}, fmt.Errorf("%w: %q is not key=value", ErrSyntax, field)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if seen[key] {
			return Policy{}, fmt.Errorf("%w: %q given twice", ErrSyntax, key)
		}
		seen[key] = true
		var err error
		switch key {
		case "chunk":
			p.Chunking, err = parseChunking(val)
		case "compress":
			p.Compression, err = parseCompression(val)
		case "encrypt":
			p.Encrypt, err = parseOnOff(val)
		case "redundancy":
			p.Redundancy, err = parseRedundancy(val)
		default:
			err = fmt.Errorf("%w: unknown key %q", ErrSyntax, key)
		}
		if err != nil {
			return Policy{}, err
		}
	}
	if p.Redundancy.Mode == Erasure && !seen["chunk"] {
		p.Chunking = ErasureChunking
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

func parseChunking(v string) (Chunking, error) {
	mode, args, _ := strings.Cut(v, ":")
	switch mode {
	case "fixed":
		n, err := parseSize(args)
		if err != nil {
			return Chunking{}, err
		}
		return Chunking{Mode: Fixed, Size: n}, nil
	case "cdc":
		parts := strings.Split(args, "/")
		if len(parts) != 3 {
			return Chunking{}, fmt.Errorf("%w: cdc wants min/avg/max, got %q", ErrSyntax, args)
		}
		var n [3]int
		for i, part := range parts {
			var err error
			if n[i], err = parseSize(part); err != nil {
				return Chunking{}, err
			}
		}
		return Chunking{Mode: CDC, Min: n[0], Avg: n[1], Max: n[2]}, nil
	default:
		return Chunking{}, fmt.Errorf("%w: unknown chunking %q", ErrSyntax, mode)
	}
}

func parseCompression(v string) (Compression, error) {
	algo, level, hasLevel := strings.Cut(v, ":")
	switch algo {
	case "none":
		if hasLevel {
			return Compression{}, fmt.Errorf("%w: compress=none takes no level", ErrSyntax)
		}
		return Compression{Algo: NoCompression}, nil
	case "zstd":
		if !hasLevel {
			return Compression{Algo: Zstd, Level: 3}, nil
		}
		n, err := strconv.Atoi(level)
		if err != nil {
			return Compression{}, fmt.Errorf("%w: zstd level %q", ErrSyntax, level)
		}
		return Compression{Algo: Zstd, Level: n}, nil
	default:
		return Compression{}, fmt.Errorf("%w: unknown compression %q", ErrSyntax, algo)
	}
}

func parseOnOff(v string) (bool, error) {
	switch v {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("%w: want on or off, got %q", ErrSyntax, v)
}

func parseRedundancy(v string) (Redundancy, error) {
	mode, args, hasArgs := strings.Cut(v, ":")
	switch mode {
	case "rep":
		if !hasArgs {
			return Redundancy{Mode: Replicate}, nil
		}
		rs, ws, ok := strings.Cut(args, "/")
		if !ok {
			return Redundancy{}, fmt.Errorf("%w: rep wants R/W, got %q", ErrSyntax, args)
		}
		r, err1 := strconv.Atoi(rs)
		w, err2 := strconv.Atoi(ws)
		if err1 != nil || err2 != nil {
			return Redundancy{}, fmt.Errorf("%w: rep wants R/W, got %q", ErrSyntax, args)
		}
		return Redundancy{Mode: Replicate, Replicas: r, WriteQuorum: w}, nil
	case "ec":
		ks, ms, ok := strings.Cut(args, "+")
		if !ok {
			return Redundancy{}, fmt.Errorf("%w: ec wants k+m, got %q", ErrSyntax, args)
		}
		k, err1 := strconv.Atoi(ks)
		m, err2 := strconv.Atoi(ms)
		if err1 != nil || err2 != nil {
			return Redundancy{}, fmt.Errorf("%w: ec wants k+m, got %q", ErrSyntax, args)
		}
		return Redundancy{Mode: Erasure, Data: k, Parity: m}, nil
	default:
		return Redundancy{}, fmt.Errorf("%w: unknown redundancy %q", ErrSyntax, mode)
	}
}

// parseSize reads 4096, 16k, 4m, 16KiB or 4MiB.
func parseSize(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1
	switch {
	case strings.HasSuffix(t, "kib"):
		mult, t = 1<<10, strings.TrimSuffix(t, "kib")
	case strings.HasSuffix(t, "mib"):
		mult, t = 1<<20, strings.TrimSuffix(t, "mib")
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, strings.TrimSuffix(t, "k")
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, strings.TrimSuffix(t, "m")
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 || n > MaxChunkSize/mult {
		return 0, fmt.Errorf("%w: size %q", ErrSyntax, s)
	}
	return n * mult, nil
}

func formatSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "m"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "k"
	default:
		return strconv.Itoa(n)
	}
}

// String is the canonical compact form; Parse(p.String()) == p.
func (p Policy) String() string {
	var b strings.Builder
	b.WriteString("chunk=")
	switch p.Chunking.Mode {
	case Fixed:
		b.WriteString("fixed:" + formatSize(p.Chunking.Size))
	case CDC:
		b.WriteString("cdc:" + formatSize(p.Chunking.Min) + "/" + formatSize(p.Chunking.Avg) + "/" + formatSize(p.Chunking.Max))
	default:
		fmt.Fprintf(&b, "mode(%d)", p.Chunking.Mode)
	}
	b.WriteString(",compress=")
	switch p.Compression.Algo {
	case NoCompression:
		b.WriteString("none")
	case Zstd:
		b.WriteString("zstd:" + strconv.Itoa(p.Compression.Level))
	default:
		fmt.Fprintf(&b, "algo(%d)", p.Compression.Algo)
	}
	if p.Encrypt {
		b.WriteString(",encrypt=on")
	} else {
		b.WriteString(",encrypt=off")
	}
	b.WriteString(",redundancy=")
	r := p.Redundancy
	switch r.Mode {
	case Replicate:
		b.WriteString("rep")
		if r.Replicas != 0 || r.WriteQuorum != 0 {
			fmt.Fprintf(&b, ":%d/%d", r.Replicas, r.WriteQuorum)
		}
	case Erasure:
		fmt.Fprintf(&b, "ec:%d+%d", r.Data, r.Parity)
	default:
		fmt.Fprintf(&b, "mode(%d)", r.Mode)
	}
	return b.String()
}

// MarshalText implements encoding.TextMarshaler so configs and JSON carry
// the compact form.
func (p Policy) MarshalText() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return []byte(p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Policy) UnmarshalText(b []byte) error {
	q, err := Parse(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// AppendBinary appends the compact binary form used inside references
// (typically 8-12 bytes). p must be valid.
func (p Policy) AppendBinary(b []byte) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return b, err
	}
	c := p.Chunking
	b = append(b, byte(c.Mode))
	if c.Mode == Fixed {
		b = binary.AppendUvarint(b, uint64(c.Size))
	} else {
		b = binary.AppendUvarint(b, uint64(c.Min))
		b = binary.AppendUvarint(b, uint64(c.Avg))
		b = binary.AppendUvarint(b, uint64(c.Max))
	}
	b = append(b, byte(p.Compression.Algo), byte(p.Compression.Level))
	if p.Encrypt {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	r := p.Redundancy
	b = append(b, byte(r.Mode))
	if r.Mode == Replicate {
		b = append(b, byte(r.Replicas), byte(r.WriteQuorum))
	} else {
		b = append(b, byte(r.Data), byte(r.Parity))
	}
	return b, nil
}

// DecodeBinary reads a policy written by AppendBinary from the front of b
// and returns it with the number of bytes used. The result is validated.
func DecodeBinary(b []byte) (Policy, int, error) {
	d := decoder{b: b}
	var p Policy
	p.Chunking.Mode = ChunkMode(d.byte())
	switch p.Chunking.Mode {
	case Fixed:
		p.Chunking.Size = d.size()
	case CDC:
		p.Chunking.Min, p.Chunking.Avg, p.Chunking.Max = d.size(), d.size(), d.size()
	default:
		if d.err == nil {
			return Policy{}, 0, fmt.Errorf("%w: unknown chunking mode %d", ErrInvalid, p.Chunking.Mode)
		}
	}
	p.Compression.Algo = CompressAlgo(d.byte())
	p.Compression.Level = int(d.byte())
	switch enc := d.byte(); enc {
	case 0, 1:
		p.Encrypt = enc == 1
	default:
		if d.err == nil {
			return Policy{}, 0, fmt.Errorf("%w: encrypt flag %d", ErrInvalid, enc)
		}
	}
	p.Redundancy.Mode = RedundancyMode(d.byte())
	x, y := int(d.byte()), int(d.byte())
	if p.Redundancy.Mode == Replicate {
		p.Redundancy.Replicas, p.Redundancy.WriteQuorum = x, y
	} else {
		p.Redundancy.Data, p.Redundancy.Parity = x, y
	}
	if d.err != nil {
		return Policy{}, 0, d.err
	}
	if err := p.Validate(); err != nil {
		return Policy{}, 0, err
	}
	return p, d.off, nil
}

type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) byte() byte {
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

func (d *decoder) size() int {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.err = ErrTruncated
		return 0
	}
	if v > MaxChunkSize {
		d.err = fmt.Errorf("%w: size %d", ErrInvalid, v)
		return 0
	}
	d.off += n
	return int(v)
}
