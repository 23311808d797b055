package s3

import (
	"context"
	"errors"
	"time"

	"shoal/shared/combine"
)

// Index writes to one shard are combined (shared/combine). Sequential keys
// (the common case: timestamps, counters, uploads in order) all land in a
// bucket's last shard, and one Paxos round per PUT made that shard the
// limit on PUTs per second, however many clients and servers there were.
// A round applies, in one read-modify-write of the shard, every write
// queued behind the round before it; each write keeps its own outcome (a
// key outside the shard, a frozen range, its own function's error), and
// writes are applied in the order they reached this server.

// maxCombined bounds the writes applied in one round.
const maxCombined = 512

// combineTimeout bounds one combined round.
const combineTimeout = 30 * time.Second

// errNothingToWrite aborts a round in which every write failed on its own.
var errNothingToWrite = errors.New("s3: no write in the round applies")

// commitQueues holds a server's per-shard write queues.
type commitQueues = combine.Queues[[32]byte, *indexWrite]

// indexWrite is one key's update waiting in a queue.
type indexWrite struct {
	k  string
	fn func(cur []byte, found bool) (next []byte, keep bool, err error)
	// Set by the round that ran it.
	err  error
	size int // the shard's encoded size after the round
}

func newCommitQueues(meta MetaStore) *commitQueues {
	return combine.New(maxCombined, combineTimeout, func(ctx context.Context, addr [32]byte, ops []*indexWrite) {
		round(ctx, meta, addr, ops)
	})
}

// commit applies w to the shard at addr, combined with whatever else is
// queued for it, and returns w's own outcome and the shard's new size.
func (ix *index) commit(ctx context.Context, addr [32]byte, w *indexWrite) (int, error) {
	if err := ix.queues.Do(ctx, addr, w); err != nil {
		return 0, err
	}
	return w.size, w.err
}

// round applies ops to the shard in one read-modify-write and sets each
// op's outcome.
func round(ctx context.Context, meta MetaStore, addr [32]byte, ops []*indexWrite) {
	errs := make([]error, len(ops))
	size := 0
	_, err := meta.Update(ctx, addr, func(cur []byte) ([]byte, error) {
		s, err := decodeShard(cur)
		if err != nil {
			return nil, err
		}
		if s.sealed {
			return nil, errSealed
		}
		now := time.Now().UnixMilli()
		applied := false
		for i, w := range ops {
			errs[i] = s.apply(w, now)
			applied = applied || errs[i] == nil
		}
		if !applied {
			return nil, errNothingToWrite
		}
		s.gen++
		out := s.encode()
		size = len(out)
		return out, nil
	})
	for i, w := range ops {
		switch {
		case errors.Is(err, errNothingToWrite):
			w.err = errs[i]
		case err != nil:
			w.err = err
		default:
			w.err, w.size = errs[i], size
		}
	}
}

// apply runs one write on the decoded shard: errMoved if the key is not
// the shard's, errFrozen if a split holds its range, else the write's own
// function decides.
func (s *shard) apply(w *indexWrite, now int64) error {
	if !s.covers(w.k) {
		return errMoved
	}
	if s.frozenFor(w.k, now) {
		return errFrozen
	}
	i, found := s.search(w.k)
	var old []byte
	if found {
		old = s.vals[i]
	}
	nv, keep, err := w.fn(old, found)
	if err != nil {
		return err
	}
	switch {
	case keep && found:
		s.vals[i] = nv
	case keep:
		s.keys = append(s.keys, "")
		s.vals = append(s.vals, nil)
		copy(s.keys[i+1:], s.keys[i:])
		copy(s.vals[i+1:], s.vals[i:])
		s.keys[i], s.vals[i] = w.k, nv
	case found:
		s.keys = append(s.keys[:i], s.keys[i+1:]...)
		s.vals = append(s.vals[:i], s.vals[i+1:]...)
	}
	return nil
}
