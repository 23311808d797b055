package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/memstore"
)

// A block device's life: a stream of zeros, then rounds of random whole-chunk
// writes and trims, each round a patch of the last reference. Every round
// must read back as the model, and the final tree alone must keep every
// block it needs (what the collector relies on).
func TestPatch(t *testing.T) {
	const cs = 4 << 10
	size := int64(12 << 20) // 3072 chunks: several leaves, depth 1
	for _, ps := range []string{
		"chunk=fixed:4k,compress=none",
		"chunk=fixed:4k,compress=zstd,encrypt=on",
		"chunk=fixed:4k,compress=none,redundancy=ec:2+1",
	} {
		t.Run(ps, func(t *testing.T) {
			ctx := context.Background()
			p := mustPolicy(t, ps)
			key := keyFor(p)
			store := memstore.New()
			w, err := dedup.NewWriter(store, dedup.WriterConfig{Policy: p, VolumeKey: key})
			if err != nil {
				t.Fatal(err)
			}
			r := newReader(t, store, dedup.ReaderConfig{VolumeKey: key})
			ref, err := w.Zeros(ctx, size)
			if err != nil {
				t.Fatal(err)
			}
			model := make([]byte, size)
			if d, _ := dedup.Digest(p.Chunking, bytes.NewReader(model)); ref.ETag != d || ref.Depth != 1 {
				t.Fatalf("zeros: etag %s (want %x), depth %d", ref.ETagHex(), d, ref.Depth)
			}
			// One chunk and a handful of nodes, not 3072 chunks.
			if n := len(store.Addresses()); n > 10 {
				t.Fatalf("a zero stream stored %d blocks", n)
			}
			check := func(round int) {
				t.Helper()
				got, err := readRange(t, r, ref, 0, -1)
				if err != nil || !bytes.Equal(got, model) {
					t.Fatalf("round %d: whole read differs (%v)", round, err)
				}
				st, err := r.Stat(ctx, ref)
				if err != nil || st.Size != size || st.Chunks != size/cs || st.Unique > st.Physical {
					t.Fatalf("round %d: stat %+v, %v", round, st, err)
				}
			}
			rnd := rand.New(rand.NewPCG(1, 2))
			for round := range 12 {
				var ext []dedup.Extent
				for range 1 + rnd.IntN(20) {
					n := int64(1+rnd.IntN(8)) * cs
					off := rnd.Int64N((size-n)/cs+1) * cs
					if rnd.IntN(4) == 0 {
						ext = append(ext, dedup.Extent{Off: off, Length: n})
						clear(model[off : off+n])
						continue
					}
					d := randData(rnd.Uint64(), int(n))
					ext = append(ext, dedup.Extent{Off: off, Data: d})
					copy(model[off:], d)
				}
				next, err := w.Patch(ctx, r, ref, ext)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if next.Depth != ref.Depth || next.Size != size {
					t.Fatalf("round %d: depth %d size %d", round, next.Depth, next.Size)
				}
				ref = next
				check(round)
			}
			if _, err := r.Verify(ctx, ref); err != nil {
				t.Fatalf("verify: %v", err)
			}
			// Sweep everything the last reference does not reach: a fresh
			// reader (no cached nodes) must still read it.
			keep, err := r.Reachable(ctx, []manifest.Ref{ref})
			if err != nil {
				t.Fatal(err)
			}
			swept := 0
			for a := range store.Addresses() {
				if _, ok := keep[a]; !ok {
					_ = store.Delete(ctx, a)
					swept++
				}
			}
			if swept == 0 {
				t.Fatal("older versions left nothing to sweep")
			}
			r = newReader(t, store, dedup.ReaderConfig{VolumeKey: key})
			check(-1)
		})
	}
}

func TestPatchRefusals(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	p := mustPolicy(t, "chunk=fixed:4k,compress=none")
	w, _ := dedup.NewWriter(store, dedup.WriterConfig{Policy: p})
	r := newReader(t, store, dedup.ReaderConfig{})
	ref, err := w.Zeros(ctx, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	for name, ext := range map[string]dedup.Extent{
		"unaligned offset": {Off: 100, Data: make([]byte, 4096)},
		"unaligned length": {Off: 0, Data: make([]byte, 100)},
		"beyond the end":   {Off: 60 << 10, Data: make([]byte, 8192)},
		"negative":         {Off: -4096, Length: 4096},
	} {
		if _, err := w.Patch(ctx, r, ref, []dedup.Extent{ext}); !errors.Is(err, dedup.ErrPatch) {
			t.Errorf("%s: %v, want ErrPatch", name, err)
		}
	}
	if _, err := w.Zeros(ctx, 5000); !errors.Is(err, dedup.ErrPatch) {
		t.Errorf("zeros of a partial chunk: %v", err)
	}
	cdc, _ := dedup.NewWriter(store, dedup.WriterConfig{Policy: mustPolicy(t, "chunk=cdc:4k/16k/64k")})
	if _, err := cdc.Zeros(ctx, 64<<10); !errors.Is(err, dedup.ErrPatch) {
		t.Errorf("zeros under CDC: %v", err)
	}
	other, _ := dedup.NewWriter(store, dedup.WriterConfig{Policy: mustPolicy(t, "chunk=fixed:8k,compress=none")})
	if _, err := other.Patch(ctx, r, ref, []dedup.Extent{{Off: 0, Data: make([]byte, 8192)}}); !errors.Is(err, dedup.ErrPatch) {
		t.Errorf("patch under another policy: %v", err)
	}
	// A one-chunk stream has an inline root; patching keeps it readable.
	small, _ := w.Zeros(ctx, 4096)
	data := randData(3, 4096)
	next, err := w.Patch(ctx, r, small, []dedup.Extent{{Off: 0, Data: data}})
	if err != nil || next.Inline == "" {
		t.Fatalf("one-chunk patch: inline %d bytes, %v", len(next.Inline), err)
	}
	if got, err := readRange(t, r, next, 0, -1); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("one-chunk patch reads %v", err)
	}
}
