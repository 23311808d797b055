package rpc

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufferPool is gRPC's message buffer pool for Shoal's servers and
// clients: power-of-two tiers from 256 B to 64 MiB, handed out without
// zeroing. gRPC's default pool clears a buffer's whole capacity on every
// Get, and its tiers jump from 32 KiB to 1 MiB, so each 64-512 KiB message
// (a mutable block's state, a batch of small blocks) cleared up to 1 MiB:
// 12% of an S3 server's CPU under small PUTs. gRPC fills every buffer it
// gets before reading it.
type bufferPool struct {
	tiers [maxTier + 1]sync.Pool
}

const (
	minTier = 8  // 256 B
	maxTier = 26 // 64 MiB, MaxMessage
)

var messagePool mem.BufferPool = &bufferPool{}

func tierOf(n int) int {
	if n <= 1<<minTier {
		return minTier
	}
	return bits.Len(uint(n - 1))
}

func (p *bufferPool) Get(n int) *[]byte {
	t := tierOf(n)
	if t > maxTier {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<t)
	return &b
}

func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minTier || c&(c-1) != 0 {
		return // not one of ours
	}
	if t := bits.Len(uint(c)) - 1; t <= maxTier {
		p.tiers[t].Put(b)
	}
}
