package silo

import (
	"fmt"
	"testing"

	"shoal/shared/block"
)

// TestBlockCacheSurvivesMemtables: pebble reserves its memtables from the
// block cache, and a cache of only CacheSize was wholly reserved once the
// memtables had grown to full size, so reads of flushed entries missed
// every time.
func TestBlockCacheSurvivesMemtables(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SegmentThreshold: 1024, CompactEvery: -1})
	defer s.Close()
	// Memtables start small and double up to memTableSize as they fill:
	// acceptor records (not synced, so quick) bring them to full size.
	rec := blockData(0, 64<<10)
	for i := range 3 * memTableSize / len(rec) {
		if err := s.StoreRecord(block.Sum(fmt.Appendf(nil, "record %d", i)), rec); err != nil {
			t.Fatal(err)
		}
	}
	var addrs []block.Address
	for i := range 12 {
		data := blockData(i, 512) // small enough to live in the LSM
		a := block.Sum(data)
		if _, err := s.Put(a, block.KindImmutable, data); err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	before := s.cacheStats()
	const rounds = 50
	for range rounds {
		for _, a := range addrs {
			if _, _, err := s.Get(a); err != nil {
				t.Fatal(err)
			}
		}
	}
	after := s.cacheStats()
	hits, misses := after.Hits-before.Hits, after.Misses-before.Misses
	// The first round may miss; every later one must hit.
	if misses > hits/10 {
		t.Fatalf("block cache: %d hits, %d misses over %d reads of %d flushed blocks (cache holds %d bytes)",
			hits, misses, rounds*len(addrs), len(addrs), after.Bytes)
	}
}
