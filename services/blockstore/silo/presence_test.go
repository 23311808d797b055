package silo

import (
	"crypto/rand"
	"testing"

	"shoal/shared/block"
)

func randAddr() block.Address {
	var a block.Address
	_, _ = rand.Read(a[:])
	return a
}

// TestPresenceNoFalseNegatives grows the filter through several layers:
// every added block must still be reported, and absent ones mostly not.
func TestPresenceNoFalseNegatives(t *testing.T) {
	p := newPresence()
	added := make([]block.Address, 5*presenceFirstCap)
	for i := range added {
		added[i] = randAddr()
		p.add(added[i])
	}
	if n := len(*p.layers.Load()); n < 3 {
		t.Fatalf("%d layers after %d adds, want growth", n, len(added))
	}
	for i, a := range added {
		if !p.mayContain(a) {
			t.Fatalf("block %d of %d denied after it was added", i, len(added))
		}
	}
	fp := 0
	const probes = 100000
	for i := 0; i < probes; i++ {
		if p.mayContain(randAddr()) {
			fp++
		}
	}
	// ~0.1-0.5% per layer; a broken hash or layer test gives far more.
	if rate := float64(fp) / probes; rate > 0.01 {
		t.Fatalf("false positive rate %.3f", rate)
	}
}

// TestPresenceRebuiltOnOpen: a reopened silo must not deny what it holds.
func TestPresenceRebuiltOnOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("presence survives a restart")
	a := block.Sum(data)
	if _, err := s.Put(a, block.KindImmutable, data); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, err := s.Has(a); err != nil || !ok {
		t.Fatalf("Has after reopen = %v, %v", ok, err)
	}
	if existed, err := s.Put(a, block.KindImmutable, data); err != nil || !existed {
		t.Fatalf("re-put after reopen: existed=%v err=%v (stored twice)", existed, err)
	}
	if used, _, n := s.Usage(); n != 1 || used != uint64(len(data)) {
		t.Fatalf("usage %d bytes %d blocks", used, n)
	}
}
