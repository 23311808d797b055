// Package chunker cuts a byte stream into chunks, either at fixed offsets or
// at content-defined boundaries (FastCDC, Xia et al., USENIX ATC 2016). It
// only finds boundaries; hashing, compression and storage live elsewhere.
//
// Boundaries are part of the on-disk format: changing the gear table, the
// masks or the cut rule does not corrupt anything, but it stops new writes
// from deduplicating against old ones. Treat them as frozen.
package chunker

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
)

// ErrBadSize means the chunk sizes are out of range or inconsistent.
var ErrBadSize = errors.New("chunker: bad chunk sizes")

// A Cutter finds the end of the first chunk in data. data holds at least
// MaxLen bytes unless the stream ends sooner; the result is in 1..len(data)
// for non-empty data and never above MaxLen.
type Cutter interface {
	Cut(data []byte) int
	MaxLen() int
}

// Fixed cuts every Size bytes.
type Fixed struct{ size int }

// NewFixed returns a Cutter for fixed-size chunks.
func NewFixed(size int) (*Fixed, error) {
	if size <= 0 {
		return nil, fmt.Errorf("%w: fixed size %d", ErrBadSize, size)
	}
	return &Fixed{size: size}, nil
}

// Cut implements Cutter.
func (f *Fixed) Cut(data []byte) int { return min(len(data), f.size) }

// MaxLen implements Cutter.
func (f *Fixed) MaxLen() int { return f.size }

// FastCDC is content-defined chunking with a gear rolling hash and
// normalized chunking (level 2): a stricter mask before the average size and
// a looser one after, which narrows the size distribution around Avg.
type FastCDC struct {
	min, avg, max int
	maskS, maskL  uint64
}

// NewFastCDC returns a FastCDC cutter. avg must be a power of two and
// 64 <= min < avg < max.
func NewFastCDC(minLen, avgLen, maxLen int) (*FastCDC, error) {
	if minLen < 64 || minLen >= avgLen || avgLen >= maxLen || bits.OnesCount(uint(avgLen)) != 1 {
		return nil, fmt.Errorf("%w: cdc %d/%d/%d", ErrBadSize, minLen, avgLen, maxLen)
	}
	b := bits.TrailingZeros(uint(avgLen))
	// Masks take the top bits of the gear hash: with fp = fp<<1 + G[b] the
	// top bits depend on the last 64 bytes, which is the window we want.
	return &FastCDC{
		min:   minLen,
		avg:   avgLen,
		max:   maxLen,
		maskS: topBits(b + 2),
		maskL: topBits(b - 2),
	}, nil
}

func topBits(n int) uint64 {
	if n <= 0 {
		return 0
	}
	return ^uint64(0) << (64 - n)
}

// MaxLen implements Cutter.
func (c *FastCDC) MaxLen() int { return c.max }

// Cut implements Cutter.
//
// The cut rule (frozen, see the package comment): after byte i the gear
// hash is h_i = h_{i-1}<<1 + G[d_i], starting from 0 at min. Positions in
// [min, normal) test maskS, those in [normal, n) maskL, where normal =
// min(avg, n). Bytes are taken two at a time from the start of each
// range, and the first byte of a pair tests h_i<<1 against mask<<1 (the
// hash is kept shifted there, to shift once per pair): one bit fewer. A
// byte without a partner (a range of odd length) tests h_i against mask.
func (c *FastCDC) Cut(data []byte) int {
	n := len(data)
	if n <= c.min {
		return n
	}
	n = min(n, c.max)
	data = data[:n]
	normal := min(c.avg, n)
	cut, fp := scan(data, c.min, normal, 0, c.maskS)
	if cut > 0 {
		return cut
	}
	if cut, _ = scan(data, normal, n, fp, c.maskL); cut > 0 {
		return cut
	}
	return n
}

// lane is the stretch each of scan's two lanes hashes per round.
const lane = 2048

// scan applies the cut rule to positions [i, end) with mask, given fp =
// h_{i-1}. It returns the end of the first chunk found there (0 if none)
// and h_{end-1}.
//
// The hash is a chain of dependent adds, so one lane leaves most of the
// core idle. Because h_i only depends on the last 64 bytes (older ones
// are shifted out), a second lane can start anywhere ahead after hashing
// the 64 bytes before its start: rounds hash two adjacent stretches at
// once, and the second one's hit counts only if the first has none.
func scan(data []byte, i, end int, fp uint64, mask uint64) (int, uint64) {
	mask2 := mask << 1
	for ; i+2*lane <= end; i += 2 * lane {
		a := (*[lane]byte)(data[i : i+lane])
		b := (*[lane]byte)(data[i+lane : i+2*lane])
		var fpB uint64
		for _, d := range data[i+lane-64 : i+lane] {
			fpB = fpB<<1 + gear[d]
		}
		for j := 0; j < lane-1; j += 2 {
			fp = fp<<2 + gear2[a[j]]
			fpB = fpB<<2 + gear2[b[j]]
			if fp&mask2 == 0 {
				return i + j + 1, 0
			}
			if fpB&mask2 == 0 {
				if fp += gear[a[j+1]]; fp&mask == 0 {
					return i + j + 2, 0
				}
				return firstOr(data, i+j+2, i+lane, fp, mask, i+lane+j+1), 0
			}
			fp += gear[a[j+1]]
			fpB += gear[b[j+1]]
			if fp&mask == 0 {
				return i + j + 2, 0
			}
			if fpB&mask == 0 {
				return firstOr(data, i+j+2, i+lane, fp, mask, i+lane+j+2), 0
			}
		}
		fp = fpB
	}
	even := end - (end-i)&1
	cut, fp := pairs(data, i, even, fp, mask)
	if cut > 0 {
		return cut, 0
	}
	if i = even; i < end {
		fp = fp<<1 + gear[data[i]]
		if fp&mask == 0 {
			return i + 1, 0
		}
	}
	return 0, fp
}

