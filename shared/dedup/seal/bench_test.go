package seal

import (
	"math/rand/v2"
	"testing"

	"shoal/shared/dedup/policy"
)

// BenchmarkSealRandom1MiB seals incompressible 1 MiB chunks (the size of
// erasure-coded chunks) under the default zstd level: the cost of finding
// out that compression does not pay.
func BenchmarkSealRandom1MiB(b *testing.B) {
	s, err := New(policy.Compression{Algo: policy.Zstd, Level: 3}, nil)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	plain := make([]byte, 1<<20)
	for i := range plain {
		plain[i] = byte(r.Uint32())
	}
	dst := make([]byte, 0, len(plain)+len(plain)/64+64)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		if _, _, compressed, err := s.Seal(dst, plain); err != nil || compressed {
			b.Fatalf("compressed %v, %v", compressed, err)
		}
	}
}
