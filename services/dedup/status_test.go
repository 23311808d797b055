package dedup

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/shared/dht"
	"shoal/shared/paxos"
	"shoal/shared/rpc"
)

// The root set's Paxos failures leave the tier as retryable codes, not
// Internal: a frontend turns them into 503s.
func TestStorageFailuresAreRetryableCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("retain: %w: %w", paxos.ErrIndeterminate, paxos.ErrContended), codes.Unavailable},
		{fmt.Errorf("retain: %w", paxos.ErrContended), codes.Aborted},
		{fmt.Errorf("release: %w", paxos.ErrNoQuorum), codes.Unavailable},
		{fmt.Errorf("put: %w", dht.ErrQuorum), codes.Unavailable},
		// Nodes that refused for want of room make the write fail as full.
		{fmt.Errorf("put: %w: 0 of 2 acknowledged: %w", dht.ErrQuorum, errors.Join(rpc.ErrFull, errors.New("unreachable"))), codes.ResourceExhausted},
		{fmt.Errorf("boom"), codes.Internal},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
