// Package placement is the overlay service: it listens to storage-node
// heartbeats on NATS, keeps an epoch-numbered view of the nodes (up, down,
// evicted), and serves it over gRPC (GetView, Watch, Locate). Several
// replicas run side by side with no leader: each builds the same view from
// the same heartbeats, and their epochs are kept comparable as a Lamport
// clock gossiped over NATS. Placement itself is computed by clients from the
// view (shared/placement), so this service is off the data path.
package placement

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	ppb "shoal/proto/placementpb"
	"shoal/shared/membership"
	"shoal/shared/placement"
	"shoal/shared/rpc"
)

// Config configures a placement replica.
type Config struct {
	Listen     string        `yaml:"listen"`
	DownAfter  time.Duration `yaml:"down_after"`
	EvictAfter time.Duration `yaml:"evict_after"`
	Replicas   int           `yaml:"replicas"`
}

// RegisterFlags registers the service's flags under prefix.
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, prefix+"listen", "127.0.0.1:7100", "gRPC listen address")
	fs.DurationVar(&c.DownAfter, prefix+"down-after", membership.DefaultDownAfter, "mark a node down after this long without a heartbeat")
	fs.DurationVar(&c.EvictAfter, prefix+"evict-after", membership.DefaultEvictAfter, "evict a down node (and re-replicate its blocks) after this long without a heartbeat")
	fs.IntVar(&c.Replicas, prefix+"replicas", 3, "default replica count for Locate")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.DownAfter <= 0 || c.EvictAfter < c.DownAfter {
		return errors.New("placement: need 0 < down-after <= evict-after")
	}
	if c.Replicas <= 0 {
		return errors.New("placement: replicas must be positive")
	}
	return nil
}

// Service is one placement replica.
type Service struct {
	ppb.UnimplementedPlacementServer

	cfg     Config
	log     *slog.Logger
	nc      *nats.Conn
	replica string
	now     func() time.Time
	// natsWait bounds one wait for NATS to confirm the subscriptions.
	natsWait time.Duration

	mu      sync.Mutex
	nodes   map[string]*ppb.Node
	epoch   uint64
	view    *ppb.View
	changed chan struct{} // closed and replaced on every view change

	srv  *grpc.Server
	lis  net.Listener
	subs []*nats.Subscription
	done chan struct{}
	wg   sync.WaitGroup
}

// New creates a placement replica.
func New(cfg Config, nc *nats.Conn, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	s := &Service{
		cfg: cfg, nc: nc, replica: "placement-" + hex.EncodeToString(r[:]), now: time.Now, natsWait: 10 * time.Second,
		nodes: map[string]*ppb.Node{}, changed: make(chan struct{}), done: make(chan struct{}),
	}
	s.log = log.With("replica", s.replica)
	s.view = &ppb.View{}
	return s, nil
}

// Addr is the gRPC address (valid after Start).
func (s *Service) Addr() string {
	if s.lis != nil {
		return s.lis.Addr().String()
	}
	return s.cfg.Listen
}

// Start subscribes to membership subjects and serves gRPC.
func (s *Service) Start(ctx context.Context) error {
	for subj, h := range map[string]nats.MsgHandler{
		membership.SubjectHeartbeat: s.onHeartbeat,
		membership.SubjectLeave:     s.onLeave,
		membership.SubjectEpoch:     s.onEpoch,
	} {
		sub, err := s.nc.Subscribe(subj, h)
		if err != nil {
			return fmt.Errorf("placement: subscribe %s: %w", subj, err)
		}
		s.subs = append(s.subs, sub)
	}
	// Serve only once the server has the subscriptions, so no heartbeat is
	// missed. In a stack NATS may come up after us: the connection retries
	// in the background, and so do we, rather than exit and be restarted.
	for {
		fctx, cancel := context.WithTimeout(ctx, s.natsWait)
		err := s.nc.FlushWithContext(fctx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || s.nc.IsClosed() {
			return fmt.Errorf("placement: waiting for NATS: %w", err)
		}
		s.log.Info("waiting for NATS", "err", err)
	}
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("placement: listen: %w", err)
	}
	s.lis = lis
	s.srv = grpc.NewServer(rpc.ServerOptions()...)
	ppb.RegisterPlacementServer(s.srv, s)
	healthpb.RegisterHealthServer(s.srv, health.NewServer())
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("grpc serve", "err", err)
		}
	}()
	go s.detector()
	s.log.Info("placement up", "addr", s.Addr())
	return nil
}

// Stop stops the replica.
func (s *Service) Stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	close(s.done)
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	if s.srv != nil {
		s.srv.Stop()
	}
	s.wg.Wait()
	return nil
}

