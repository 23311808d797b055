package nbd

import (
	"errors"
	"testing"
	"time"
)

func TestExtentsMergeZeroRuns(t *testing.T) {
	const cs = 4096
	d := make([]byte, cs)
	got := extents(map[int64][]byte{0: nil, 1: nil, 2: d, 3: nil, 5: nil, 6: nil, 7: nil}, cs)
	want := []struct {
		off, zero int64
		data      bool
	}{{0, 2 * cs, false}, {2 * cs, 0, true}, {3 * cs, cs, false}, {5 * cs, 3 * cs, false}}
	if len(got) != len(want) {
		t.Fatalf("got %d extents: %+v", len(got), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Off != w.off || g.ZeroLength != w.zero || (g.Data != nil) != w.data {
			t.Errorf("extent %d: off %d zero %d data %v, want %+v", i, g.Off, g.ZeroLength, g.Data != nil, w)
		}
	}
}

func TestValidation(t *testing.T) {
	for _, n := range []string{"", "-x", "a/b", "a b", string(make([]byte, 64))} {
		if err := ValidateName(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("name %q accepted", n)
		}
	}
	for _, n := range []string{"a", "vol-1.data_2", "0"} {
		if err := ValidateName(n); err != nil {
			t.Errorf("name %q refused: %v", n, err)
		}
	}
	if _, err := chunkSize("chunk=cdc:16k/64k/256k"); !errors.Is(err, ErrInvalid) {
		t.Errorf("CDC policy accepted for a volume: %v", err)
	}
	if cs, err := chunkSize(DefaultPolicy); err != nil || cs != 64<<10 {
		t.Errorf("default policy: %d %v", cs, err)
	}
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.FlushInterval = c.LeaseTTL
	if err := c.Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("flush interval at the lease term accepted")
	}
	c = DefaultConfig()
	c.LeaseTTL = time.Second
	if err := c.Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("1s lease accepted")
	}
}
