package nbd

import (
	"errors"
	"fmt"
	"testing"

	"shoal/services/dedup/client"
	"shoal/services/nbd/wire"
	"shoal/shared/rpc"
)

// A commit the storage nodes refuse for want of room reaches the NBD
// client as ENOSPC, as a full disk's write would, not as EIO.
func TestFullStorageIsNoSpace(t *testing.T) {
	err := noSpace(fmt.Errorf("commit: %w", client.ErrFull))
	if !errors.Is(err, wire.ErrNoSpace) || !errors.Is(err, client.ErrFull) {
		t.Fatalf("full storage: %v", err)
	}
	if err := noSpace(fmt.Errorf("head: %w", rpc.ErrFull)); !errors.Is(err, wire.ErrNoSpace) {
		t.Fatalf("acceptors full: %v", err)
	}
	if err := noSpace(fmt.Errorf("commit: %w", client.ErrUnavailable)); errors.Is(err, wire.ErrNoSpace) {
		t.Fatalf("an outage became ENOSPC: %v", err)
	}
	if err := noSpace(nil); err != nil {
		t.Fatalf("no error became %v", err)
	}
}
