package s3_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/services/s3"
	"shoal/services/s3/s3test"
)

// longKey is a key of ~200 bytes, so directory entries are large.
func longKey(i, w int) string {
	return fmt.Sprintf("%s/%06d-%d", strings.Repeat("deep/path/", 19), i, w)
}

// The directory grows levels as the shards multiply, every key stays
// found, and a cold lookup reads one block per level plus the shard.
func TestDirectoryGrowsLevels(t *testing.T) {
	ctx := context.Background()
	meta := s3test.NewMeta()
	ix, err := s3.NewTestIndexDir(ctx, meta, 2048, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := 0; i < n; i++ {
		if err := ix.Put(ctx, longKey(i, 0), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	level, err := ix.DirLevel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shards, err := ix.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d keys, %d shards, directory root at level %d", n, shards, level)
	if level < 2 {
		t.Fatalf("directory root at level %d over %d shards; it never grew", level, shards)
	}
	// One writer, no races: every shard is listed.
	if missing, err := ix.Unlisted(ctx); err != nil || missing != 0 {
		t.Fatalf("%d of %d shards unlisted (%v)", missing, shards, err)
	}
	if max := meta.MaxSize.Load(); max > 4096 {
		t.Fatalf("a block grew to %d bytes (shards split at 2 KiB, directory nodes at 2 KiB)", max)
	}
	cold := ix.Reopen()
	for _, i := range []int{0, 1, n / 3, n / 2, n - 2, n - 1} {
		before := meta.Gets.Load()
		v, ok, err := cold.Get(ctx, longKey(i, 0))
		if err != nil || !ok || string(v) != "v" {
			t.Fatalf("get %d: %q %v %v", i, v, ok, err)
		}
		if reads := meta.Gets.Load() - before; reads > int64(level)+2 {
			t.Fatalf("get %d read %d blocks with a %d-level directory", i, reads, level+1)
		}
	}
	keys, _, trunc, err := cold.List(ctx, "", "", "", 1<<30)
	if err != nil || trunc || len(keys) != n || !slices.IsSorted(keys) {
		t.Fatalf("list: %d keys, truncated %v, sorted %v, %v", len(keys), trunc, slices.IsSorted(keys), err)
	}
	// Deleting the bucket's index removes every block: shards, directory
	// nodes and root.
	if err := cold.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if left := meta.Blocks(); left != 0 {
		t.Fatalf("%d blocks left after destroy", left)
	}
}

// Servers with their own directory caches split shards and directory
// nodes under each other without losing a key; a lookup that has to follow
// a right link lists the shard again, so after one read of every key the
// directory is complete.
func TestDirectoryConcurrentSplits(t *testing.T) {
	ctx := context.Background()
	meta := s3test.NewMeta()
	a, err := s3.NewTestIndexDir(ctx, meta, 2048, 2048)
	if err != nil {
		t.Fatal(err)
	}
	handles := []*s3.Index{a, a.Reopen(), a.Reopen(), a.Reopen()}
	const per = 600
	putConcurrently(t, handles, per, longKey, []byte("v"))
	reader := a.Reopen()
	keys, _, trunc, err := reader.List(ctx, "", "", "", 1<<30)
	if err != nil || trunc || len(keys) != per*len(handles) || !slices.IsSorted(keys) {
		t.Fatalf("list: %d keys, truncated %v, sorted %v, %v", len(keys), trunc, slices.IsSorted(keys), err)
	}
	if level, err := reader.DirLevel(ctx); err != nil || level < 1 {
		t.Fatalf("directory level %d (%v)", level, err)
	}
	if missing, err := reader.Unlisted(ctx); err == nil {
		t.Logf("%d shards unlisted before reads", missing)
	}
	// Repairs run in the background; read until none is missing (bounded).
	waitListed(t, reader, 20*time.Second, func() {
		for _, k := range keys {
			if _, ok, err := reader.Get(ctx, k); err != nil || !ok {
				t.Fatalf("get %q: %v %v", k, ok, err)
			}
		}
	})
}

// waitListed runs each (lookups that trigger repairs) and then checks the
// directory, until every shard is listed or timeout passes; repairs land
// in the background.
func waitListed(t *testing.T, ix *s3.Index, timeout time.Duration, each func()) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		each()
		missing, err := ix.Unlisted(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d shards still unlisted after repairs", missing)
		}
		time.Sleep(10 * time.Millisecond) // let the background repairs land
	}
}

// A shard missing from the directory (a split that stopped before listing
// it) is found through right links and listed again by the lookup.
func TestDirectoryRepair(t *testing.T) {
	ctx := context.Background()
	meta := s3test.NewMeta()
	ix, err := s3.NewTestIndexDir(ctx, meta, 2048, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if err := ix.Put(ctx, longKey(i, 0), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	los, err := ix.ShardLows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for _, lo := range los[len(los)/2:] {
		if err := ix.Unlist(ctx, lo); err == nil {
			victim = lo
			break
		}
	}
	if victim == "" {
		t.Fatal("no shard could be unlisted")
	}
	if missing, err := ix.Unlisted(ctx); err != nil || missing != 1 {
		t.Fatalf("%d shards unlisted after removing one (%v)", missing, err)
	}
	if _, ok, err := ix.Get(ctx, victim); err != nil || !ok {
		t.Fatalf("get %q through a right link: %v %v", victim, ok, err)
	}
	waitListed(t, ix, 10*time.Second, func() {})
}

// Directory blocks that are truncated or malformed are refused with an
// error, never a panic; the one-level format stays what it was.
func TestDirectoryBadInput(t *testing.T) {
	flat := s3.EncodeDirectory(0, []string{"", "b", "c"})
	if flat[0] != 'D' || flat[1] != 1 {
		t.Fatalf("a one-level directory is encoded as version %d", flat[1])
	}
	if err := s3.DecodeDirectory(flat); err != nil {
		t.Fatal(err)
	}
	deep := s3.EncodeDirectory(2, []string{"", "m"})
	if err := s3.DecodeDirectory(deep); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{flat, deep} {
		for i := 0; i < len(b); i++ {
			if err := s3.DecodeDirectory(b[:i]); err == nil {
				t.Fatalf("a %d-byte prefix of %d decoded", i, len(b))
			}
		}
	}
	for name, b := range map[string][]byte{
		"unsorted":   s3.EncodeDirectory(1, []string{"", "z", "a"}),
		"level 0 v2": {'D', 2, 0, 1, 0},
		"level 99":   {'D', 2, 99, 1, 0},
		"version 3":  {'D', 3, 1, 0},
		"empty":      s3.EncodeDirectory(1, nil),
	} {
		if err := s3.DecodeDirectory(b); err == nil {
			t.Fatalf("%s: decoded (%v)", name, err)
		}
	}
}

// lyingMeta applies a third of the updates (chosen by a seeded generator)
// and then reports them failed, as a Paxos round whose outcome is
// uncertain does. Freezes are spared: one
// reported failed holds its half of the shard for freezeFor (2 s), which is
// the design, but would make the test slow.
type lyingMeta struct {
	*s3test.Meta
	mu  sync.Mutex
	rng *rand.Rand
}

var errUncertain = errors.New("test: outcome uncertain")

func (m *lyingMeta) Update(ctx context.Context, a [32]byte, fn func([]byte) ([]byte, error)) (uint64, error) {
	var out []byte
	v, err := m.Meta.Update(ctx, a, func(cur []byte) ([]byte, error) {
		b, err := fn(cur)
		out = b
		return b, err
	})
	if err != nil || s3.SetsFreeze(out) {
		return v, err
	}
	m.mu.Lock()
	lie := m.rng.IntN(3) == 0
	m.mu.Unlock()
	if lie {
		return 0, errUncertain
	}
	return v, err
}

// A split or directory change whose write is reported failed may still have
// landed: the block it links must not be deleted then, or the keys behind
// it become unreachable. Every acknowledged key stays found and listed.
func TestUncertainSplitsLoseNothing(t *testing.T) {
	ctx := context.Background()
	meta := &lyingMeta{Meta: s3test.NewMeta(), rng: rand.New(rand.NewPCG(1, 2))}
	ix, err := s3.NewTestIndexDir(ctx, meta, 2048, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var acked []string
	for i := 0; i < 2000; i++ {
		k := longKey(i, 0)
		if err := ix.Put(ctx, k, []byte("v")); err == nil {
			acked = append(acked, k)
		} else if !errors.Is(err, errUncertain) {
			t.Fatal(err)
		}
	}
	if len(acked) < 1000 {
		t.Fatalf("only %d of 2000 puts acknowledged", len(acked))
	}
	reader := ix.Reopen()
	for _, k := range acked {
		if _, ok, err := reader.Get(ctx, k); err != nil || !ok {
			t.Fatalf("acknowledged key %q: found %v, %v", k, ok, err)
		}
	}
	keys, _, _, err := reader.List(ctx, "", "", "", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, k := range keys {
		listed[k] = true
	}
	for _, k := range acked {
		if !listed[k] {
			t.Fatalf("acknowledged key %q not listed (%d listed)", k, len(keys))
		}
	}
}
