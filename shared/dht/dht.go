// Package dht is the client side of Shoal's block store: it follows the
// placement view, computes where each block lives, and reads and writes
// blocks on storage nodes with quorums. Immutable writes go to R replicas
// and return after W acknowledgements; reads go to one replica, verify the
// content hash, fall back to the next and repair the copies found bad or
// missing. Nothing here is a server and nothing here keeps durable state.
package dht

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	bpb "shoal/proto/blockstorepb"
	ppb "shoal/proto/placementpb"
	"shoal/shared/block"
	"shoal/shared/paxos"
	"shoal/shared/placement"
	"shoal/shared/rpc"
	"shoal/shared/telemetry"
)

var (
	// ErrQuorum means too few replicas acknowledged a write.
	ErrQuorum = errors.New("dht: write quorum not reached")
	// ErrNoNodes means the view has no storage nodes to use.
	ErrNoNodes = errors.New("dht: no storage nodes in view")
	// ErrNoView means no placement replica could be reached.
	ErrNoView = errors.New("dht: no placement view")
	// ErrClosed means the client was closed.
	ErrClosed = errors.New("dht: client closed")
)

// Client reads and writes blocks on the cluster.
type Client struct {
	cfg Config
	log *slog.Logger

	mu      sync.RWMutex
	view    *ppb.View
	table   *placement.Table
	byID    map[string]*ppb.Node
	changed chan struct{}
	// haveView is set once any view arrived; before that, calls fetch one.
	haveView bool

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn // by node address

	batchMu sync.Mutex
	queues  map[queueKey]*nodeQueue

	propOnce sync.Once
	prop     *paxos.Proposer

	pconns []*grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	bg     sync.WaitGroup // background replica writes and repairs
	// bgMu orders starting background work (bg.Add) with Close (bg.Wait):
	// work that outlives its caller (a Paxos learn, a replica write) may
	// call in while the client closes.
	bgMu   sync.Mutex
	closed bool
}

