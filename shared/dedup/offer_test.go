package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"shoal/shared/block"
	"shoal/shared/dedup"
	"shoal/shared/dedup/chunker"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/memstore"
	"shoal/shared/dedup/policy"
	"shoal/shared/dedup/seal"
)

// cut is what an offering client does: cut with the policy's chunker and
// hash each chunk.
func cut(t *testing.T, p policy.Policy, data []byte) ([][]byte, []block.Address, []uint32) {
	t.Helper()
	c, err := dedup.NewCutter(p.Chunking)
	if err != nil {
		t.Fatal(err)
	}
	ch := chunker.New(bytes.NewReader(data), c)
	var chunks [][]byte
	var sums []block.Address
	var lens []uint32
	for {
		b, err := ch.Next()
		if errors.Is(err, io.EOF) {
			return chunks, sums, lens
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, append([]byte(nil), b...))
		sums = append(sums, block.Sum(b))
		lens = append(lens, uint32(len(b)))
	}
}

// offer writes data as an offering client would: offer every chunk, send
// the bytes of those not known (tamper may change them first). It returns
// the reference and how many chunks were sent.
func offer(t *testing.T, w *dedup.Writer, p policy.Policy, data []byte, tamper func(i int, b []byte) []byte) (manifest.Ref, int, error) {
	t.Helper()
	ctx := context.Background()
	chunks, sums, lens := cut(t, p, data)
	if err := dedup.CheckLengths(p.Chunking, lens, true); err != nil {
		t.Fatalf("the policy's own cut refused: %v", err)
	}
	known, err := w.Resolve(ctx, sums, lens)
	if err != nil {
		t.Fatal(err)
	}
	sent, i := 0, 0
	ref, _, err := w.WriteChunks(ctx, func() (dedup.Chunk, error) {
		if i == len(chunks) {
			return dedup.Chunk{}, io.EOF
		}
		defer func() { i++ }()
		if known[i] != nil {
			return dedup.Chunk{Known: known[i]}, nil
		}
		sent++
		b := chunks[i]
		if tamper != nil {
			b = tamper(i, b)
		}
		return dedup.Chunk{Plain: b, Sum: sums[i], Claimed: true}, nil
	}, nil)
	return ref, sent, err
}

