// Package memstore is an in-memory dedup.BlockStore for tests only: it
// counts calls and bytes, and can lose or corrupt blocks and shards on
// demand. It is not a cache and not for production use.
package memstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"shoal/shared/block"
)

type shardKey struct {
	stripe block.Address
	rank   int
}

// Store holds blocks in maps. Get and GetShard return stored bytes without
// verifying them, so tests can see the dedup tier's own checks work.
type Store struct {
	mu     sync.Mutex
	blocks map[block.Address][]byte
	shards map[shardKey][]byte
	n      Counts
}

// Counts are the calls and bytes a Store has seen.
type Counts struct {
	Puts, PutBytes           int64 // every Put call and its bytes
	NewBlocks, NewBytes      int64 // Puts that stored something new
	ShardPuts, ShardBytes    int64 // every PutShard
	Gets, ShardGets, HasAddr int64
	HasShard                 int64 // shards asked about by HasShards
}

// New returns an empty Store.
func New() *Store {
	return &Store{blocks: map[block.Address][]byte{}, shards: map[shardKey][]byte{}}
}

// Put implements dedup.BlockStore.
func (s *Store) Put(ctx context.Context, data []byte) (block.Address, error) {
	if err := ctx.Err(); err != nil {
		return block.Address{}, err
	}
	if len(data) > block.DefaultMaxSize+64 {
		return block.Address{}, block.ErrTooLarge
	}
	a := block.Sum(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.Puts++
	s.n.PutBytes += int64(len(data))
	if _, ok := s.blocks[a]; !ok {
		s.n.NewBlocks++
		s.n.NewBytes += int64(len(data))
	}
	s.blocks[a] = append([]byte(nil), data...)
	return a, nil
}

// Get implements dedup.BlockStore.
func (s *Store) Get(ctx context.Context, a block.Address) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.Gets++
	b, ok := s.blocks[a]
	if !ok {
		return nil, block.ErrNotFound
	}
	// As the dht client does: the reader relies on it.
	if block.Sum(b) != a {
		return nil, fmt.Errorf("%w: memstore %s", block.ErrHashMismatch, a)
	}
	return append([]byte(nil), b...), nil
}

// Has implements dedup.BlockStore.
func (s *Store) Has(ctx context.Context, addrs []block.Address) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.HasAddr += int64(len(addrs))
	out := make([]bool, len(addrs))
	for i, a := range addrs {
		_, out[i] = s.blocks[a]
	}
	return out, nil
}

// PutShard implements dedup.BlockStore.
func (s *Store) PutShard(ctx context.Context, stripe block.Address, rank int, data []byte) (block.Address, error) {
	if err := ctx.Err(); err != nil {
		return block.Address{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.ShardPuts++
	s.n.ShardBytes += int64(len(data))
	s.shards[shardKey{stripe, rank}] = append([]byte(nil), data...)
	return block.Sum(data), nil
}

// HasShards implements dedup.ShardChecker: a shard is present when the
// (stripe, rank) slot holds bytes hashing to its address.
func (s *Store) HasShards(ctx context.Context, stripes []block.Address, shards [][]block.Address) ([][]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]bool, len(stripes))
	for i, stripe := range stripes {
		out[i] = make([]bool, len(shards[i]))
		for rank, a := range shards[i] {
			s.n.HasShard++
			b, ok := s.shards[shardKey{stripe, rank}]
			out[i][rank] = ok && block.Sum(b) == a
		}
	}
	return out, nil
}

// GetShard implements dedup.BlockStore.
func (s *Store) GetShard(ctx context.Context, stripe block.Address, rank int, addr block.Address) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.ShardGets++
	b, ok := s.shards[shardKey{stripe, rank}]
	if !ok {
		return nil, block.ErrNotFound
	}
	if block.Sum(b) != addr {
		return nil, fmt.Errorf("%w: memstore shard %d of %s", block.ErrHashMismatch, rank, stripe)
	}
	return append([]byte(nil), b...), nil
}

// Delete implements dedup.BlockStore.
func (s *Store) Delete(_ context.Context, a block.Address) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.blocks, a)
	for k, b := range s.shards {
		if block.Sum(b) == a {
			delete(s.shards, k)
		}
	}
	return nil
}

// Counts returns the counters so far.
func (s *Store) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Blocks calls fn for every block and shard held (shards with their rank,
// blocks with rank -1), in no particular order.
func (s *Store) Blocks(fn func(rank int, data []byte)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.blocks {
		fn(-1, b)
	}
	for k, b := range s.shards {
		fn(k.rank, b)
	}
}

// Addresses returns the addresses of all blocks and shards held.
func (s *Store) Addresses() map[block.Address]struct{} {
	out := map[block.Address]struct{}{}
	s.Blocks(func(_ int, b []byte) { out[block.Sum(b)] = struct{}{} })
	return out
}

// Stripes returns the stripes some shard is held for, in address order.
func (s *Store) Stripes() []block.Address {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[block.Address]bool{}
	var out []block.Address
	for k := range s.shards {
		if !seen[k.stripe] {
			seen[k.stripe] = true
			out = append(out, k.stripe)
		}
	}
	slices.SortFunc(out, func(a, b block.Address) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// DropShard loses one shard.
func (s *Store) DropShard(stripe block.Address, rank int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.shards, shardKey{stripe, rank})
}

// CorruptShard flips one byte of a shard; false if it is not held.
func (s *Store) CorruptShard(stripe block.Address, rank int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.shards[shardKey{stripe, rank}]
	if ok && len(b) > 0 {
		b[len(b)/2] ^= 0x5a
	}
	return ok
}

// Shard returns a copy of one shard.
func (s *Store) Shard(stripe block.Address, rank int) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.shards[shardKey{stripe, rank}]
	return append([]byte(nil), b...), ok
}

// Corrupt flips one byte of a block; false if it is not held.
func (s *Store) Corrupt(a block.Address) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blocks[a]
	if ok && len(b) > 0 {
		b[len(b)/2] ^= 0x5a
	}
	return ok
}

// DropRank loses the shard of the given rank in every stripe and returns
// how many it dropped.
func (s *Store) DropRank(rank int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.shards {
		if k.rank == rank {
			delete(s.shards, k)
			n++
		}
	}
	return n
}

// CorruptRank corrupts the shard of the given rank in every stripe and
// returns how many it corrupted.
func (s *Store) CorruptRank(rank int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, b := range s.shards {
		if k.rank == rank && len(b) > 0 {
			b[len(b)/2] ^= 0x5a
			n++
		}
	}
	return n
}