// New dials the placement replicas and starts following the view. It does
// not wait for a view; use WaitForNodes for that.
func New(cfg Config, log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	c := &Client{cfg: cfg, log: log, conns: map[string]*grpc.ClientConn{}, changed: make(chan struct{}),
		view: &ppb.View{}, table: placement.NewTable(nil), byID: map[string]*ppb.Node{}}
	for _, a := range cfg.Placement {
		cc, err := rpc.Dial(a)
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		c.pconns = append(c.pconns, cc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go c.follow(ctx)
	return c, nil
}

// Config returns the client's configuration.
func (c *Client) Config() Config { return c.cfg }

// Close stops following the view and closes connections. It waits for
// background replica writes to finish.
func (c *Client) Close() error {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	c.bgMu.Lock()
	c.closed = true
	c.bgMu.Unlock()
	c.bg.Wait()
	for _, cc := range c.pconns {
		_ = cc.Close()
	}
	c.connMu.Lock()
	for _, cc := range c.conns {
		_ = cc.Close()
	}
	c.conns = map[string]*grpc.ClientConn{}
	c.connMu.Unlock()
	return nil
}

// background runs fn on its own goroutine, which Close waits for, unless
// the client is closed (then it reports false and runs nothing).
func (c *Client) background(fn func()) bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.closed {
		return false
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		fn()
	}()
	return true
}

// follow keeps the view current through Watch, moving to the next placement
// replica whenever one fails.
func (c *Client) follow(ctx context.Context) {
	defer c.wg.Done()
	backoff := 50 * time.Millisecond
	for i := 0; ; i++ {
		cl := ppb.NewPlacementClient(c.pconns[i%len(c.pconns)])
		// A failed Watch or a broken stream both mean: try the next
		// placement replica after a backoff.
		if stream, err := cl.Watch(ctx, &ppb.WatchRequest{}); err == nil {
			for {
				v, rerr := stream.Recv()
				if rerr != nil {
					break
				}
				c.installView(v, false)
				backoff = 50 * time.Millisecond
			}
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// installView installs v. A view from another placement replica may carry
// a lower epoch right after a failover; the Watch stream's views are still
// taken (onlyNewer false), because it is the only source and the replicas
// converge on the same node set. A view fetched outside the stream
// (onlyNewer) is dropped when the client already holds a newer one: a
// GetView answer can arrive after a Watch update that superseded it, and
// installing it would leave the client on the stale view until the next
// change, possibly for good in a quiet cluster (seen as WaitForNodes
// missing a node that was up).
func (c *Client) installView(v *ppb.View, onlyNewer bool) {
	tab := placement.FromView(v)
	byID := make(map[string]*ppb.Node, len(v.Nodes))
	for _, n := range v.Nodes {
		byID[n.Id] = n
	}
	c.mu.Lock()
	if onlyNewer && c.haveView && v.Epoch < c.view.Epoch {
		c.mu.Unlock()
		return
	}
	c.haveView = true
	c.view, c.table, c.byID = v, tab, byID
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	c.prune(v)
}

// prune closes the connections, and drops the batch queues, of addresses
// the view no longer holds: a storage task restarted under a new address
// (a swarm task gets a new overlay IP) or an evicted node. Otherwise a
// long-lived client keeps a connection per address it ever used, each
// redialing a dead address forever. A call still holding a closed
// connection fails as a call to a lost node does; a node that comes back
// at an old address is dialed again on first use.
func (c *Client) prune(v *ppb.View) {
	live := make(map[string]bool, len(v.Nodes))
	for _, n := range v.Nodes {
		live[n.Addr] = true
	}
	var gone []*grpc.ClientConn
	c.connMu.Lock()
	for a, cc := range c.conns {
		if !live[a] {
			gone = append(gone, cc)
			delete(c.conns, a)
		}
	}
	c.connMu.Unlock()
	c.batchMu.Lock()
	for k := range c.queues {
		if !live[k.addr] {
			// A drain in progress keeps its queue pointer and finishes.
			delete(c.queues, k)
		}
	}
	c.batchMu.Unlock()
	for _, cc := range gone {
		_ = cc.Close()
	}
}

// View returns the cached view.
func (c *Client) View() *ppb.View {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.view
}

// RefreshView fetches the view from any placement replica right away and
// returns it; the client keeps it unless it already holds a newer one.
func (c *Client) RefreshView(ctx context.Context) (*ppb.View, error) {
	var errs []error
	for _, cc := range c.pconns {
		v, err := ppb.NewPlacementClient(cc).GetView(ctx, &ppb.GetViewRequest{})
		if err == nil {
			c.installView(v, true)
			return v, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoView, errors.Join(errs...))
}

// WaitForNodes blocks until the view holds at least n up nodes.
func (c *Client) WaitForNodes(ctx context.Context, n int) error {
	if _, err := c.RefreshView(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	for {
		c.mu.RLock()
		up := 0
		for _, x := range c.view.Nodes {
			if x.State == ppb.NodeState_NODE_STATE_UP {
				up++
			}
		}
		ch := c.changed
		c.mu.RUnlock()
		if up >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dht: waiting for %d storage nodes (have %d): %w", n, up, ctx.Err())
		case <-ch:
		}
	}
}

func (c *Client) client(n *ppb.Node) (bpb.BlockStoreClient, error) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	cc, ok := c.conns[n.Addr]
	if !ok {
		var err error
		if cc, err = rpc.Dial(n.Addr); err != nil {
			return nil, err
		}
		c.conns[n.Addr] = cc
	}
	return bpb.NewBlockStoreClient(cc), nil
}

// ensureView fetches a view synchronously if none has arrived yet, so a
// client used right after New does not fail for want of one.
func (c *Client) ensureView(ctx context.Context) error {
	c.mu.RLock()
	ok := c.haveView
	c.mu.RUnlock()
	if ok {
		return nil
	}
	_, err := c.RefreshView(ctx)
	return err
}

// ranked returns every placed node for key in preference order.
func (c *Client) ranked(ctx context.Context, key []byte) ([]*ppb.Node, error) {
	if err := c.ensureView(ctx); err != nil {
		return nil, err
	}
	c.mu.RLock()
	tab, byID := c.table, c.byID
	c.mu.RUnlock()
	if tab.Len() == 0 {
		return nil, ErrNoNodes
	}
	order := tab.Rank(placement.KeyOf(key))
	out := make([]*ppb.Node, len(order))
	for i, n := range order {
		out[i] = byID[n.ID]
	}
	return out, nil
}

// Locate returns the R nodes placement assigns to addr.
func (c *Client) Locate(ctx context.Context, addr block.Address) ([]*ppb.Node, error) {
	nodes, err := c.ranked(ctx, addr[:])
	if err != nil {
		return nil, err
	}
	if len(nodes) > c.cfg.Replicas {
		nodes = nodes[:c.cfg.Replicas]
	}
	return nodes, nil
}

func up(n *ppb.Node) bool { return n.State == ppb.NodeState_NODE_STATE_UP }

// writeTargetsN picks r nodes for a write: the placed replicas, with a node
// known to be down replaced by the next ranked node, so a block written while
// a node is away still gets R copies (reads look down the ranking too).
func (c *Client) writeTargetsN(ctx context.Context, key []byte, r int) ([]*ppb.Node, error) {
	ranked, err := c.ranked(ctx, key)
	if err != nil {
		return nil, err
	}
	out := make([]*ppb.Node, 0, r)
	for _, n := range ranked {
		if len(out) == r {
			break
		}
		if up(n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.CallTimeout)
}

// Put stores data as an immutable block and returns its address once W
// replicas hold it. The remaining replica writes finish in the background.
func (c *Client) Put(ctx context.Context, data []byte) (block.Address, error) {
	return c.PutReplicated(ctx, data, c.cfg.Replicas, c.cfg.WriteQuorum)
}

// PutReplicated is Put with its own R and W (a volume policy's rep:R/W)
// instead of the client's defaults.
func (c *Client) PutReplicated(ctx context.Context, data []byte, r, w int) (block.Address, error) {
	addr := block.Sum(data)
	return addr, c.PutReplicatedAt(ctx, addr, data, r, w)
}

// PutReplicatedAt is PutReplicated for a caller that has already hashed the
// block: the nodes verify the address against the bytes anyway (a wrong
// one fails with block.ErrHashMismatch), so hashing here again only cost
// the caller's CPU.
func (c *Client) PutReplicatedAt(ctx context.Context, addr block.Address, data []byte, r, w int) error {
	if r <= 0 || w <= 0 || w > r {
		return fmt.Errorf("dht: bad replication %d/%d", r, w)
	}
	if len(data) > c.cfg.MaxBlockSize {
		return fmt.Errorf("%w: %d bytes, limit %d", block.ErrTooLarge, len(data), c.cfg.MaxBlockSize)
	}
	ctx, sp := telemetry.Tracer().Start(ctx, "dht.put")
	defer sp.End()
	if sp.IsRecording() { // the address's hex costs even when tracing is off
		sp.SetAttributes(attribute.String("block.address", addr.String()), attribute.Int("block.size", len(data)))
	}
	err := c.put(ctx, addr, data, r, w)
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
	return err
}

// PutAt is PutReplicatedAt with the client's R and W.
func (c *Client) PutAt(ctx context.Context, addr block.Address, data []byte) error {
	return c.PutReplicatedAt(ctx, addr, data, c.cfg.Replicas, c.cfg.WriteQuorum)
}

func (c *Client) put(ctx context.Context, addr block.Address, data []byte, r, w int) error {
	targets, err := c.writeTargetsN(ctx, addr[:], r)
	if err != nil {
		return err
	}
	if len(targets) < w {
		return fmt.Errorf("%w: %d nodes up, need %d", ErrQuorum, len(targets), w)
	}
	release := func() {}
	if w < len(targets) {
		// The writes past the quorum outlive this call, and a caller may
		// reuse its buffer once Put returns (the dedup pipeline pools
		// them): those writes get a pooled copy, which goes back after the
		// last of them. putOne is done with a block's data when it returns,
		// alone in a unary call or in a batch (a batched put that times out
		// once taken waits for its call).
		buf := rpc.Buffer(len(data))
		copy(*buf, data)
		data = *buf
		var left atomic.Int32
		left.Store(int32(len(targets)))
		release = func() {
			if left.Add(-1) == 0 {
				rpc.FreeBuffer(buf)
			}
		}
	}
	req := &bpb.PutRequest{Address: addr[:], Data: data, Kind: bpb.BlockKind_BLOCK_KIND_IMMUTABLE}
	type result struct {
		node string
		err  error
	}
	results := make(chan result, len(targets))
	// Replica writes outlive the caller's return once W acknowledged, so
	// they run on a context that keeps the trace but not the cancellation.
	bgctx := context.WithoutCancel(ctx)
	for _, n := range targets {
		if !c.background(func() {
			defer release()
			cctx, cancel := c.callCtx(bgctx)
			defer cancel()
			results <- result{n.Id, c.putOne(cctx, n, req)}
		}) {
			release()
			results <- result{n.Id, ErrClosed}
		}
	}
	acks := 0
	var errs []error
	for range targets {
		select {
		case r := <-results:
			if r.err == nil {
				acks++
				if acks >= w {
					return nil
				}
				continue
			}
			errs = append(errs, fmt.Errorf("%s: %w", r.node, r.err))
			// A client error (too large, bad hash) fails the same everywhere.
			if errors.Is(r.err, block.ErrTooLarge) || errors.Is(r.err, block.ErrHashMismatch) {
				return r.err
			}
			if len(errs) > len(targets)-w {
				return fmt.Errorf("%w: %d of %d acknowledged: %w", ErrQuorum, acks, w, errors.Join(errs...))
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("%w: %d of %d acknowledged: %w", ErrQuorum, acks, w, errors.Join(errs...))
}

// putOne stores one block on node n: small ones through the node's batch
// queue, larger ones in a call of their own.
func (c *Client) putOne(ctx context.Context, n *ppb.Node, req *bpb.PutRequest) error {
	if len(req.Data) <= batchMaxBlock {
		_, err := c.batchPut(ctx, n, req)
		return err
	}
	bs, err := c.client(n)
	if err == nil {
		_, err = bs.Put(ctx, req)
	}
	return rpc.FromStatus(err)
}

// Get reads an immutable block from the first replica that returns bytes
// matching its address, then repairs the replicas that were missing it or
// held a bad copy.
func (c *Client) Get(ctx context.Context, addr block.Address) ([]byte, error) {
	ctx, sp := telemetry.Tracer().Start(ctx, "dht.get")
	defer sp.End()
	if sp.IsRecording() {
		sp.SetAttributes(attribute.String("block.address", addr.String()))
	}
	ranked, err := c.ranked(ctx, addr[:])
	if err != nil {
		return nil, err
	}
	// Up nodes first, in rank order; then down ones, which may be back.
	order := make([]*ppb.Node, 0, len(ranked))
	for _, n := range ranked {
		if up(n) {
			order = append(order, n)
		}
	}
	for _, n := range ranked {
		if !up(n) {
			order = append(order, n)
		}
	}
	var bad []*ppb.Node
	var errs []error
	allNotFound := true
	for i, n := range order {
		data, err := c.getFrom(ctx, n, addr)
		if err == nil {
			if len(bad) > 0 {
				c.repair(ctx, addr, data, bad)
			}
			sp.SetAttributes(attribute.Int("dht.attempts", i+1))
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, block.ErrNotFound) {
			allNotFound = false
		}
		errs = append(errs, fmt.Errorf("%s: %w", n.Id, err))
		// Only the placed replicas are repaired; a node further down the
		// ranking was never meant to hold the block.
		if i < c.cfg.Replicas && up(n) && (errors.Is(err, block.ErrNotFound) || errors.Is(err, block.ErrHashMismatch)) {
			bad = append(bad, n)
		}
	}
	if allNotFound {
		return nil, fmt.Errorf("%w: %s", block.ErrNotFound, addr)
	}
	err = fmt.Errorf("dht: no replica returned %s: %w", addr, errors.Join(errs...))
	sp.RecordError(err)
	return nil, err
}

func (c *Client) getFrom(ctx context.Context, n *ppb.Node, addr block.Address) ([]byte, error) {
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.batchGet(cctx, n, addr[:])
	if err != nil {
		if isDataLoss(err) {
			// The node found its copy corrupt and dropped it: repair it.
			return nil, fmt.Errorf("%w: %v", block.ErrHashMismatch, err)
		}
		return nil, err
	}
	if block.Sum(resp.Data) != addr {
		return nil, fmt.Errorf("%w: replica %s", block.ErrHashMismatch, n.Id)
	}
	return resp.Data, nil
}

// repair writes a verified copy to replicas that lacked it, in the
// background: the reader already has its bytes.
func (c *Client) repair(ctx context.Context, addr block.Address, data []byte, nodes []*ppb.Node) {
	bgctx := context.WithoutCancel(ctx)
	data = bytes.Clone(data) // the caller owns what Get returned
	for _, n := range nodes {
		c.background(func() {
			_, sp := telemetry.Tracer().Start(bgctx, "dht.repair", trace.WithAttributes(attribute.String("node", n.Id)))
			defer sp.End()
			cctx, cancel := c.callCtx(bgctx)
			defer cancel()
			bs, err := c.client(n)
			if err == nil {
				_, err = bs.Put(cctx, &bpb.PutRequest{Address: addr[:], Data: data, Kind: bpb.BlockKind_BLOCK_KIND_IMMUTABLE})
			}
			if err != nil {
				c.log.Warn("read repair failed", "block", addr.String(), "node", n.Id, "err", err)
				sp.RecordError(err)
			}
		})
	}
}

// Has reports, for each address, whether at least W of its placed replicas
// hold it: enough to skip writing it again without weakening durability.
//
// Has is not a pure read: the nodes holding a block refresh its touch time
// (HasRequest.touch), because the caller is about to rely on the block
// instead of writing it, and space reclamation must not sweep it under
// the caller (see shared/dedup's reclamation notes).
func (c *Client) Has(ctx context.Context, addrs []block.Address) ([]bool, error) {
	return c.HasReplicated(ctx, addrs, c.cfg.Replicas, c.cfg.WriteQuorum)
}

// HasReplicated is Has for blocks written with PutReplicated(r, w).
func (c *Client) HasReplicated(ctx context.Context, addrs []block.Address, r, w int) ([]bool, error) {
	counts := make([]int, len(addrs))
	byNode := map[string][]int{}
	asks := map[string][][]byte{}
	nodes := map[string]*ppb.Node{}
	for i, a := range addrs {
		ts, err := c.writeTargetsN(ctx, a[:], r)
		if err != nil {
			return nil, err
		}
		for _, n := range ts {
			byNode[n.Id] = append(byNode[n.Id], i)
			asks[n.Id] = append(asks[n.Id], addrs[i][:])
			nodes[n.Id] = n
		}
	}
	if err := c.hasOn(ctx, nodes, asks, func(id string, k int) { counts[byNode[id][k]]++ }); err != nil {
		return nil, err
	}
	out := make([]bool, len(addrs))
	for i, n := range counts {
		out[i] = n >= w
	}
	return out, nil
}

// hasOn asks each node, in parallel, whether it holds the addresses asked
// of it, touching those it holds, and calls found (serialized) for each
// that is present, by its index in the node's list. A node that cannot be
// asked holds none of them.
func (c *Client) hasOn(ctx context.Context, nodes map[string]*ppb.Node, asks map[string][][]byte, found func(id string, k int)) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, list := range asks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs, err := c.client(nodes[id])
			if err != nil {
				return
			}
			cctx, cancel := c.callCtx(ctx)
			defer cancel()
			resp, err := bs.Has(cctx, &bpb.HasRequest{Addresses: list, Touch: true})
			if err != nil || len(resp.Present) != len(list) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for k, ok := range resp.Present {
				if ok {
					found(id, k)
				}
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// Holders asks every node in the view whether it holds addr.
func (c *Client) Holders(ctx context.Context, addr block.Address) (map[string]bool, error) {
	if err := c.ensureView(ctx); err != nil {
		return nil, err
	}
	v := c.View()
	out := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range v.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs, err := c.client(n)
			if err != nil {
				return
			}
			cctx, cancel := c.callCtx(ctx)
			defer cancel()
			resp, err := bs.Has(cctx, &bpb.HasRequest{Addresses: [][]byte{addr[:]}})
			mu.Lock()
			out[n.Id] = err == nil && resp.Present[0]
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, ctx.Err()
}

// Delete removes addr from every node in the view that holds it.
func (c *Client) Delete(ctx context.Context, addr block.Address) error {
	if err := c.ensureView(ctx); err != nil {
		return err
	}
	v := c.View()
	var wg sync.WaitGroup
	errs := make([]error, len(v.Nodes))
	for i, n := range v.Nodes {
		if !up(n) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs, err := c.client(n)
			if err == nil {
				cctx, cancel := c.callCtx(ctx)
				_, err = bs.Delete(cctx, &bpb.DeleteRequest{Address: addr[:]})
				cancel()
			}
			errs[i] = rpc.FromStatus(err)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// NodeClient returns the gRPC client of one node, for tools.
func (c *Client) NodeClient(n *ppb.Node) (bpb.BlockStoreClient, error) { return c.client(n) }
