package dedup

import (
	"context"
	"errors"
	"fmt"

	"shoal/shared/block"
)

// BlockStore is what the dedup tier needs from the cluster; shared/dht
// provides the real one. Implementations must not keep a data slice after
// the call that received it returns: the writer reuses its buffers.
type BlockStore interface {
	// Put stores an immutable block, replicated R/W per the cluster
	// default; the address is SHA-256(data).
	Put(ctx context.Context, data []byte) (block.Address, error)
	// Get returns a block's bytes, verified against addr: when no copy
	// matches, an error wrapping block.ErrHashMismatch. Readers rely on it
	// and do not hash again.
	Get(ctx context.Context, addr block.Address) ([]byte, error)
	// Has reports, for each address, whether the cluster holds the block.
	Has(ctx context.Context, addrs []block.Address) ([]bool, error)
	// PutShard stores one erasure-coding shard (an immutable block, single
	// copy) on the node ranked rank in the placement of stripe. Distinct
	// ranks map to distinct nodes, spread over zones. Storing a shard the
	// node already holds must replace a copy that no longer verifies.
	PutShard(ctx context.Context, stripe block.Address, rank int, data []byte) (block.Address, error)
	// GetShard fetches one shard from the node ranked rank for stripe,
	// verified against addr as Get is.
	GetShard(ctx context.Context, stripe block.Address, rank int, addr block.Address) ([]byte, error)
	// Delete removes a block; only the reclamation sweep calls it.
	Delete(ctx context.Context, addr block.Address) error
}

// AddressedStore is implemented by stores that take a block together with
// the address its writer already computed and verify it where it is
// stored (shared/dht: the nodes check every block against its address),
// sparing the writer a second SHA-256 of everything it sends.
type AddressedStore interface {
	PutAt(ctx context.Context, addr block.Address, data []byte) error
	PutShardAt(ctx context.Context, stripe block.Address, rank int, addr block.Address, data []byte) error
}

// ShardChecker is implemented by stores that can say, for erasure-coded
// chunks, whether the node each shard's rank places it on in its stripe
// holds it, touching those it holds as Has does (so reclamation spares
// them until the manifest naming them is a root). A Writer then re-sends
// only missing shards, and a re-write of stored data costs a hash per chunk
// rather than sealing, encoding and sending it again. The answer holds,
// for each stripe, one entry per shard rank.
type ShardChecker interface {
	HasShards(ctx context.Context, stripes []block.Address, shards [][]block.Address) ([][]bool, error)
}

// putBlock stores data, whose address the caller computed, as addr.
func putBlock(ctx context.Context, store BlockStore, addr block.Address, data []byte) error {
	if as, ok := store.(AddressedStore); ok {
		return as.PutAt(ctx, addr, data)
	}
	got, err := store.Put(ctx, data)
	if err == nil && got != addr {
		err = fmt.Errorf("%w: put returned %s for %s", ErrStore, got, addr)
	}
	return err
}

// putShardBlock stores one shard, whose address the caller computed.
func putShardBlock(ctx context.Context, store BlockStore, stripe block.Address, rank int, addr block.Address, data []byte) error {
	if as, ok := store.(AddressedStore); ok {
		return as.PutShardAt(ctx, stripe, rank, addr, data)
	}
	got, err := store.PutShard(ctx, stripe, rank, data)
	if err == nil && got != addr {
		err = fmt.Errorf("%w: put shard returned %s for %s", ErrStore, got, addr)
	}
	return err
}

var (
	// ErrConfig means a Writer or Reader was configured wrongly.
	ErrConfig = errors.New("dedup: bad configuration")
	// ErrStore means the store broke its contract, e.g. returned an address
	// that is not the hash of what was stored.
	ErrStore = errors.New("dedup: block store misbehaved")
	// ErrCorrupt means stored data failed verification and could not be
	// recovered.
	ErrCorrupt = errors.New("dedup: corrupt data")
	// ErrRange means a read starts beyond the end of the stream.
	ErrRange = errors.New("dedup: offset out of range")
	// ErrKey means the volume key is missing, wrong-sized or not needed.
	ErrKey = errors.New("dedup: volume key does not match the policy")
)
