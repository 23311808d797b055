package dedup_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
)

var words = []string{"the", "block", "store", "shoal", "chunk", "manifest", "of", "a", "replica",
	"and", "node", "volume", "erasure", "parity", "data", "is", "to", "in", "write", "read",
	"cluster", "placement", "zone", "heal", "scrub", "quorum", "paxos", "immutable", "hash"}

// textData is compressible, word-like text.
func textData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteString(".\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// randData is incompressible.
func randData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 9))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// mixedData alternates text and random runs so both compression paths run.
func mixedData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 11))
	out := make([]byte, 0, n)
	for len(out) < n {
		run := min(1+r.IntN(96<<10), n-len(out))
		if r.IntN(2) == 0 {
			out = append(out, textData(r.Uint64(), run)...)
		} else {
			out = append(out, randData(r.Uint64(), run)...)
		}
	}
	return out
}

func mustPolicy(t testing.TB, s string) policy.Policy {
	t.Helper()
	p, err := policy.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var testKey = bytes.Repeat([]byte{0x42}, 32)

func keyFor(p policy.Policy) []byte {
	if p.Encrypt {
		return testKey
	}
	return nil
}

func write(t testing.TB, store dedup.BlockStore, p policy.Policy, key []byte, data []byte) manifest.Ref {
	t.Helper()
	w, err := dedup.NewWriter(store, dedup.WriterConfig{Policy: p, VolumeKey: key})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := w.Write(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if ref.Size != int64(len(data)) {
		t.Fatalf("ref size %d, wrote %d", ref.Size, len(data))
	}
	if d, err := dedup.Digest(p.Chunking, bytes.NewReader(data)); err != nil || ref.ETag != d {
		t.Fatalf("etag %s is not the stream's digest %x (%v)", ref.ETagHex(), d, err)
	}
	return ref
}

func readRange(t testing.TB, r *dedup.Reader, ref manifest.Ref, off, n int64) ([]byte, error) {
	t.Helper()
	rc, err := r.Read(context.Background(), ref, off, n)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	return io.ReadAll(rc)
}

func newReader(t testing.TB, store dedup.BlockStore, cfg dedup.ReaderConfig) *dedup.Reader {
	t.Helper()
	r, err := dedup.NewReader(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
