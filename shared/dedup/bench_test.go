package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/build"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"shoal/shared/block"
	"shoal/shared/dedup"
	"shoal/shared/dedup/chunker"
	"shoal/shared/dedup/policy"
	"shoal/shared/dedup/seal"
)

// benchChunkSeal measures one core doing what a Writer worker does per
// chunk: chunk, seal, hash.
func benchChunkSeal(b *testing.B, data []byte, comp policy.Compression, key []byte) {
	s, err := seal.New(comp, key)
	if err != nil {
		b.Fatal(err)
	}
	cut, _ := chunker.NewFastCDC(16<<10, 64<<10, 256<<10)
	dst := make([]byte, 0, 300<<10)
	var stored int64
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		stored = 0
		ch := chunker.New(bytes.NewReader(data), cut)
		for {
			c, err := ch.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			out, _, _, err := s.Seal(dst, c)
			if err != nil {
				b.Fatal(err)
			}
			block.Sum(out)
			stored += int64(len(out))
		}
	}
	b.ReportMetric(float64(len(data))/float64(stored), "ratio")
}

func BenchmarkChunkHashOneCore(b *testing.B) {
	benchChunkSeal(b, randData(1, 64<<20), policy.Compression{}, nil)
}

// goSource is real compressible text: the Go tree's own sources, repeated
// up to n bytes if the tree is small.
func goSource(b *testing.B, n int) []byte {
	var out []byte
	root := filepath.Join(build.Default.GOROOT, "src")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || len(out) >= n {
			return fs.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			data, err := os.ReadFile(path)
			if err == nil {
				out = append(out, data...)
			}
		}
		return nil
	})
	if len(out) == 0 {
		b.Skipf("no Go sources under %s: %v", root, err)
	}
	for len(out) < n {
		out = append(out, out...)
	}
	return out[:n]
}

func BenchmarkChunkZstdHashTextOneCore(b *testing.B) {
	for _, level := range []int{1, 3} {
		b.Run(fmt.Sprintf("zstd%d", level), func(b *testing.B) {
			benchChunkSeal(b, goSource(b, 64<<20), policy.Compression{Algo: policy.Zstd, Level: level}, nil)
		})
	}
}

// BenchmarkZstdTextOneCore is the baseline for the zstd rows: the same
// chunks, only compressed (cut beforehand, no hashing).
func BenchmarkZstdTextOneCore(b *testing.B) {
	data := goSource(b, 64<<20)
	cut, _ := chunker.NewFastCDC(16<<10, 64<<10, 256<<10)
	var chunks [][]byte
	for rest := data; len(rest) > 0; {
		n := cut.Cut(rest)
		chunks, rest = append(chunks, rest[:n]), rest[n:]
	}
	for _, level := range []int{1, 3} {
		b.Run(fmt.Sprintf("zstd%d", level), func(b *testing.B) {
			s, err := seal.New(policy.Compression{Algo: policy.Zstd, Level: level}, nil)
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, 0, 300<<10)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				for _, c := range chunks {
					if _, _, _, err := s.Seal(dst, c); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func BenchmarkChunkZstdHashRandomOneCore(b *testing.B) {
	benchChunkSeal(b, randData(1, 64<<20), policy.Compression{Algo: policy.Zstd, Level: 3}, nil)
}

func BenchmarkChunkEncryptHashOneCore(b *testing.B) {
	benchChunkSeal(b, randData(1, 64<<20), policy.Compression{}, testKey)
}

// BenchmarkWrite runs the whole pipeline (MD5, Has, Put, manifest) against
// a store that hashes and discards, using every core.
func BenchmarkWrite(b *testing.B) {
	for _, c := range []struct {
		name string
		pol  string
		data []byte
	}{
		{"cdc-none-random", "chunk=cdc:16k/64k/256k,compress=none", randData(2, 128<<20)},
		{"cdc-zstd3-text", "chunk=cdc:16k/64k/256k,compress=zstd:3", textData(2, 128<<20)},
		{"cdc-zstd3-encrypt-text", "chunk=cdc:16k/64k/256k,compress=zstd:3,encrypt=on", textData(2, 128<<20)},
		{"fixed64k-ec4+2-random", "chunk=fixed:64k,compress=none,redundancy=ec:4+2", randData(2, 128<<20)},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := mustPolicy(b, c.pol)
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				store := newCountStore()
				w, err := dedup.NewWriter(store, dedup.WriterConfig{Policy: p, VolumeKey: keyFor(p)})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := w.Write(context.Background(), bytes.NewReader(c.data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
