package s3

import (
	"bytes"
	"testing"
)

// Index shards, directories, the key table and object entries are read
// from mutable blocks: a decoder refuses what it cannot read, never
// panics, and what it accepts (the key table aside: it has no encoder of
// its own) encodes back to bytes it reads the same.
func FuzzMetadataFormats(f *testing.F) {
	f.Add((&shard{hiInf: true, keys: []string{"a"}, vals: [][]byte{[]byte("v")}}).encode(), uint8(0))
	f.Add((&objEntry{V: []*objVersion{{ETag: "e", Size: 1}}}).encode(), uint8(1))
	f.Add([]byte{'D', 1}, uint8(2))
	f.Add([]byte{'S', 1, 0, 0, 1}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		switch which % 4 {
		case 0:
			s, err := decodeShard(b)
			if err != nil {
				return
			}
			again, err := decodeShard(s.encode())
			if err != nil {
				t.Fatalf("re-encoded shard refused: %v", err)
			}
			if !bytes.Equal(again.encode(), s.encode()) {
				t.Fatal("shard changed through a round trip")
			}
		case 1:
			if e, err := decodeEntry(b); err == nil {
				if _, err := decodeEntry(e.encode()); err != nil {
					t.Fatalf("re-encoded entry refused: %v", err)
				}
				_ = e.latest()
			}
		case 2:
			if d, err := decodeDir(b); err == nil {
				if _, err := decodeDir(d.encode()); err != nil {
					t.Fatalf("re-encoded directory refused: %v", err)
				}
			}
		default:
			_, _ = decodeKeys(b)
		}
	})
}
