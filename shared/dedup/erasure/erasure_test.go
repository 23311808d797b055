package erasure

import (
	"bytes"
	"errors"
	"testing"
)

func TestEncodeReconstruct(t *testing.T) {
	c, err := New(4, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 3, 4, 1000, 65537} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * 31)
		}
		shards, err := c.Encode(nil, data)
		if err != nil || len(shards) != 6 || len(shards[0]) != c.ShardSize(n) {
			t.Fatalf("%d: %d shards, %v", n, len(shards), err)
		}
		for a := range 6 {
			for b := a + 1; b < 6; b++ {
				s := make([][]byte, 6)
				for i := range s {
					if i != a && i != b {
						s[i] = bytes.Clone(shards[i])
					}
				}
				got, err := c.Reconstruct(nil, s, n, true)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%d bytes, lost %d,%d: %v", n, a, b, err)
				}
				if !bytes.Equal(s[a], shards[a]) || !bytes.Equal(s[b], shards[b]) {
					t.Fatalf("lost shards %d,%d not rebuilt", a, b)
				}
			}
		}
		s := [][]byte{nil, nil, nil, shards[3], shards[4], shards[5]}
		if _, err := c.Reconstruct(nil, s, n, false); !errors.Is(err, ErrTooFewShards) {
			t.Fatalf("3 lost: %v", err)
		}
	}
	if _, err := New(0, 2); !errors.Is(err, ErrParams) {
		t.Fatal(err)
	}
	if _, err := c.Encode(nil, nil); !errors.Is(err, ErrParams) {
		t.Fatal(err)
	}
}

// Encoding into a used buffer gives the same shards as into a new one (the
// padding is cleared, the parity rewritten) and keeps to the buffer.
func TestEncodeIntoUsedBuffer(t *testing.T) {
	c, err := New(4, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 5, 4097, 65537} {
		data := bytes.Repeat([]byte{7, 1, 3}, n)[:n]
		want, err := c.Encode(nil, data)
		if err != nil {
			t.Fatal(err)
		}
		dst := bytes.Repeat([]byte{0xff}, c.EncodedSize(n)+10)
		got, err := c.Encode(dst, data)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%d bytes: shard %d differs in a used buffer", n, i)
			}
		}
		if &got[0][0] != &dst[0] {
			t.Fatalf("%d bytes: shards not in the given buffer", n)
		}
	}
}
