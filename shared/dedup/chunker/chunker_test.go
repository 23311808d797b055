package chunker

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/iotest"

	sha256 "github.com/minio/sha256-simd"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e37))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func chunks(t testing.TB, data []byte, c Cutter, readSize int) [][]byte {
	t.Helper()
	ch := New(&slowReader{data: data, n: readSize}, c)
	var out [][]byte
	for {
		b, err := ch.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(b))
	}
}

// slowReader returns at most n bytes per Read, to exercise refills.
type slowReader struct {
	data []byte
	n    int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.n, len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestFixed(t *testing.T) {
	f, err := NewFixed(4096)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(1, 3*4096+17)
	got := chunks(t, data, f, 1000)
	if len(got) != 4 || len(got[3]) != 17 {
		t.Fatalf("got %d chunks", len(got))
	}
	if !bytes.Equal(bytes.Join(got, nil), data) {
		t.Fatal("chunks do not reassemble the stream")
	}
	if len(chunks(t, nil, f, 10)) != 0 {
		t.Fatal("empty stream has chunks")
	}
}

func TestFastCDCBoundsAndReassembly(t *testing.T) {
	c, err := NewFastCDC(16<<10, 64<<10, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(2, 8<<20)
	got := chunks(t, data, c, 7777)
	if !bytes.Equal(bytes.Join(got, nil), data) {
		t.Fatal("chunks do not reassemble the stream")
	}
	for i, b := range got[:len(got)-1] {
		if len(b) < 16<<10 || len(b) > 256<<10 {
			t.Fatalf("chunk %d has %d bytes", i, len(b))
		}
	}
	avg := len(data) / len(got)
	if avg < 40<<10 || avg > 100<<10 {
		t.Fatalf("average chunk %d, want near 64 KiB", avg)
	}
	// The read size must not change where cuts fall.
	again := chunks(t, data, c, 1<<20)
	if len(again) != len(got) {
		t.Fatalf("cuts depend on read size: %d vs %d chunks", len(again), len(got))
	}
}

func TestFastCDCShiftResistance(t *testing.T) {
	c, _ := NewFastCDC(4<<10, 16<<10, 64<<10)
	data := randBytes(3, 4<<20)
	shifted := append([]byte{0x42}, data...)
	set := map[[32]byte]bool{}
	for _, b := range chunks(t, data, c, 1<<16) {
		set[sha256.Sum256(b)] = true
	}
	got := chunks(t, shifted, c, 1<<16)
	shared := 0
	for _, b := range got {
		if set[sha256.Sum256(b)] {
			shared++
		}
	}
	if shared < len(got)*9/10 {
		t.Fatalf("only %d of %d chunks survive a 1-byte insert", shared, len(got))
	}
}

func TestBadSizes(t *testing.T) {
	for _, s := range [][3]int{{0, 64, 128}, {4096, 4096, 8192}, {1024, 3000, 8192}, {1024, 4096, 4096}} {
		if _, err := NewFastCDC(s[0], s[1], s[2]); !errors.Is(err, ErrBadSize) {
			t.Errorf("%v: got %v", s, err)
		}
	}
	if _, err := NewFixed(0); !errors.Is(err, ErrBadSize) {
		t.Error("fixed 0 accepted")
	}
}

type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

func TestReadErrorIsNotEOF(t *testing.T) {
	c, _ := NewFixed(4096)
	ch := New(&errReader{n: 10000}, c)
	var total int
	for {
		b, err := ch.Next()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatalf("want the read error, got %v", err)
		}
		total += len(b)
	}
	if total != 8192 {
		t.Fatalf("emitted %d bytes before the error, want the 2 whole chunks", total)
	}
}

func BenchmarkFastCDC(b *testing.B) {
	c, _ := NewFastCDC(16<<10, 64<<10, 256<<10)
	data := randBytes(4, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for rest := data; len(rest) > 0; {
			rest = rest[c.Cut(rest):]
		}
	}
}

func BenchmarkFastCDCSHA256(b *testing.B) {
	c, _ := NewFastCDC(16<<10, 64<<10, 256<<10)
	data := randBytes(4, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for rest := data; len(rest) > 0; {
			n := c.Cut(rest)
			sha256.Sum256(rest[:n])
			rest = rest[n:]
		}
	}
}

// A small stream never gets the buffer a long one needs; a long one is cut
// the same whatever size the buffer started at.
func TestBufferGrowsWithTheStream(t *testing.T) {
	cut, err := NewFastCDC(64<<10, 256<<10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	small := New(bytes.NewReader(make([]byte, 4096)), cut)
	if b, err := small.Next(); err != nil || len(b) != 4096 {
		t.Fatalf("small stream: %d bytes, %v", len(b), err)
	}
	if cap(small.buf) > smallBuf {
		t.Fatalf("a 4 KiB stream allocated a %d-byte buffer", cap(small.buf))
	}
	data := randBytes(7, 5<<20)
	lens := func(c *Chunker) []int {
		var out []int
		for {
			b, err := c.Next()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, len(b))
		}
	}
	got := lens(New(iotest.HalfReader(bytes.NewReader(data)), cut))
	full := &Chunker{r: bytes.NewReader(data), cut: cut, full: 2*cut.MaxLen() + 64<<10, buf: make([]byte, 2*cut.MaxLen()+64<<10)}
	want := lens(full)
	if !slices.Equal(got, want) {
		t.Fatalf("cuts differ with a growing buffer: %d chunks vs %d", len(got), len(want))
	}
}

// refCut is Cut's rule one byte at a time, as its comment states it: the
// lanes and pairs of the fast path must find exactly these cuts, since
// boundaries are part of the stored format.
func refCut(c *FastCDC, data []byte) int {
	n := len(data)
	if n <= c.min {
		return n
	}
	n = min(n, c.max)
	normal := min(c.avg, n)
	var h uint64
	for i := c.min; i < n; i++ {
		h = h<<1 + gear[data[i]]
		start, end, mask := c.min, normal, c.maskS
		if i >= normal {
			start, end, mask = normal, n, c.maskL
		}
		hit := h&mask == 0
		if (i-start)%2 == 0 && i+1 < end {
			hit = (h<<1)&(mask<<1) == 0
		}
		if hit {
			return i + 1
		}
	}
	return n
}

func TestFastCDCMatchesTheRule(t *testing.T) {
	for _, sz := range [][3]int{
		{64, 128, 256}, {100, 128, 4096}, {65, 1024, 8191}, {2048, 4096, 65536},
		{4 << 10, 16 << 10, 64 << 10}, {16 << 10, 64 << 10, 256 << 10}, {5000, 8192, 100000},
	} {
		c, err := NewFastCDC(sz[0], sz[1], sz[2])
		if err != nil {
			t.Fatal(err)
		}
		// Low-entropy data makes cuts frequent, so both lanes hit often,
		// at either byte of a pair, and sometimes together.
		for seed, data := range [][]byte{randBytes(uint64(sz[0]), 4<<20), lowEntropy(uint64(sz[1]), 4<<20)} {
			cuts := 0
			for rest := data; len(rest) > 0; cuts++ {
				want := refCut(c, rest)
				if got := c.Cut(rest); got != want {
					t.Fatalf("%v data %d at offset %d: cut %d, the rule says %d", sz, seed, len(data)-len(rest), got, want)
				}
				rest = rest[want:]
			}
			// Every length around min, avg and max and the lanes' rounds,
			// a sample of those between, at one offset.
			for n := 0; n < min(len(data), sz[2]+3); n++ {
				if n%(2*lane) > 66 && n%(2*lane) < 2*lane-66 && abs(n-sz[0]) > 66 && abs(n-sz[1]) > 66 && abs(n-sz[2]) > 66 {
					n += 61
				}
				if got, want := c.Cut(data[:n]), refCut(c, data[:n]); got != want {
					t.Fatalf("%v data %d, %d bytes: cut %d, the rule says %d", sz, seed, n, got, want)
				}
			}
			if cuts < 8 {
				t.Fatalf("%v: only %d cuts", sz, cuts)
			}
		}
	}
}

// lowEntropy draws bytes from a handful of values, with runs.
func lowEntropy(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(3))
		if r.IntN(8) == 0 && i > 0 {
			b[i] = b[i-1]
		}
	}
	return b
}

func abs(n int) int { return max(n, -n) }

// A released chunker's buffer serves the next long stream, which is cut
// exactly as with a new one; the released chunker refuses to go on.
func TestReleaseReusesTheBuffer(t *testing.T) {
	c, _ := NewFastCDC(16<<10, 64<<10, 256<<10)
	a, b := randBytes(11, 6<<20), randBytes(12, 5<<20)
	var want []int
	for _, k := range chunks(t, b, c, 1<<20) {
		want = append(want, len(k))
	}
	ch := New(bytes.NewReader(a), c)
	for range 40 {
		if _, err := ch.Next(); err != nil {
			t.Fatal(err)
		}
	}
	ch.Release()
	if _, err := ch.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("Next after Release: %v, want an error", err)
	}
	for range 3 {
		ch = New(&slowReader{data: b, n: 1 << 20}, c)
		var got []int
		var all []byte
		for {
			k, err := ch.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, len(k))
			all = append(all, k...)
		}
		if !slices.Equal(got, want) || !bytes.Equal(all, b) {
			t.Fatalf("a stream cut with a reused buffer differs: %d chunks vs %d", len(got), len(want))
		}
		ch.Release()
	}
}
