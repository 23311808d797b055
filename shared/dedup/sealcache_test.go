package dedup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"shoal/shared/block"
	"shoal/shared/dedup/chunker"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/memstore"
	"shoal/shared/dedup/policy"
)

// TestSealCache: a re-write through a SealCache takes chunk addresses from
// it (proved by poisoning one), stores the same blocks, re-seals chunks the
// store no longer holds, and refuses to publish a cached address that the
// chunk does not seal to.
func TestSealCache(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		p := policy.Default() // zstd
		var key []byte
		if p.Encrypt = encrypt; encrypt {
			key = bytes.Repeat([]byte{9}, 32)
		}
		cache := NewSealCache(1 << 20)
		store := memstore.New()
		w, err := NewWriter(store, WriterConfig{Policy: p, VolumeKey: key, Sealed: cache})
		if err != nil {
			t.Fatal(err)
		}
		// Compressible, so sealed addresses differ from plaintext hashes.
		data := []byte(strings.Repeat("shoal seal cache test line ", 40000))
		ctx := context.Background()
		ref1, err := w.Write(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if cache.c.Bytes() == 0 {
			t.Fatal("nothing cached")
		}

		// The store lost every block: the re-write must re-seal and send
		// them all, and the result must read back.
		blocks := store.Addresses()
		for a := range blocks {
			_ = store.Delete(ctx, a)
		}
		ref2, err := w.Write(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if ref2 != ref1 {
			t.Fatalf("encrypt=%v: re-write gave another reference", encrypt)
		}
		if got := len(store.Addresses()); got != len(blocks) {
			t.Fatalf("encrypt=%v: %d blocks stored again, had %d", encrypt, got, len(blocks))
		}
		r, err := NewReader(store, ReaderConfig{VolumeKey: key})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := r.Read(ctx, ref2, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("encrypt=%v: read back %d bytes, %v", encrypt, len(back), err)
		}

		// Poison one entry: the write must notice when it seals the chunk
		// (the store does not hold the poisoned address) and fail.
		cut, err := w.cutter()
		if err != nil {
			t.Fatal(err)
		}
		first, err := chunker.New(bytes.NewReader(data), cut).Next()
		if err != nil {
			t.Fatal(err)
		}
		k := sealKey{w.id, block.Sum(first)}
		v, ok := cache.c.Get(k)
		if !ok {
			t.Fatal("first chunk not cached")
		}
		v.addr = block.Sum([]byte("not this chunk"))
		cache.c.Put(k, v, sealEntryBytes)
		if _, err := w.Write(ctx, bytes.NewReader(data)); err == nil || !strings.Contains(err.Error(), "cached as") {
			t.Fatalf("encrypt=%v: write with a poisoned cache: %v", encrypt, err)
		}
	}
}

// failingStore fails every Put after the first n.
type failingStore struct {
	*memstore.Store
	left atomic.Int32
}

func (s *failingStore) Put(ctx context.Context, data []byte) (block.Address, error) {
	if s.left.Add(-1) < 0 {
		return block.Address{}, errors.New("disk on fire")
	}
	return s.Store.Put(ctx, data)
}

// WritePublish publishes the reference only once the manifest is stored,
// reports it, and a write whose chunk puts fail after publishing says it
// published so the caller can undo it.
func TestWritePublish(t *testing.T) {
	ctx := context.Background()
	p := policy.Default()
	data := bytes.Repeat([]byte("publish me "), 200_000) // many chunks: a stored root
	store := memstore.New()
	w, err := NewWriter(store, WriterConfig{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	var seen manifest.Ref
	ref, published, err := w.WritePublish(ctx, bytes.NewReader(data), func(_ context.Context, r manifest.Ref) error {
		// Every manifest node is stored by now.
		if r.Inline == "" {
			if _, err := store.Get(ctx, r.Root); err != nil {
				return fmt.Errorf("root not stored when published: %w", err)
			}
		}
		seen = r
		return nil
	})
	if err != nil || !published || seen != ref {
		t.Fatalf("published=%v err=%v, published ref equal: %v", published, err, seen == ref)
	}

	// A publish that fails fails the write.
	if _, published, err := w.WritePublish(ctx, bytes.NewReader(data), func(context.Context, manifest.Ref) error {
		return errors.New("no root for you")
	}); err == nil || published {
		t.Fatalf("failed publish: published=%v err=%v", published, err)
	}

	// Chunk puts failing: the write fails, and says whether it published.
	fs := &failingStore{Store: memstore.New()}
	fs.left.Store(3)
	fw, err := NewWriter(fs, WriterConfig{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	_, published, err = fw.WritePublish(ctx, bytes.NewReader(data), func(context.Context, manifest.Ref) error {
		calls.Add(1)
		return nil
	})
	if err == nil {
		t.Fatal("a write whose puts failed succeeded")
	}
	if published != (calls.Load() == 1) {
		t.Fatalf("published=%v but publish ran %d times", published, calls.Load())
	}
}
