// Package erasure splits one stored chunk into k data and m parity
// Reed-Solomon shards and puts it back together from any k of them. It does
// no I/O and knows nothing of placement: the caller stores shard i on the
// node ranked i for the stripe.
package erasure

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

var (
	// ErrParams means k or m is out of range.
	ErrParams = errors.New("erasure: bad shard counts")
	// ErrTooFewShards means more than m shards are missing.
	ErrTooFewShards = errors.New("erasure: too few shards to reconstruct")
)

// Code is a k+m Reed-Solomon code. It is safe for concurrent use.
type Code struct {
	k, m int
	enc  reedsolomon.Encoder
}

var (
	codesMu sync.Mutex
	codes   = map[[2]int]*Code{}
)

// New returns the k+m code, shared process-wide (building the matrices is
// not free).
func New(k, m int) (*Code, error) {
	if k < 1 || m < 1 || k+m > 256 {
		return nil, fmt.Errorf("%w: %d+%d", ErrParams, k, m)
	}
	codesMu.Lock()
	defer codesMu.Unlock()
	if c := codes[[2]int{k, m}]; c != nil {
		return c, nil
	}
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrParams, err)
	}
	c := &Code{k: k, m: m, enc: enc}
	codes[[2]int{k, m}] = c
	return c, nil
}

// Data is k.
func (c *Code) Data() int { return c.k }

// Parity is m.
func (c *Code) Parity() int { return c.m }

// ShardSize is the size of every shard of an n-byte chunk.
func (c *Code) ShardSize(n int) int { return (n + c.k - 1) / c.k }

// EncodedSize is the bytes the k+m shards of an n-byte chunk take.
func (c *Code) EncodedSize(n int) int { return c.ShardSize(n) * (c.k + c.m) }

// Encode returns the k+m shards of data (n > 0), carved out of one buffer:
// dst's storage when it holds EncodedSize(len(data)) bytes (a new buffer
// per chunk was fresh pages, a tenth of an erasure-coded put's CPU), else
// a new one. The last data shard is zero-padded.
func (c *Code) Encode(dst, data []byte) ([][]byte, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty chunk", ErrParams)
	}
	size := c.ShardSize(len(data))
	buf := dst[:0]
	if cap(buf) < size*(c.k+c.m) {
		buf = make([]byte, size*(c.k+c.m))
	}
	buf = buf[:size*(c.k+c.m)]
	clear(buf[copy(buf, data) : size*c.k]) // the padding; parity is overwritten
	shards := make([][]byte, c.k+c.m)
	for i := range shards {
		shards[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	if err := c.enc.Encode(shards); err != nil {
		return nil, err
	}
	return shards, nil
}

// Reconstruct fills the nil entries of shards (all k+m when all is true,
// else only the data shards) and returns the first n bytes of the data, in
// dst's storage when it is large enough. Present shards must be
// ShardSize(n) long and already verified.
func (c *Code) Reconstruct(dst []byte, shards [][]byte, n int, all bool) ([]byte, error) {
	size := c.ShardSize(n)
	if len(shards) != c.k+c.m || n <= 0 {
		return nil, fmt.Errorf("%w: %d shards for %d+%d", ErrParams, len(shards), c.k, c.m)
	}
	have := 0
	for i, s := range shards {
		if s == nil {
			continue
		}
		if len(s) != size {
			return nil, fmt.Errorf("%w: shard %d has %d bytes, want %d", ErrParams, i, len(s), size)
		}
		have++
	}
	if have < c.k {
		return nil, fmt.Errorf("%w: %d of %d", ErrTooFewShards, have, c.k)
	}
	if have < c.k+c.m {
		var err error
		if all {
			err = c.enc.Reconstruct(shards)
		} else {
			err = c.enc.ReconstructData(shards)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTooFewShards, err)
		}
	}
	out := dst[:0]
	if cap(out) < size*c.k {
		out = make([]byte, 0, size*c.k)
	}
	for _, s := range shards[:c.k] {
		out = append(out, s...)
	}
	return out[:n], nil
}
