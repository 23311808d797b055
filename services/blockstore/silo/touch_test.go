package silo

import (
	"testing"
	"time"

	"shoal/shared/block"
)

// TestTouchAndConditionalDelete: writes, duplicate puts and touches record
// a touch time; a conditional delete removes only blocks untouched since
// its cutoff; a touch after the delete reports the block absent.
func TestTouchAndConditionalDelete(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SegmentThreshold: 1 << 10})
	defer s.Close()
	clock := time.UnixMilli(1_000_000)
	s.now = func() time.Time { return clock }
	small, big := []byte("small block"), make([]byte, 4<<10)
	big[0] = 1
	as, ab := block.Sum(small), block.Sum(big)
	for _, b := range [][]byte{small, big} {
		if _, err := s.Put(block.Sum(b), block.KindImmutable, b); err != nil {
			t.Fatal(err)
		}
	}
	touched := func(a block.Address) int64 {
		info, err := s.Stat(a)
		if err != nil {
			t.Fatal(err)
		}
		return info.Touched
	}
	if touched(as) != 1_000_000 || touched(ab) != 1_000_000 {
		t.Fatalf("write times %d %d", touched(as), touched(ab))
	}
	// Within the resolution nothing is rewritten; past it, a duplicate
	// Put and a Touch refresh.
	clock = clock.Add(TouchResolution / 2)
	if _, err := s.Touch([]block.Address{as}); err != nil || touched(as) != 1_000_000 {
		t.Fatalf("touch within resolution: %d %v", touched(as), err)
	}
	clock = clock.Add(10 * time.Second)
	if existed, err := s.Put(ab, block.KindImmutable, big); err != nil || !existed {
		t.Fatal(existed, err)
	}
	if ok, err := s.Touch([]block.Address{as, block.Sum([]byte("absent"))}); err != nil || !ok[0] || ok[1] {
		t.Fatalf("touch: %v %v", ok, err)
	}
	now := clock.UnixMilli()
	if touched(as) != now || touched(ab) != now {
		t.Fatalf("refreshed times %d %d, want %d", touched(as), touched(ab), now)
	}
	var listed int
	if err := s.Range(nil, func(_ block.Address, info Info) bool {
		listed++
		if info.Touched != now {
			t.Errorf("Range touched %d, want %d", info.Touched, now)
		}
		return true
	}); err != nil || listed != 2 {
		t.Fatal(listed, err)
	}
	// A cutoff at the touch time keeps both; one past it deletes.
	if del, kept, err := s.DeleteIfUntouched(as, now); err != nil || del || !kept {
		t.Fatalf("young block: deleted=%v kept=%v %v", del, kept, err)
	}
	if del, kept, err := s.DeleteIfUntouched(as, now+1); err != nil || !del || kept {
		t.Fatalf("old block: deleted=%v kept=%v %v", del, kept, err)
	}
	if del, kept, err := s.DeleteIfUntouched(as, now+1); err != nil || del || kept {
		t.Fatalf("absent block: deleted=%v kept=%v %v", del, kept, err)
	}
	if ok, _ := s.Touch([]block.Address{as}); ok[0] {
		t.Fatal("deleted block still reported present")
	}
	used, _, blocks := s.Usage()
	if blocks != 1 || used != uint64(len(big)) {
		t.Fatalf("usage after delete: %d bytes, %d blocks", used, blocks)
	}
	// A block re-stored after a delete starts a fresh touch time.
	if _, err := s.Put(as, block.KindImmutable, small); err != nil || touched(as) != now {
		t.Fatal(err)
	}
}
