package dedup

import (
	"context"
	"math/bits"
	"sync"
)

// budget is a byte semaphore: it bounds the bytes a pipeline holds between
// reading them and finishing with them, which is what bounds a Write's
// memory whatever the stream's size.
type budget struct {
	mu    sync.Mutex
	max   int64
	avail int64
	wake  chan struct{}
}

func newBudget(n int64) *budget { return &budget{max: n, avail: n} }

// acquire waits for n bytes. Requests above the whole budget are clipped so
// an oversized item waits for an empty pipeline instead of forever.
func (b *budget) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(n, b.max)
	for {
		b.mu.Lock()
		if b.avail >= n {
			b.avail -= n
			b.mu.Unlock()
			return n, nil
		}
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.avail += n
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.mu.Unlock()
}

// Buffers are pooled in power-of-two classes from 4 KiB to 8 MiB; chunk
// sizes vary too much for one size to fit all.
const (
	minClass = 12
	maxClass = 23
)

var pools [maxClass + 1]sync.Pool

// bufCap is the capacity getBuf(n) returns.
func bufCap(n int) int {
	c := max(bits.Len(uint(n-1)), minClass)
	if c > maxClass {
		return n
	}
	return 1 << c
}

func getBuf(n int) []byte {
	c := max(bits.Len(uint(n-1)), minClass)
	if c > maxClass {
		return make([]byte, n)
	}
	if v, ok := pools[c].Get().(*[]byte); ok {
		return (*v)[:n]
	}
	return make([]byte, n, 1<<c)
}

func putBuf(b []byte) {
	c := bits.Len(uint(cap(b) - 1))
	if c < minClass || c > maxClass || cap(b) != 1<<c {
		return
	}
	b = b[:0]
	pools[c].Put(&b)
}
