package s3_test

import (
	"context"
	"sync"
	"testing"

	"shoal/services/s3"
	"shoal/services/s3/s3test"
)

// stableMeta hands out the same bytes for a block while its version is
// unchanged, as the cluster's value cache does (s3test.Meta copies them on
// every read).
type stableMeta struct {
	*s3test.Meta
	mu   sync.Mutex
	last map[[32]byte]stableValue
}

type stableValue struct {
	version uint64
	b       []byte
}

func (m *stableMeta) Get(ctx context.Context, a [32]byte) ([]byte, uint64, error) {
	b, v, err := m.Meta.Get(ctx, a)
	if err != nil {
		return nil, 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.last[a]; ok && l.version == v {
		return l.b, v, nil
	}
	m.last[a] = stableValue{v, b}
	return b, v, nil
}

// A value decoded by a reader is decoded once per version of its shard,
// and a change of the key or of its shard is never answered from the old
// decoding.
func TestGetDecodedOncePerShardVersion(t *testing.T) {
	ctx := context.Background()
	meta := &stableMeta{Meta: s3test.NewMeta(), last: map[[32]byte]stableValue{}}
	ix, err := s3.NewTestIndex(ctx, meta, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	ix.CacheShards()
	decodes := 0
	decode := func(b []byte) (any, error) {
		decodes++
		s := string(b)
		return &s, nil
	}
	get := func(k string) string {
		t.Helper()
		v, found, err := ix.GetDecoded(ctx, k, decode)
		if err != nil || !found {
			t.Fatalf("get %q: found %v, %v", k, found, err)
		}
		return *v.(*string)
	}
	if err := ix.Put(ctx, "k", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if got := get("k"); got != "one" {
		t.Fatalf("got %q, want one", got)
	}
	first, _, _ := ix.GetDecoded(ctx, "k", decode)
	if get("k") != "one" || decodes != 1 {
		t.Fatalf("%d decodes of an unchanged shard, want 1", decodes)
	}
	if again, _, _ := ix.GetDecoded(ctx, "k", decode); again != first {
		t.Fatal("a second read got another decoding")
	}
	if err := ix.Put(ctx, "k", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if got := get("k"); got != "two" {
		t.Fatalf("after an overwrite: got %q, want two", got)
	}
	// Another key's write is a new version of the shard: decoded afresh,
	// with the same answer.
	if err := ix.Put(ctx, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	before := decodes
	if got := get("k"); got != "two" || decodes != before+1 {
		t.Fatalf("after a write to its shard: got %q with %d new decodes, want two with 1", got, decodes-before)
	}
	if _, found, err := ix.GetDecoded(ctx, "missing", decode); found || err != nil {
		t.Fatalf("missing key: found %v, %v", found, err)
	}
}
