package fs

import (
	"fmt"
	"log/slog"
	"syscall"
	"testing"

	"shoal/services/dedup/client"
	"shoal/shared/paxos"
	"shoal/shared/rpc"
)

// Storage nodes without room make a close fail with ENOSPC, as on a full
// disk; an outage stays EIO.
func TestFullStorageIsENOSPC(t *testing.T) {
	f := &FS{log: slog.New(slog.DiscardHandler)}
	if got := f.errno("flush", fmt.Errorf("write file: %w", client.ErrFull)); got != syscall.ENOSPC {
		t.Fatalf("full storage: %v", got)
	}
	if got := f.errno("setattr", fmt.Errorf("%w: accept: %w", paxos.ErrNoQuorum, rpc.ErrFull)); got != syscall.ENOSPC {
		t.Fatalf("acceptors full: %v", got)
	}
	if got := f.errno("flush", fmt.Errorf("write file: %w", client.ErrUnavailable)); got != syscall.EIO {
		t.Fatalf("outage: %v", got)
	}
}