// TestOfferedWrites: a stream offered by hash after it was written sends
// nothing and stores nothing, and its reference is the one a Write makes;
// an edited copy sends only the chunks the edit touched; a block the store
// lost is asked for again; bytes that do not match their offered hash are
// refused. Every policy shape: stored as is, compressed, encrypted,
// erasure-coded with and without compression.
func TestOfferedWrites(t *testing.T) {
	ctx := context.Background()
	for _, ps := range []string{"compress=none", "", "encrypt=on", "redundancy=ec:4+2", "redundancy=ec:4+2,compress=none"} {
		t.Run(ps, func(t *testing.T) {
			p := mustPolicy(t, ps)
			store := memstore.New()
			w, err := dedup.NewWriter(store, dedup.WriterConfig{Policy: p, VolumeKey: keyFor(p), Sealed: dedup.NewSealCache(1 << 20)})
			if err != nil {
				t.Fatal(err)
			}
			data := mixedData(1, 3<<20)
			chunks, _, _ := cut(t, p, data)

			// Unknown data: every chunk is sent.
			first, sent, err := offer(t, w, p, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			if sent != len(chunks) {
				t.Fatalf("first offer sent %d of %d chunks", sent, len(chunks))
			}
			direct, err := w.Write(ctx, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if first.Root != direct.Root || first.ETag != direct.ETag || first.Size != direct.Size {
				t.Fatalf("offered write made %x/%s/%d, Write %x/%s/%d", first.Root, first.ETagHex(), first.Size, direct.Root, direct.ETagHex(), direct.Size)
			}

			// Known data: nothing sent, nothing stored.
			before := store.Counts()
			again, sent, err := offer(t, w, p, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			after := store.Counts()
			ec := p.Redundancy.Mode == policy.Erasure
			if ec && p.Compression.Algo == policy.NoCompression {
				// Unsealed EC chunks have no cached shard addresses: the
				// bytes are needed to name the shards.
				if sent != len(chunks) {
					t.Fatalf("unsealed EC re-offer sent %d of %d chunks", sent, len(chunks))
				}
			} else {
				if sent != 0 {
					t.Fatalf("re-offer sent %d of %d chunks", sent, len(chunks))
				}
				// Manifest nodes are put again (the store dedupes them);
				// chunk bytes are not.
				if after.NewBlocks != before.NewBlocks || after.ShardBytes-before.ShardBytes > int64(len(data))/16 ||
					after.PutBytes-before.PutBytes > int64(len(data))/16 {
					t.Fatalf("re-offer stored: %+v → %+v", before, after)
				}
			}
			if again.Root != first.Root || again.ETag != first.ETag {
				t.Fatalf("re-offer made another reference")
			}
			r := newReader(t, store, dedup.ReaderConfig{VolumeKey: keyFor(p)})
			got, err := readRange(t, r, again, 0, -1)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes (%v), want %d equal", len(got), err, len(data))
			}

			// An edit in the middle: only the chunks around it are sent.
			edited := append([]byte(nil), data...)
			copy(edited[len(edited)/2:], "an edit in the middle of the stream")
			ref, sent, err := offer(t, w, p, edited, nil)
			if err != nil {
				t.Fatal(err)
			}
			unsealedEC := ec && p.Compression.Algo == policy.NoCompression
			if !unsealedEC && (sent == 0 || sent > 3) {
				t.Fatalf("an edit sent %d of %d chunks", sent, len(chunks))
			}
			if got, err := readRange(t, r, ref, 0, -1); err != nil || !bytes.Equal(got, edited) {
				t.Fatalf("edited stream read back wrong (%v)", err)
			}

			// Blocks the store lost are asked for, not trusted to the cache.
			if !ec {
				for a := range store.Addresses() {
					if err := store.Delete(ctx, a); err != nil {
						t.Fatal(err)
					}
				}
				ref, sent, err := offer(t, w, p, data, nil)
				if err != nil {
					t.Fatal(err)
				}
				if sent != len(chunks) {
					t.Fatalf("the store lost every block, and %d of %d chunks were asked for", sent, len(chunks))
				}
				if got, err := readRange(t, r, ref, 0, -1); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("after the loss, read back wrong (%v)", err)
				}
			}

			// A cold cache (a restart, another replica): a chunk stored as
			// is is still found by its plaintext hash, unless encrypted or
			// erasure-coded; compressed chunks are sent again.
			if !ec && !p.Encrypt {
				cold, err := dedup.NewWriter(store, dedup.WriterConfig{Policy: p, VolumeKey: keyFor(p), Sealed: dedup.NewSealCache(1 << 20)})
				if err != nil {
					t.Fatal(err)
				}
				ref, sent, err := offer(t, cold, p, data, nil)
				if err != nil {
					t.Fatal(err)
				}
				asIs := 0
				for _, c := range chunks {
					if sealed, _, compressed, err := mustSealer(t, p).Seal(nil, c); err == nil && !compressed && len(sealed) == len(c) {
						asIs++
					}
				}
				if asIs == 0 || sent != len(chunks)-asIs {
					t.Fatalf("cold cache: sent %d of %d chunks, %d of them stored as is", sent, len(chunks), asIs)
				}
				if got, err := readRange(t, r, ref, 0, -1); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("cold cache: read back wrong (%v)", err)
				}
			}

			// Bytes that do not match their offered hash are refused.
			_, _, err = offer(t, w, p, mixedData(2, 1<<20), func(i int, b []byte) []byte {
				if i != 0 {
					return b
				}
				b = append([]byte(nil), b...)
				b[0] ^= 1
				return b
			})
			if !errors.Is(err, dedup.ErrOffer) {
				t.Fatalf("tampered chunk: %v, want ErrOffer", err)
			}
		})
	}
}

// TestOfferLengths: lengths a policy's chunker cannot produce are refused.
func TestOfferLengths(t *testing.T) {
	fixed := mustPolicy(t, "chunk=fixed:64k").Chunking
	cdc := policy.Default().Chunking
	for _, tc := range []struct {
		name string
		c    policy.Chunking
		lens []uint32
		last bool
		ok   bool
	}{
		{"fixed exact", fixed, []uint32{64 << 10, 64 << 10, 5}, true, true},
		{"fixed short tail not last", fixed, []uint32{64 << 10, 5}, false, false},
		{"fixed short middle", fixed, []uint32{5, 64 << 10}, true, false},
		{"fixed too long", fixed, []uint32{64<<10 + 1}, true, false},
		{"zero", cdc, []uint32{0}, true, false},
		{"cdc in range", cdc, []uint32{uint32(cdc.Min), uint32(cdc.Max), 1}, true, true},
		{"cdc below min", cdc, []uint32{uint32(cdc.Min) - 1, 100}, true, false},
		{"cdc above max", cdc, []uint32{uint32(cdc.Max) + 1}, true, false},
	} {
		err := dedup.CheckLengths(tc.c, tc.lens, tc.last)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, dedup.ErrOffer) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	w, err := dedup.NewWriter(memstore.New(), dedup.WriterConfig{Policy: policy.Default()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Resolve(context.Background(), make([]block.Address, 2), []uint32{1}); !errors.Is(err, dedup.ErrOffer) {
		t.Fatalf("2 hashes, 1 length: %v", err)
	}
}

func mustSealer(t *testing.T, p policy.Policy) *seal.Sealer {
	t.Helper()
	s, err := seal.New(p.Compression, keyFor(p))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
