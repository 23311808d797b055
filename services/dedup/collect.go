package dedup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	bpb "shoal/proto/blockstorepb"
	dpb "shoal/proto/dedupb"
	ppb "shoal/proto/placementpb"
	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
	"shoal/shared/rpc"
)

// Space reclamation is mark-and-sweep with a grace period G, as designed in
// shared/dedup (doc.go, "Space reclamation"), run by any dedup replica:
//
//  1. T0: note the instant (monotonic clock), then read the root set: the
//     journal registry, every registered journal, then every shard (quorum
//     reads; any failure aborts; journal.go says why that order counts
//     every root once).
//  2. Mark: dedup.Reader.Mark adds every manifest node, chunk and shard the
//     live roots reach; any unreadable node aborts the cycle.
//  3. Sweep: list every storage node in the view with each block's touch
//     time, and delete each unmarked block whose touch time is before
//     T0 - G, with a conditional delete the node checks atomically.
//
// Safety: a block a live or future reference needs is never deleted.
//
//   - A reference live at T0 is in the root set read in step 1 (Write and
//     Retain return only after the root-set update, in a journal or a
//     shard, is decided by Paxos, and step 1 reads them all at quorum), so
//     its blocks are marked.
//   - A write that publishes after T0 either stored each of its blocks (so
//     the node set the touch time when storing it) or was told by Has that
//     W replicas hold it (so each of those nodes refreshed the touch time
//     while answering; silo.Touch is fsync'd before the answer), or found
//     the copy present on Put (same refresh). Each of those touches happens
//     during the write, which lasts less than G, and the write publishes
//     after T0, so every touch is after T0 - G: the block is young at the
//     sweep and kept. The Write RPC publishes (retains) its reference
//     itself before returning, so frontends cannot forget the rule.
//   - The sweep's "untouched since the cutoff, so delete" is one atomic step
//     on the node (silo.DeleteIfUntouched holds the touch lock exclusively;
//     touches hold it shared), so a Has that answers "present" either comes
//     first (the delete then sees a young block and keeps it) or after (the
//     block is gone and Has says "absent", and the writer stores it again).
//   - Clocks: touch times are in the node's clock, T0 in the sweeper's. The
//     sweeper does not compare them: each node's List reports the node's
//     clock at the start of the listing, and the sweeper subtracts the time
//     elapsed since T0 measured after that reply arrived (an over-estimate),
//     so the cutoff it sends is at or before T0 - G in the node's own clock.
//     Only a node clock stepping backwards during a cycle could break this.
//
// Hence G must exceed the longest write (multipart uploads publish per part)
// plus silo.TouchResolution; six hours by default. Collections may run on
// several replicas at once: each is safe on its own. Only blocks in the
// storage nodes' immutable key space are swept (mutable blocks, such as the
// root set itself, are never listed), and every immutable block is assumed
// to belong to the dedup tier: blocks stored with `shoal block put` and no
// reference in the root set are reclaimed like any other garbage.

// maxGraceSeconds is the longest grace period a time.Duration holds.
const maxGraceSeconds = math.MaxInt64 / int64(time.Second)

// CollectResult is what one cycle did.
type CollectResult struct {
	Marked, Swept, FreedBytes int64
}

// Collect is the RPC form of collect.
func (s *Service) Collect(ctx context.Context, req *dpb.CollectRequest) (*dpb.CollectResponse, error) {
	if req.GraceSeconds < 0 {
		return nil, toStatus(invalid("negative grace period"))
	}
	// A longer grace would wrap around in nanoseconds, possibly to a
	// short one that sweeps blocks unfinished writes are about to use.
	if req.GraceSeconds > maxGraceSeconds {
		return nil, toStatus(invalid("grace period of %d s: at most %d", req.GraceSeconds, maxGraceSeconds))
	}
	res, err := s.collect(ctx, time.Duration(req.GraceSeconds)*time.Second, req.DryRun)
	if err != nil {
		return nil, toStatus(err)
	}
	return &dpb.CollectResponse{Marked: res.Marked, Swept: res.Swept, FreedBytes: res.FreedBytes}, nil
}

func (s *Service) collect(ctx context.Context, grace time.Duration, dryRun bool) (CollectResult, error) {
	var res CollectResult
	t0 := time.Now()
	roots, err := s.roots.all(ctx)
	if err != nil {
		return res, err
	}
	marked, err := s.mark(ctx, roots)
	if err != nil {
		return res, err
	}
	res.Marked = int64(len(marked))
	view, err := s.dht.RefreshView(ctx)
	if err != nil {
		return res, err
	}
	var swept, freed atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, len(view.Nodes))
	for i, n := range view.Nodes {
		if n.State != ppb.NodeState_NODE_STATE_UP {
			// Its garbage waits for the next cycle.
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.sweepNode(ctx, n, marked, t0, grace, dryRun, &swept, &freed)
		}()
	}
	wg.Wait()
	res.Swept, res.FreedBytes = swept.Load(), freed.Load()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	s.log.Info("collection", "roots", len(roots), "marked", res.Marked, "swept", res.Swept, "freed", res.FreedBytes, "dry_run", dryRun, "took", time.Since(t0))
	return res, nil
}

