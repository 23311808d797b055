package rpc

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufferPool is gRPC's message buffer pool for Shoal's servers and
// clients: power-of-two classes from 256 B to 1 MiB, then whole MiBs up to
// 64 MiB, handed out without zeroing. gRPC's default pool clears a buffer's
// whole capacity on every Get, and its tiers jump from 32 KiB to 1 MiB, so
// each 64-512 KiB message (a mutable block's state, a batch of small
// blocks) cleared up to 1 MiB: 12% of an S3 server's CPU under small PUTs.
// MiB steps above 1 MiB keep a 4 MiB block's message in a 5 MiB buffer,
// not an 8 MiB one. gRPC fills every buffer it gets before reading it.
type bufferPool struct {
	pow [mibShift + 1]sync.Pool // 2^i bytes, i in [minShift, mibShift]
	mib [maxMiB + 1]sync.Pool   // i MiB, i in [2, maxMiB]
}

const (
	minShift = 8  // 256 B
	mibShift = 20 // 1 MiB
	maxMiB   = 64 // MaxMessage
)

var messagePool mem.BufferPool = &bufferPool{}

// class returns the pool and capacity for a buffer of n bytes (nil: too
// large to pool).
func (p *bufferPool) class(n int) (*sync.Pool, int) {
	switch {
	case n <= 1<<minShift:
		return &p.pow[minShift], 1 << minShift
	case n <= 1<<mibShift:
		s := bits.Len(uint(n - 1))
		return &p.pow[s], 1 << s
	case n <= maxMiB<<mibShift:
		m := (n + 1<<mibShift - 1) >> mibShift
		return &p.mib[m], m << mibShift
	}
	return nil, n
}

func (p *bufferPool) Get(n int) *[]byte {
	pool, c := p.class(n)
	if pool != nil {
		if b, ok := pool.Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
	}
	b := make([]byte, n, c)
	return &b
}

func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if pool, want := p.class(c); pool != nil && want == c {
		pool.Put(b) // only buffers of exactly a class size: Get relies on it
	}
}

// Buffer returns n bytes, not zeroed, from the pool gRPC messages use: for
// a caller that copies a large payload it will be done with soon (a
// buffer of its own would be fresh pages; see Reused).
func Buffer(n int) *[]byte { return messagePool.Get(n) }

// FreeBuffer gives back a buffer from Buffer; it must no longer be used.
func FreeBuffer(b *[]byte) { messagePool.Put(b) }