func (s *Service) onHeartbeat(msg *nats.Msg) {
	var hb membership.Heartbeat
	if _, err := membership.Decode(msg, &hb); err != nil || hb.ID == "" || hb.Addr == "" {
		s.log.Warn("bad heartbeat", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[hb.ID]
	now := s.now().UnixMilli()
	w := hb.Weight
	if w <= 0 {
		w = 1
	}
	if !ok {
		n = &ppb.Node{Id: hb.ID}
		s.nodes[hb.ID] = n
	}
	// Usage changes on every heartbeat and is not part of the epoch: only
	// the placed set, addresses, zones, weights and states are.
	structural := !ok || n.Addr != hb.Addr || n.Zone != hb.Zone || n.Weight != w || n.State != ppb.NodeState_NODE_STATE_UP
	n.Addr, n.Zone, n.Weight, n.State = hb.Addr, hb.Zone, w, ppb.NodeState_NODE_STATE_UP
	n.CapacityBytes, n.UsedBytes, n.Blocks, n.LastSeenUnixMs = hb.Capacity, hb.Used, hb.Blocks, now
	if structural {
		s.log.Info("node up", "node", hb.ID, "addr", hb.Addr, "zone", hb.Zone)
		s.bumpLocked()
	} else {
		s.rebuildLocked(false)
	}
}

func (s *Service) onLeave(msg *nats.Msg) {
	var l membership.Leave
	if _, err := membership.Decode(msg, &l); err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.nodes[l.ID]; ok && n.State != ppb.NodeState_NODE_STATE_LEFT {
		n.State = ppb.NodeState_NODE_STATE_LEFT
		s.log.Info("node left", "node", l.ID)
		s.bumpLocked()
	}
}

func (s *Service) onEpoch(msg *nats.Msg) {
	var e membership.EpochNote
	if _, err := membership.Decode(msg, &e); err != nil || e.Replica == s.replica {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Epoch > s.epoch {
		s.epoch = e.Epoch
	}
}

// bumpLocked advances the Lamport epoch for a structural change and tells
// peers and watchers.
func (s *Service) bumpLocked() {
	s.epoch++
	s.rebuildLocked(true)
	note := membership.EpochNote{Replica: s.replica, Epoch: s.epoch}
	_ = membership.Publish(context.Background(), s.nc, membership.SubjectEpoch, note)
	_ = membership.Publish(context.Background(), s.nc, membership.SubjectView, membership.ViewNote{Epoch: s.epoch})
}

func (s *Service) rebuildLocked(notify bool) {
	v := &ppb.View{Epoch: s.epoch}
	ids := make([]string, 0, len(s.nodes))
	for id := range s.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		v.Nodes = append(v.Nodes, proto.Clone(s.nodes[id]).(*ppb.Node))
	}
	s.view = v
	if notify {
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// detector marks silent nodes down, then evicts them.
func (s *Service) detector() {
	defer s.wg.Done()
	tick := s.cfg.DownAfter / 4
	if tick > time.Second {
		tick = time.Second
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.check()
		}
	}
}

func (s *Service) check() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixMilli()
	changed := false
	var evicted []string
	for id, n := range s.nodes {
		silent := time.Duration(now-n.LastSeenUnixMs) * time.Millisecond
		switch {
		case n.State == ppb.NodeState_NODE_STATE_LEFT && silent > s.cfg.EvictAfter:
			delete(s.nodes, id)
			changed = true
		case n.State != ppb.NodeState_NODE_STATE_LEFT && silent > s.cfg.EvictAfter:
			delete(s.nodes, id)
			evicted = append(evicted, id)
			changed = true
		case n.State == ppb.NodeState_NODE_STATE_UP && silent > s.cfg.DownAfter:
			n.State = ppb.NodeState_NODE_STATE_DOWN
			s.log.Warn("node down", "node", id, "silent", silent)
			changed = true
		}
	}
	if changed {
		s.bumpLocked()
	}
	for _, id := range evicted {
		s.log.Warn("node evicted", "node", id, "epoch", s.epoch)
		_ = membership.Publish(context.Background(), s.nc, membership.SubjectEvicted, membership.Evicted{ID: id, Epoch: s.epoch})
	}
}

// View returns the current view.
func (s *Service) View() *ppb.View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// GetView returns the current view.
func (s *Service) GetView(context.Context, *ppb.GetViewRequest) (*ppb.View, error) {
	return s.View(), nil
}

// Watch streams the view whenever it changes.
func (s *Service) Watch(req *ppb.WatchRequest, stream ppb.Placement_WatchServer) error {
	after := req.AfterEpoch
	for {
		s.mu.Lock()
		v, ch := s.view, s.changed
		s.mu.Unlock()
		if v.Epoch > after {
			if err := stream.Send(v); err != nil {
				return err
			}
			after = v.Epoch
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-s.done:
			return status.Error(codes.Unavailable, "placement: shutting down")
		}
	}
}

// maxLocate bounds one Locate request.
const maxLocate = 10_000

// Locate computes the replicas of addresses from the current view.
func (s *Service) Locate(_ context.Context, req *ppb.LocateRequest) (*ppb.LocateResponse, error) {
	if len(req.Addresses) > maxLocate {
		return nil, status.Errorf(codes.InvalidArgument, "placement: at most %d addresses per Locate", maxLocate)
	}
	r := int(req.Replicas)
	if r <= 0 {
		r = s.cfg.Replicas
	}
	v := s.View()
	byID := map[string]*ppb.Node{}
	for _, n := range v.Nodes {
		byID[n.Id] = n
	}
	tab := placement.FromView(v)
	out := &ppb.LocateResponse{Epoch: v.Epoch}
	for _, a := range req.Addresses {
		if len(a) == 0 {
			return nil, status.Error(codes.InvalidArgument, "placement: empty address")
		}
		loc := &ppb.Location{Address: a}
		for _, n := range tab.Pick(placement.KeyOf(a), r) {
			loc.Nodes = append(loc.Nodes, byID[n.ID])
		}
		out.Locations = append(out.Locations, loc)
	}
	return out, nil
}