// mark returns every block the roots reach. The set lives in memory (about
// 80 bytes per block).
func (s *Service) mark(ctx context.Context, roots []root) (map[block.Address]struct{}, error) {
	set := map[block.Address]struct{}{}
	add := func(a block.Address) bool {
		if _, ok := set[a]; ok {
			return false
		}
		set[a] = struct{}{}
		return true
	}
	for _, rt := range roots {
		r, err := s.reader(rt.ref.Policy, rt.volume)
		if err != nil {
			return nil, fmt.Errorf("dedup: mark %s: %w", rt.ref.Root, err)
		}
		if err := r.Mark(ctx, []manifest.Ref{rt.ref}, add); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// sweepDeletes is how many conditional deletes run at once per node.
const sweepDeletes = 8

func (s *Service) sweepNode(ctx context.Context, n *ppb.Node, marked map[block.Address]struct{}, t0 time.Time,
	grace time.Duration, dryRun bool, swept, freed *atomic.Int64) error {
	bs, err := s.dht.NodeClient(n)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := bs.List(ctx, &bpb.ListRequest{})
	if err != nil {
		return fmt.Errorf("dedup: list %s: %w", n.Id, rpc.FromStatus(err))
	}
	var cutoff int64
	type cand struct {
		addr block.Address
		size int64
	}
	work := make(chan cand, 256)
	var wg sync.WaitGroup
	var delErr error
	var errOnce sync.Once
	for range sweepDeletes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				resp, err := bs.Delete(ctx, &bpb.DeleteRequest{Address: c.addr[:], IfTouchedBeforeUnixMs: cutoff})
				if err != nil {
					errOnce.Do(func() { delErr = fmt.Errorf("dedup: delete on %s: %w", n.Id, rpc.FromStatus(err)); cancel() })
					continue
				}
				if resp.Existed && !resp.Kept {
					swept.Add(1)
					freed.Add(c.size)
				}
			}
		}()
	}
	listErr := func() error {
		defer close(work)
		first := true
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				if first {
					return fmt.Errorf("dedup: list %s: node sent no clock", n.Id)
				}
				return nil
			}
			if err != nil {
				return fmt.Errorf("dedup: list %s: %w", n.Id, rpc.FromStatus(err))
			}
			if first {
				first = false
				// Elapsed is measured after the reply, so it over-estimates
				// the time between T0 and the node reading its clock: the
				// cutoff errs towards keeping blocks.
				cutoff = m.NowUnixMs - time.Since(t0).Milliseconds() - grace.Milliseconds() - 1
				if m.NowUnixMs <= 0 {
					return fmt.Errorf("dedup: node %s reports no usable clock", n.Id)
				}
				if cutoff <= 0 {
					return nil // a grace longer than the node's clock has run: nothing is old enough
				}
			}
			if len(m.Sizes) != len(m.Addresses) || len(m.TouchedUnixMs) != len(m.Addresses) {
				return fmt.Errorf("dedup: list %s: malformed reply", n.Id)
			}
			for i, b := range m.Addresses {
				a, err := block.FromBytes(b)
				if err != nil {
					return fmt.Errorf("dedup: list %s: %w", n.Id, err)
				}
				if _, ok := marked[a]; ok || m.TouchedUnixMs[i] >= cutoff {
					continue
				}
				if dryRun {
					swept.Add(1)
					freed.Add(int64(m.Sizes[i]))
					continue
				}
				select {
				case work <- cand{a, int64(m.Sizes[i])}:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}()
	wg.Wait()
	if delErr != nil {
		return delErr
	}
	return listErr
}

// Usage reports logical bytes (live roots, each use counted) against
// physical bytes (what the storage nodes in the view hold).
func (s *Service) Usage(ctx context.Context, _ *dpb.UsageRequest) (*dpb.UsageResponse, error) {
	roots, js, err := s.roots.read(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &dpb.UsageResponse{RootJournals: int64(js.journals), JournalEntries: int64(js.entries)}
	for _, r := range roots {
		out.LogicalBytes += r.ref.Size * int64(r.count)
	}
	view, err := s.dht.RefreshView(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range view.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs, err := s.dht.NodeClient(n)
			if err != nil {
				return
			}
			st, err := bs.NodeStats(ctx, &bpb.NodeStatsRequest{})
			if err != nil {
				return
			}
			mu.Lock()
			out.PhysicalBytes += int64(st.UsedBytes)
			out.Blocks += int64(st.Blocks)
			out.SegmentBytes += int64(st.SegmentBytes)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, nil
}
