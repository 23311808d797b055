package dedup

import (
	"context"
	"errors"
	"fmt"

	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
)

// ErrOffer means a client's offered chunks broke the rules: lengths the
// policy cannot cut, or bytes that do not match the hash offered for them.
var ErrOffer = errors.New("dedup: invalid offer")

// A client that cuts and hashes a stream itself (the policy's chunker and
// SHA-256 are deterministic) can offer its chunks by hash and length, and
// send the bytes of only those the cluster lacks: writing data that is
// already stored then costs the client a hash per chunk and the tier a
// lookup, where sending it cost a transfer over the network, a second
// chunking and a second hash. Resolve answers an offer; WriteChunks
// stores the stream from the answer and the bytes sent.
//
// A known chunk is trusted on its hash: the tier never sees its bytes.
// That is safe for the cluster (the answer only ever names blocks sealed
// from bytes whose hash was checked, and the store confirmed holding them),
// and the tier has no access control of its own to bypass: any caller
// can already read any reference.

// Chunk is one chunk of a stream cut by the caller: its bytes (with Sum
// their claimed SHA-256 when Claimed), or a chunk Resolve found stored.
type Chunk struct {
	Plain   []byte
	Sum     block.Address
	Claimed bool
	Known   *KnownChunk
}

// KnownChunk is a chunk the store holds, as Resolve found it.
type KnownChunk struct {
	sum   block.Address
	entry manifest.Chunk
}

// CheckLengths checks that lengths (a window of an offer, last says
// whether it ends the stream) are what the policy's chunker can produce:
// a client cutting otherwise would break fixed-size volumes' alignment.
func CheckLengths(c policy.Chunking, lengths []uint32, last bool) error {
	for i, n := range lengths {
		final := last && i == len(lengths)-1
		switch {
		case n == 0 || int(n) > c.MaxLen():
			return fmt.Errorf("%w: chunk length %d outside 1..%d", ErrOffer, n, c.MaxLen())
		case c.Mode == policy.Fixed && int(n) != c.Size && !final:
			return fmt.Errorf("%w: chunk length %d: fixed chunking cuts %d", ErrOffer, n, c.Size)
		case c.Mode == policy.CDC && int(n) < c.Min && !final:
			return fmt.Errorf("%w: chunk length %d below the minimum %d", ErrOffer, n, c.Min)
		}
	}
	return nil
}

// Resolve answers an offer: for each chunk (its plaintext SHA-256 and
// length), the KnownChunk if the store already holds it as this Writer
// would seal it, nil if its bytes must be sent. It touches what it finds,
// as the Has of a Write does, so space reclamation's grace period covers
// the time until the stream's reference is published.
func (w *Writer) Resolve(ctx context.Context, sums []block.Address, lengths []uint32) ([]*KnownChunk, error) {
	if len(sums) != len(lengths) {
		return nil, fmt.Errorf("%w: %d hashes for %d lengths", ErrOffer, len(sums), len(lengths))
	}
	out := make([]*KnownChunk, len(sums))
	var cand []int
	entries := make([]manifest.Chunk, len(sums))
	for i, sum := range sums {
		n := int(lengths[i])
		if !w.sealing() {
			if w.ec != nil {
				continue // shard addresses come only from encoding the bytes
			}
			entries[i] = manifest.Chunk{Addr: sum, Logical: n, Stored: n}
		} else {
			var s sealedChunk
			ok := false
			if c := w.cfg.Sealed; c != nil && w.caches() {
				s, ok = c.c.Get(sealKey{w.id, sum})
				ok = ok && (w.ec == nil) == (s.shards == nil) && s.logical == n
			}
			switch {
			case ok:
				entries[i] = w.chunkEntry(sum, n, s)
			case w.ec == nil && !w.sealer.Encrypted():
				// Not in the cache (a restart, another replica): a chunk
				// compression did not pay for is stored as is, under its
				// plaintext hash, and a block at that address can only be
				// that plaintext. Incompressible data is then found cold.
				entries[i] = manifest.Chunk{Addr: sum, Logical: n, Stored: n}
			default:
				continue
			}
		}
		cand = append(cand, i)
	}
	for len(cand) > 0 {
		part := cand[:min(len(cand), w.cfg.HasBatch)]
		cand = cand[len(part):]
		held, err := w.held(ctx, part, entries)
		if err != nil {
			return nil, err
		}
		for k, i := range part {
			if held[k] {
				out[i] = &KnownChunk{sum: sums[i], entry: entries[i]}
			}
		}
	}
	return out, nil
}

// held asks the store whether it holds the chunks entries[idx...] name:
// every shard of an erasure-coded one.
func (w *Writer) held(ctx context.Context, idx []int, entries []manifest.Chunk) ([]bool, error) {
	if w.ec == nil {
		addrs := make([]block.Address, len(idx))
		for k, i := range idx {
			addrs[k] = entries[i].Addr
		}
		return w.has(ctx, addrs)
	}
	stripes := make([]block.Address, len(idx))
	shards := make([][]block.Address, len(idx))
	for k, i := range idx {
		stripes[k], shards[k] = entries[i].Addr, entries[i].Shards
	}
	// w.caches() held for every candidate: the store is a ShardChecker.
	has, err := hasShards(ctx, w.store.(ShardChecker), stripes, shards)
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(idx))
	for k := range idx {
		out[k] = true
		for _, ok := range has[k] {
			out[k] = out[k] && ok
		}
	}
	return out, nil
}
