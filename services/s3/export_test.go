package s3

import (
	"context"
	"sort"
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
	return &index{meta: meta, dir: dir, splitBytes: splitBytes, cache: newDirCache(), splitting: &sync.Map{}, repairing: &sync.Map{}, bg: newBackground(), queues: newCommitQueues(meta)}, nil
}

// NewTestIndexDir is NewTestIndex with directory nodes that split above
// dirBytes.
func NewTestIndexDir(ctx context.Context, meta MetaStore, splitBytes, dirBytes int) (*Index, error) {
	ix, err := NewTestIndex(ctx, meta, splitBytes)
	if err == nil {
		ix.dirSplitBytes = dirBytes
	}
	return ix, err
}

// Reopen returns a second handle with its own directory cache, as another
// server would have.
func (ix *index) Reopen() *Index {
	return &index{meta: ix.meta, dir: ix.dir, splitBytes: ix.splitBytes, cache: newDirCache(), splitting: &sync.Map{}, repairing: &sync.Map{}, bg: newBackground(), dirSplitBytes: ix.dirSplitBytes, queues: newCommitQueues(ix.meta)}
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

// DirLevel is the level of the index's directory root (0: one level).
func (ix *index) DirLevel(ctx context.Context) (int, error) {
	d, _, err := ix.node(ctx, ix.dir, true)
	if err != nil {
		return 0, err
	}
	return d.level, nil
}

// Unlisted counts the shards the directory does not route their own low
// key to: each costs lookups in its range a right-link hop.
func (ix *index) Unlisted(ctx context.Context) (int, error) {
	n := 0
	err := ix.shards(ctx, func(a [32]byte, s *shard) error {
		got, _, err := ix.route(ctx, s.lo, true)
		if got != a {
			n++
		}
		return err
	})
	return n, err
}

// Unlist removes the directory entry listing a shard under k, as a split
// that stopped before publishing would leave it.
func (ix *index) Unlist(ctx context.Context, k string) error {
	path, _, err := ix.path(ctx, k, true, nil)
	if err != nil {
		return err
	}
	leaf := path[len(path)-1].addr
	_, err = ix.meta.Update(ctx, leaf, func(cur []byte) ([]byte, error) {
		d, err := decodeDir(cur)
		if err != nil {
			return nil, err
		}
		i := sort.SearchStrings(d.los, k)
		if i == 0 || i == len(d.los) || d.los[i] != k {
			return nil, errNoSplit // not listed, or the node's own first entry
		}
		d.los = append(d.los[:i], d.los[i+1:]...)
		d.addrs = append(d.addrs[:i], d.addrs[i+1:]...)
		return d.encode(), nil
	})
	ix.cache.drop(leaf)
	return err
}

// DecodeDirectory exposes the directory decoder to tests of bad input.
func DecodeDirectory(b []byte) error {
	_, err := decodeDir(b)
	return err
}

// EncodeDirectory encodes a directory node of the given level.
func EncodeDirectory(level int, los []string) []byte {
	d := &directory{level: level, los: los, addrs: make([][32]byte, len(los))}
	return d.encode()
}

// ShardLows lists the shards' low keys in order.
func (ix *index) ShardLows(ctx context.Context) ([]string, error) {
	var los []string
	err := ix.shards(ctx, func(_ [32]byte, s *shard) error { los = append(los, s.lo); return nil })
	return los, err
}

// Destroy deletes every block of the index.
func (ix *index) Destroy(ctx context.Context) error { return ix.destroy(ctx) }

// SetsFreeze reports whether b is a shard with a split's freeze on it.
func SetsFreeze(b []byte) bool {
	s, err := decodeShard(b)
	return err == nil && s.frozen != nil
}

// CacheShards makes the index keep decoded shards, as a server's do.
func (ix *index) CacheShards() *Index {
	ix.decoded = newShardCache()
	return ix
}

func (ix *index) GetDecoded(ctx context.Context, k string, decode func([]byte) (any, error)) (any, bool, error) {
	return ix.getDecoded(ctx, k, decode)
}