// firstOr is the second lane's cut b unless the first lane, going on from
// i (fp = h_{i-1}) to the end of its stretch, cuts first: the first lane
// has the last word on its stretch.
func firstOr(data []byte, i, end int, fp, mask uint64, b int) int {
	if cut, _ := pairs(data, i, end, fp, mask); cut > 0 {
		return cut
	}
	return b
}

// pairs applies the cut rule to [i, end) with one lane; end-i is even.
func pairs(data []byte, i, end int, fp uint64, mask uint64) (int, uint64) {
	mask2 := mask << 1
	for ; i+1 < end; i += 2 {
		fp = fp<<2 + gear2[data[i]]
		if fp&mask2 == 0 {
			return i + 1, 0
		}
		fp += gear[data[i+1]]
		if fp&mask == 0 {
			return i + 2, 0
		}
	}
	return 0, fp
}

// gear is the FastCDC table; gear2[b] = gear[b]<<1 for the two-byte step.
// It comes from splitmix64 with a fixed seed so it is reproducible without
// shipping 2 KiB of constants. Frozen: see the package comment.
var gear, gear2 [256]uint64

func init() {
	s := uint64(0x5d0a15eed5c0a1) // "shoal seed", roughly
	for i := range gear {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		gear[i] = z ^ z>>31
		gear2[i] = gear[i] << 1
	}
}

// Chunker reads a stream and returns its chunks in order.
type Chunker struct {
	r          io.Reader
	cut        Cutter
	buf        []byte
	full       int // the buffer's size once the stream proves long
	start, end int
	fills      int
	eof        bool
	err        error
}

// New returns a Chunker reading r. Its buffer starts at smallBuf and grows
// to about twice the largest chunk once the stream is longer; a long
// stream grows it to bigBuf.
func New(r io.Reader, c Cutter) *Chunker {
	full := 2*c.MaxLen() + 64<<10
	return &Chunker{r: r, cut: c, full: full, buf: make([]byte, min(smallBuf, full))}
}

// smallBuf is the first buffer: most objects are small, and a buffer of
// twice the largest chunk (a few MiB), allocated and zeroed for each 4 KiB
// object, was ~4% of the S3 tier's CPU under small PUTs.
const smallBuf = 64 << 10

// bigBuf: each refill moves the unread tail (up to one largest chunk) to
// the front, and a buffer of twice a 256 KiB chunk moved about half of all
// it read once more. A stream that needs a third refill gets this much;
// small ones (most objects) never pay for it. It stays within a core's L2
// (1 MiB here): the chunk just read is then still there when it is cut and
// hashed, which is worth more than the extra tail moves (one core's chunk +
// SHA-256 ran 6% faster than with 4 MiB).
const bigBuf = 1 << 20

// Next returns the next chunk. The slice is only valid until the next call:
// callers that keep a chunk copy it. At the end it returns io.EOF; an empty
// stream has no chunks.
func (c *Chunker) Next() ([]byte, error) {
	if c.end-c.start < c.cut.MaxLen() && !c.eof {
		c.fill()
	}
	if c.start == c.end {
		if c.err != nil {
			return nil, c.err
		}
		return nil, io.EOF
	}
	if c.err != nil && c.end-c.start < c.cut.MaxLen() {
		// A read error is not an end of stream: do not emit a short tail
		// chunk that would look like one.
		return nil, c.err
	}
	n := c.cut.Cut(c.buf[c.start:c.end])
	chunk := c.buf[c.start : c.start+n]
	c.start += n
	return chunk, nil
}

// bigPool keeps the bigBuf buffers of released chunkers: a new one is
// memory the process touches for the first time, which on a VM costs
// ~10 µs a page (2.5 ms per buffer).
var bigPool sync.Pool // *[]byte of capacity bigBuf

// Release hands the chunker's buffer to later chunkers. Neither the
// chunker nor the chunks it returned may be used afterwards.
func (c *Chunker) Release() {
	if cap(c.buf) == bigBuf {
		b := c.buf[:0]
		bigPool.Put(&b)
	}
	c.buf, c.start, c.end, c.eof, c.err = nil, 0, 0, true, errReleased
}

var errReleased = errors.New("chunker: used after Release")

func (c *Chunker) fill() {
	if c.fills++; c.fills == 3 && len(c.buf) < bigBuf {
		big := make([]byte, 0, bigBuf)
		if p, ok := bigPool.Get().(*[]byte); ok {
			big = *p
		}
		c.buf = append(big[:0], c.buf[c.start:c.end]...)[:bigBuf]
	} else {
		copy(c.buf, c.buf[c.start:c.end])
	}
	c.end -= c.start
	c.start = 0
	for empty := 0; ; {
		if c.end == len(c.buf) {
			if len(c.buf) >= c.full {
				return
			}
			c.buf = append(c.buf, make([]byte, c.full-len(c.buf))...)
		}
		n, err := c.r.Read(c.buf[c.end:])
		c.end += n
		if errors.Is(err, io.EOF) {
			c.eof = true
			return
		}
		if err != nil {
			c.eof, c.err = true, err
			return
		}
		if n == 0 {
			// A reader that keeps returning 0, nil would spin us forever.
			if empty++; empty > 100 {
				c.eof, c.err = true, io.ErrNoProgress
				return
			}
		}
	}
}
