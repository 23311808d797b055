package dedup

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/memstore"
	"shoal/shared/dedup/policy"
)

// noShardChecker hides memstore's HasShards: a store that cannot say
// where shards are.
type noShardChecker struct{ *memstore.Store }

func (noShardChecker) HasShards() {} // not the interface's signature

// TestECRewrite: re-writing erasure-coded data that is stored sends no
// shard when the store can say they are there (with or without the seal
// cache), sends exactly the shards it lost, and sends them all to a store
// that cannot say. Every result reads back.
func TestECRewrite(t *testing.T) {
	ctx := context.Background()
	p := policy.Default() // zstd
	p.Redundancy = policy.Redundancy{Mode: policy.Erasure, Data: 4, Parity: 2}
	// Incompressible, so every chunk is stored larger than askMin: a first
	// batch of one small chunk is sent without asking, whatever is stored.
	data := make([]byte, 2<<20)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(data)

	readBack := func(t *testing.T, store BlockStore, ref manifest.Ref) {
		t.Helper()
		r, err := NewReader(store, ReaderConfig{})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := r.Read(ctx, ref, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("read back %d of %d bytes: %v", len(back), len(data), err)
		}
	}

	for _, cached := range []bool{false, true} {
		store := memstore.New()
		cfg := WriterConfig{Policy: p}
		if cached {
			cfg.Sealed = NewSealCache(1 << 20)
		}
		w, err := NewWriter(store, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ref1, err := w.Write(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		first := store.Counts().ShardPuts
		if first == 0 {
			t.Fatal("no shards stored")
		}

		// rewrite writes data again and returns the shards it sent.
		rewrite := func() int64 {
			t.Helper()
			before := store.Counts().ShardPuts
			ref, err := w.Write(ctx, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if ref != ref1 {
				t.Fatalf("cached=%v: re-write gave another reference", cached)
			}
			return store.Counts().ShardPuts - before
		}
		if n := rewrite(); n != 0 {
			t.Fatalf("cached=%v: re-write of stored data sent %d shards", cached, n)
		}
		if store.Counts().HasShard == 0 {
			t.Fatalf("cached=%v: the store was not asked", cached)
		}

		// Lose two shards of one stripe and one of another: exactly those
		// three are sent again.
		stripes := store.Stripes()
		if len(stripes) < 2 {
			t.Fatalf("only %d stripes", len(stripes))
		}
		store.DropShard(stripes[0], 1)
		store.DropShard(stripes[0], 5)
		if !store.CorruptShard(stripes[1], 0) {
			t.Fatal("no shard to corrupt")
		}
		if n := rewrite(); n != 3 {
			t.Fatalf("cached=%v: %d shards sent again, want the 3 lost", cached, n)
		}
		for _, s := range []struct {
			stripe block.Address
			rank   int
		}{{stripes[0], 1}, {stripes[0], 5}, {stripes[1], 0}} {
			if _, ok := store.Shard(s.stripe, s.rank); !ok {
				t.Fatalf("cached=%v: shard %d of %s not restored", cached, s.rank, s.stripe)
			}
		}
		// Every shard is back whole: reading with two nodes' worth of
		// shards gone still works only if the rest are intact.
		store.DropRank(2)
		store.DropRank(3)
		readBack(t, store, ref1)
	}

	// A store that cannot say gets every shard again.
	store := noShardChecker{memstore.New()}
	w, err := NewWriter(store, WriterConfig{Policy: p, Sealed: NewSealCache(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(ctx, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	first := store.Counts().ShardPuts
	ref, err := w.Write(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if n := store.Counts().ShardPuts - first; n != first {
		t.Fatalf("re-write to a store without HasShards sent %d shards, want all %d", n, first)
	}
	readBack(t, store, ref)
}
