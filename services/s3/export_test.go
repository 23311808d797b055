package s3

import (
	"context"
	"sync"
	"time"
)

// Hooks for the external tests (package s3_test), which can import s3test
// without an import cycle.

// Index exposes the bucket index to tests.
type Index = index

// NewTestIndex creates an empty index with the given split size.
func NewTestIndex(ctx context.Context, meta MetaStore, splitBytes int) (*Index, error) {
	dir, err := createIndex(ctx, meta)
	if err != nil {
		return nil, err
	}
	return &index{meta: meta, dir: dir, splitBytes: splitBytes, cache: newDirCache(), splitting: &sync.Map{}, queues: newCommitQueues(meta)}, nil
}

// Reopen returns a second handle with its own directory cache, as another
// server would have.
func (ix *index) Reopen() *Index {
	return &index{meta: ix.meta, dir: ix.dir, splitBytes: ix.splitBytes, cache: newDirCache(), splitting: &sync.Map{}, queues: newCommitQueues(ix.meta)}
}

func (ix *index) Put(ctx context.Context, k string, v []byte) error {
	return ix.update(ctx, k, func([]byte, bool) ([]byte, bool, error) { return v, true, nil })
}

func (ix *index) Remove(ctx context.Context, k string) error {
	return ix.update(ctx, k, func([]byte, bool) ([]byte, bool, error) { return nil, false, nil })
}

func (ix *index) Get(ctx context.Context, k string) ([]byte, bool, error) { return ix.get(ctx, k) }

// List runs the listing engine with V1 semantics (exclusive marker).
func (ix *index) List(ctx context.Context, prefix, delim, marker string, maxKeys int) (keys, prefixes []string, truncated bool, err error) {
	l, err := list(ctx, ix, listSpec{prefix: prefix, delimiter: delim, start: afterMarker(marker, prefix, delim),
		max: maxKeys, count: func(string, []byte) (int, error) { return 1, nil }})
	if err != nil {
		return nil, nil, false, err
	}
	for _, it := range l.items {
		if it.prefix != "" {
			prefixes = append(prefixes, it.prefix)
			keys = append(keys, it.prefix)
		} else {
			keys = append(keys, it.key)
		}
	}
	return keys, prefixes, l.truncated, nil
}

// Shards counts the shards reachable through right links.
func (ix *index) Shards(ctx context.Context) (int, error) {
	n := 0
	err := ix.shards(ctx, func([32]byte, *shard) error { n++; return nil })
	return n, err
}

// SetClock replaces the server's clock.
func (s *Server) SetClock(now func() time.Time) { s.now = now }

// ReopenSplitting is Reopen with another split size.
func (ix *index) ReopenSplitting(splitBytes int) *Index {
	o := ix.Reopen()
	o.splitBytes = splitBytes
	return o
}

// Update exposes index.update with the caller's function.
func (ix *index) Update(ctx context.Context, k string, fn func(cur []byte, found bool) ([]byte, bool, error)) error {
	return ix.update(ctx, k, fn)
}

// QueuedWrites counts the writes waiting in ix's commit queues (not those
// in a round being applied).
func (ix *index) QueuedWrites() int { return ix.queues.Queued() }
