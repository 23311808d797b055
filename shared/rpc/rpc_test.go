package rpc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/shared/block"
)

func TestStatusRoundTrip(t *testing.T) {
	for _, sentinel := range []error{block.ErrNotFound, block.ErrTooLarge, block.ErrHashMismatch, block.ErrBadAddress, ErrFull} {
		wrapped := fmt.Errorf("%w: detail", sentinel)
		back := FromStatus(ToStatus(wrapped))
		if !errors.Is(back, sentinel) {
			t.Errorf("%v did not survive the round trip: %v", sentinel, back)
		}
	}
	if st, _ := status.FromError(ToStatus(ErrFull)); st.Code() != codes.ResourceExhausted {
		t.Errorf("ErrFull maps to %v", st.Code())
	}
	if st, _ := status.FromError(ToStatus(context.DeadlineExceeded)); st.Code() != codes.DeadlineExceeded {
		t.Errorf("deadline maps to %v", st.Code())
	}
	if st, _ := status.FromError(ToStatus(errors.New("boom"))); st.Code() != codes.Internal {
		t.Errorf("unknown maps to %v", st.Code())
	}
}

func TestBufferPoolTiers(t *testing.T) {
	p := &bufferPool{}
	for _, n := range []int{0, 1, 256, 257, 4096, 40_000, 300 << 10, 64 << 20, 64<<20 + 1} {
		b := p.Get(n)
		if len(*b) != n {
			t.Fatalf("Get(%d): len %d", n, len(*b))
		}
		if c := cap(*b); n <= 64<<20 && (c < n || c&(c-1) != 0 || (n > 256 && c >= 2*n)) {
			t.Fatalf("Get(%d): cap %d is not the smallest power of two holding it", n, c)
		}
		p.Put(b)
		if again := p.Get(n); len(*again) != n || cap(*again) < n {
			t.Fatalf("reused buffer for %d: len %d cap %d", n, len(*again), cap(*again))
		}
	}
	odd := make([]byte, 1000) // not a tier size: dropped, never handed out short
	p.Put(&odd)
	if b := p.Get(1000); cap(*b) != 1024 {
		t.Fatalf("Get(1000) after a stray Put: cap %d", cap(*b))
	}
}
