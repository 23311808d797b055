package s3

import (
	"bytes"
	"testing"
)

// The decoded-shard cache answers only for the bytes it decoded: a new
// version, or the same version in other bytes, is decoded afresh.
func TestShardCacheKeyedByBytes(t *testing.T) {
	c := newShardCache()
	addr := [32]byte{1}
	one := (&shard{hiInf: true, keys: []string{"a"}, vals: [][]byte{[]byte("1")}}).encode()
	s1, err := c.decode(addr, 7, one)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.decode(addr, 7, one); again != s1 {
		t.Fatal("the same bytes were decoded again")
	}
	two := (&shard{hiInf: true, keys: []string{"a", "b"}, vals: [][]byte{[]byte("1"), []byte("2")}}).encode()
	s2, err := c.decode(addr, 8, two)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.keys) != 2 {
		t.Fatalf("new version: %d keys, want 2", len(s2.keys))
	}
	// Same version number, different backing array (a store that copies,
	// or a block recreated at the same address): not trusted.
	copyOfOne := bytes.Clone(one)
	s3, err := c.decode(addr, 8, copyOfOne)
	if err != nil {
		t.Fatal(err)
	}
	if s3 == s2 || len(s3.keys) != 1 {
		t.Fatalf("other bytes under the same version gave the cached shard (%d keys)", len(s3.keys))
	}
	// A corrupt value is an error, and not cached.
	if _, err := c.decode([32]byte{2}, 1, []byte{0xff}); err == nil {
		t.Fatal("corrupt shard decoded")
	}
	var nilCache *shardCache
	if s, err := nilCache.decode(addr, 1, one); err != nil || len(s.keys) != 1 {
		t.Fatalf("nil cache: %v, %v", s, err)
	}
}
