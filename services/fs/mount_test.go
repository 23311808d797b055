package fs

import (
	"errors"
	"syscall"
	"testing"
)

type fakeWaiter struct {
	errs      []error // WaitMount's results, in turn
	waits     int
	unmounted bool
}

func (f *fakeWaiter) WaitMount() error {
	err := f.errs[f.waits]
	f.waits++
	return err
}

func (f *fakeWaiter) Unmount() error {
	f.unmounted = true
	return nil
}

// A mount whose readiness check is interrupted by a signal is waited for
// again, not reported failed while it stays mounted; a real failure
// unmounts.
func TestWaitMountRetriesEINTR(t *testing.T) {
	w := &fakeWaiter{errs: []error{syscall.EINTR, syscall.EINTR, nil}}
	if err := waitMount(w); err != nil || w.waits != 3 || w.unmounted {
		t.Fatalf("after two EINTRs: err %v, %d waits, unmounted %v", err, w.waits, w.unmounted)
	}
	failed := errors.New("no such device")
	w = &fakeWaiter{errs: []error{syscall.EINTR, failed}}
	if err := waitMount(w); !errors.Is(err, failed) || !w.unmounted {
		t.Fatalf("after a failure: err %v, unmounted %v", err, w.unmounted)
	}
}
