package dht

import (
	"context"
	"errors"
	"fmt"

	bpb "shoal/proto/blockstorepb"
	ppb "shoal/proto/placementpb"
	"shoal/shared/block"
)

// shardNode is the node ranked rank for stripe: distinct ranks are distinct
// nodes, and the zone-spread prefix of the ranking puts the first shards in
// distinct zones.
func (c *Client) shardNode(ctx context.Context, stripe block.Address, rank int) (*ppb.Node, error) {
	ranked, err := c.ranked(ctx, stripe[:])
	if err != nil {
		return nil, err
	}
	if rank < 0 || rank >= len(ranked) {
		return nil, fmt.Errorf("%w: shard rank %d with %d nodes", ErrNoNodes, rank, len(ranked))
	}
	return ranked[rank], nil
}

// PutShard stores one erasure-coding shard, a single copy, on the node
// ranked rank in stripe's placement. Redundancy comes from the code, not
// from replicas.
func (c *Client) PutShard(ctx context.Context, stripe block.Address, rank int, data []byte) (block.Address, error) {
	addr := block.Sum(data)
	return addr, c.PutShardAt(ctx, stripe, rank, addr, data)
}

// PutShardAt is PutShard for a caller that has already hashed the shard
// (the node verifies it).
func (c *Client) PutShardAt(ctx context.Context, stripe block.Address, rank int, addr block.Address, data []byte) error {
	if len(data) > c.cfg.MaxBlockSize {
		return fmt.Errorf("%w: %d bytes", block.ErrTooLarge, len(data))
	}
	n, err := c.shardNode(ctx, stripe, rank)
	if err != nil {
		return err
	}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	// Shards of small chunks (16 KiB for 64 KiB chunks under 4+2) share
	// calls and fsyncs like any small block.
	req := &bpb.PutRequest{Address: addr[:], Data: data, Kind: bpb.BlockKind_BLOCK_KIND_IMMUTABLE}
	if err := c.putOne(cctx, n, req); err != nil {
		return fmt.Errorf("shard %d on %s: %w", rank, n.Id, err)
	}
	return nil
}

// GetShard fetches a shard from its node and verifies it.
func (c *Client) GetShard(ctx context.Context, stripe block.Address, rank int, addr block.Address) ([]byte, error) {
	n, err := c.shardNode(ctx, stripe, rank)
	if err != nil {
		return nil, err
	}
	data, err := c.getFrom(ctx, n, addr)
	if err != nil && !errors.Is(err, block.ErrHashMismatch) && !errors.Is(err, block.ErrNotFound) {
		return nil, fmt.Errorf("shard %d on %s: %w", rank, n.Id, err)
	}
	return data, err
}

// HasShards reports, for each stripe and each shard rank, whether the node
// that rank places the shard on holds it, and touches the shards it holds
// (so a re-write's chunks are spared by reclamation until its manifest is
// a root). One Has call goes to each node involved. A node that cannot be
// asked counts as not holding its shards: the caller sends them again.
func (c *Client) HasShards(ctx context.Context, stripes []block.Address, shards [][]block.Address) ([][]bool, error) {
	if len(shards) != len(stripes) {
		return nil, fmt.Errorf("dht: has shards: %d stripes, %d shard lists", len(stripes), len(shards))
	}
	type at struct{ stripe, rank int }
	byNode := map[string][]at{}
	asks := map[string][][]byte{}
	nodes := map[string]*ppb.Node{}
	out := make([][]bool, len(stripes))
	for i, stripe := range stripes {
		out[i] = make([]bool, len(shards[i]))
		ranked, err := c.ranked(ctx, stripe[:])
		if err != nil {
			return nil, err
		}
		if len(shards[i]) > len(ranked) {
			return nil, fmt.Errorf("%w: %d shards with %d nodes", ErrNoNodes, len(shards[i]), len(ranked))
		}
		for rank := range shards[i] {
			n := ranked[rank]
			byNode[n.Id] = append(byNode[n.Id], at{i, rank})
			asks[n.Id] = append(asks[n.Id], shards[i][rank][:])
			nodes[n.Id] = n
		}
	}
	if err := c.hasOn(ctx, nodes, asks, func(id string, k int) {
		a := byNode[id][k]
		out[a.stripe][a.rank] = true
	}); err != nil {
		return nil, err
	}
	return out, nil
}
