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
