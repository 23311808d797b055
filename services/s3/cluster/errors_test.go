package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/services/s3"
	"shoal/services/s3/s3err"
	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/paxos"
	"shoal/shared/rpc"
)

// Storage trouble reaches S3 clients as a 503 they retry (SlowDown for
// contention, ServiceUnavailable for missing nodes), never as a 500, and
// the cause stays visible to errors.Is.
func TestStorageErrorsAreRetryable503s(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		code  s3err.Code
		cause error
	}{
		{"meta: contended", metaErr(fmt.Errorf("update shard: %w", paxos.ErrContended)), s3err.SlowDown, paxos.ErrContended},
		{"meta: indeterminate", metaErr(fmt.Errorf("%w: %w", paxos.ErrIndeterminate, paxos.ErrNoQuorum)), s3err.SlowDown, paxos.ErrIndeterminate},
		{"meta: no acceptor quorum", metaErr(fmt.Errorf("read: %w", paxos.ErrNoQuorum)), s3err.ServiceUnavailable, paxos.ErrNoQuorum},
		{"meta: no write quorum", metaErr(fmt.Errorf("create: %w", dht.ErrQuorum)), s3err.ServiceUnavailable, dht.ErrQuorum},
		{"meta: no nodes", metaErr(dht.ErrNoNodes), s3err.ServiceUnavailable, dht.ErrNoNodes},
		{"data: unavailable", dataErr("write", status.Error(codes.Unavailable, "quorum")), s3err.ServiceUnavailable, nil},
		{"data: aborted", dataErr("write", status.Error(codes.Aborted, "contended")), s3err.SlowDown, nil},
	} {
		e, ok := s3err.As(tc.err)
		if !ok || e.Code != tc.code {
			t.Errorf("%s: %v maps to %v, want %v", tc.name, tc.err, e, tc.code)
			continue
		}
		if e.Code.Status() != http.StatusServiceUnavailable {
			t.Errorf("%s: HTTP %d", tc.name, e.Code.Status())
		}
		if tc.cause != nil && !errors.Is(tc.err, tc.cause) {
			t.Errorf("%s: cause lost", tc.name)
		}
	}
	// The frontend's own sentinels are unchanged.
	if err := metaErr(block.ErrNotFound); !errors.Is(err, s3.ErrNotFound) {
		t.Errorf("not found maps to %v", err)
	}
	if _, ok := s3err.As(metaErr(errors.New("boom"))); ok {
		t.Error("an unknown error became an S3 error")
	}
}

// Full storage nodes are a 507 that SDKs do not retry: waiting does not
// make room.
func TestStorageFullIs507(t *testing.T) {
	for _, err := range []error{
		dataErr("write", status.Error(codes.ResourceExhausted, "blockstore: capacity exhausted")),
		// Acceptors that could not write their record: the proposer's
		// quorum failure carries their errors.
		metaErr(fmt.Errorf("%w: accept: %w", paxos.ErrNoQuorum, errors.Join(fmt.Errorf("node-1: %w", rpc.ErrFull), errors.New("node-2: unreachable")))),
	} {
		e, ok := s3err.As(err)
		if !ok || e.Code != s3err.StorageFull || e.Code.Status() != http.StatusInsufficientStorage {
			t.Fatalf("full nodes map to %v", err)
		}
	}
}
