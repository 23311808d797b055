package seal

import (
	"bytes"
	"errors"
	"testing"

	"shoal/shared/dedup/policy"
)

func TestSealOpen(t *testing.T) {
	text := bytes.Repeat([]byte("compressible text, "), 4000)
	random := make([]byte, 70000)
	for i := range random {
		random[i] = byte(i*7919 ^ i>>3 ^ i>>11)
	}
	key := bytes.Repeat([]byte{9}, KeySize)
	zstd := policy.Compression{Algo: policy.Zstd, Level: 3}
	for _, c := range []struct {
		comp policy.Compression
		key  []byte
	}{{policy.Compression{}, nil}, {zstd, nil}, {policy.Compression{}, key}, {zstd, key}} {
		s, err := New(c.comp, c.key)
		if err != nil {
			t.Fatal(err)
		}
		for _, plain := range [][]byte{text, random, {1}} {
			stored, seed, compressed, err := s.Seal(nil, plain)
			if err != nil {
				t.Fatal(err)
			}
			if compressed && len(stored) > len(plain)-len(plain)/16+Overhead {
				t.Fatalf("kept a compression that saves too little: %d of %d", len(stored), len(plain))
			}
			if c.comp.Algo == policy.Zstd && len(plain) == len(text) && !compressed {
				t.Fatal("text not compressed")
			}
			if c.key == nil && !seed.IsZero() {
				t.Fatal("seed without encryption")
			}
			got, err := s.Open(nil, stored, seed, compressed, len(plain))
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("open: %v", err)
			}
			if c.key != nil {
				bad := bytes.Clone(stored)
				bad[0] ^= 1
				if _, err := s.Open(nil, bad, seed, compressed, len(plain)); !errors.Is(err, ErrAuth) {
					t.Fatalf("tampered chunk: %v", err)
				}
				seed[0] ^= 1
				if _, err := s.Open(nil, stored, seed, compressed, len(plain)); !errors.Is(err, ErrAuth) {
					t.Fatalf("wrong seed: %v", err)
				}
			}
			if _, err := s.Open(nil, stored, seed, compressed, len(plain)+1); err == nil {
				t.Fatal("wrong length accepted")
			}
		}
	}
	if _, err := New(policy.Compression{}, []byte("short")); !errors.Is(err, ErrKey) {
		t.Fatal(err)
	}
}

func TestDecompressionBombRefused(t *testing.T) {
	s, _ := New(policy.Compression{Algo: policy.Zstd, Level: 1}, nil)
	zeros := make([]byte, policy.MaxChunkSize)
	stored, _, compressed, _ := s.Seal(nil, zeros)
	if !compressed {
		t.Fatal("zeros not compressed")
	}
	// Claimed length is checked before and after decoding.
	if _, err := s.Open(nil, stored, [32]byte{}, true, 10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short claim: %v", err)
	}
	if _, err := s.Open(nil, stored, [32]byte{}, true, policy.MaxChunkSize+1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("oversized claim: %v", err)
	}
}

// A large chunk whose head does not compress is stored as it is, without
// compressing the rest; one that compresses is compressed whole, to exactly
// the bytes zstd makes of it in one go, so its address does not change.
func TestProbeBeforeCompressing(t *testing.T) {
	s, err := New(policy.Compression{Algo: policy.Zstd, Level: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	random := func(n int, seed uint64) []byte {
		b := make([]byte, n)
		x := seed
		for i := range b {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			b[i] = byte(x)
		}
		return b
	}
	text := bytes.Repeat([]byte("compressible text, 0123456789; "), (1<<20)/31)
	// A compressible head, random bytes, more text: compressed, whole.
	mixed := append(append(append([]byte(nil), text[:probeBytes]...), random(256<<10, 1)...), text[:512<<10]...)
	for _, plain := range [][]byte{text, mixed} {
		stored, _, compressed, err := s.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		if !compressed {
			t.Fatalf("%d bytes with a compressible head not compressed", len(plain))
		}
		if want := s.enc.EncodeAll(plain, nil); !bytes.Equal(stored, want) {
			t.Fatalf("%d bytes compressed to %d bytes, not zstd's own %d", len(plain), len(stored), len(want))
		}
	}
	// A random head: stored as is, even with a compressible tail.
	head := append(random(probeBytes, 2), text...)
	for _, plain := range [][]byte{random(1<<20, 3), head} {
		stored, _, compressed, err := s.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		if compressed || !bytes.Equal(stored, plain) {
			t.Fatalf("%d bytes with a random head: compressed %v, %d bytes stored", len(plain), compressed, len(stored))
		}
	}
	// Below the probed size the whole chunk decides, as before.
	small := append(random(probeBytes, 4), text[:minProbed-probeBytes-1]...)
	if _, _, compressed, err := s.Seal(nil, small); err != nil || !compressed {
		t.Fatalf("%d bytes, half text: compressed %v, %v", len(small), compressed, err)
	}
}
