// Package blockstore is a Shoal storage node: a silo on local disk served over
// gRPC, announced on NATS with heartbeats. It validates every block it is
// given (the address must match the content), so a faulty client cannot make
// it store bytes under someone else's address. It knows nothing about
// replication; replicas are the client's business (shared/dht).
package blockstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "shoal/proto/blockstorepb"
	"shoal/services/blockstore/silo"
	"shoal/shared/block"
	"shoal/shared/membership"
	"shoal/shared/paxos"
	"shoal/shared/rpc"
	"shoal/shared/telemetry"
)

// Node is a running storage node.
type Node struct {
	pb.UnimplementedBlockStoreServer

	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	silo     *silo.Silo
	acceptor *paxos.Acceptor
	srv      *grpc.Server
	lis      net.Listener
	started  int64

	stopOnce sync.Once
	done     chan struct{}
	wg       sync.WaitGroup
}

// New opens the node's silo. nc carries membership; it may be nil in unit
// tests that only exercise the gRPC side.
func New(cfg Config, nc *nats.Conn, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	if cfg.ID == "" {
		id, err := loadOrCreateID(cfg.Dir)
		if err != nil {
			return nil, err
		}
		cfg.ID = id
	}
	s, err := silo.Open(filepath.Join(cfg.Dir, "silo"), silo.Options{Capacity: cfg.Capacity, SegmentThreshold: cfg.SegmentThreshold,
		CompactEvery: cfg.CompactInterval, CompactDead: cfg.CompactDead, CompactRate: cfg.CompactRate})
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Node{cfg: cfg, log: log.With("node", cfg.ID), nc: nc, silo: s, acceptor: paxos.NewAcceptor(newSiloRecords(s), cfg.MaxBlockSize),
		done: make(chan struct{}), started: time.Now().UnixNano()}, nil
}

// loadOrCreateID keeps a node's identity across restarts, so a node that
// comes back is recognised as the holder of its old blocks.
func loadOrCreateID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(p); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := "node-" + hex.EncodeToString(r[:])
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", err
	}
	return id, os.Rename(tmp, p)
}

// ID is the node's identity.
func (n *Node) ID() string { return n.cfg.ID }

// Addr is the address other nodes dial (valid after Start): the advertised
// address, else the listen address, with an unspecified host (0.0.0.0, as in
// a container) replaced by this host's IP on the advertise network, or its
// first non-loopback IP. A swarm task has several interfaces (its overlay,
// docker_gwbridge, maybe ingress) in no guaranteed order, so "first" can be
// one other nodes cannot reach; -blockstore.advertise-network pins it.
func (n *Node) Addr() string {
	if n.cfg.Advertise != "" {
		return n.cfg.Advertise
	}
	a := n.cfg.Listen
	if n.lis != nil {
		a = n.lis.Addr().String()
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if own := ownIP(n.cfg.AdvertiseNetwork); own != "" {
			return net.JoinHostPort(own, port)
		}
	}
	return a
}

// ownIP returns this host's first non-loopback IPv4, restricted to the
// CIDR or interface named by network when it is set ("" if none matches).
func ownIP(network string) string {
	var addrs []net.Addr
	var err error
	var within *net.IPNet
	switch {
	case network == "":
		addrs, err = net.InterfaceAddrs()
	case strings.Contains(network, "/"):
		_, within, err = net.ParseCIDR(network)
		if err == nil {
			addrs, err = net.InterfaceAddrs()
		}
	default:
		var ifc *net.Interface
		if ifc, err = net.InterfaceByName(network); err == nil {
			addrs, err = ifc.Addrs()
		}
	}
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.To4() == nil {
			continue
		}
		if within != nil && !within.Contains(ipn.IP) {
			continue
		}
		return ipn.IP.String()
	}
	return ""
}

// Silo exposes the node's storage for tests and tools in this process.
func (n *Node) Silo() *silo.Silo { return n.silo }

// Start listens, serves gRPC, and begins heartbeating. It returns once the
// node accepts connections and has announced itself.
func (n *Node) Start(ctx context.Context) error {
	lis, err := net.Listen("tcp", n.cfg.Listen)
	if err != nil {
		return fmt.Errorf("blockstore: listen: %w", err)
	}
	n.lis = lis
	if n.cfg.Advertise == "" && n.cfg.AdvertiseNetwork != "" && ownIP(n.cfg.AdvertiseNetwork) == "" {
		// Advertising the unspecified address would send peers to themselves.
		_ = lis.Close()
		return fmt.Errorf("blockstore: no IPv4 address on advertise network %s", n.cfg.AdvertiseNetwork)
	}
	n.srv = grpc.NewServer(rpc.ServerOptions()...)
	pb.RegisterBlockStoreServer(n.srv, n)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(n.srv, hs)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("grpc serve", "err", err)
		}
	}()
	if n.nc != nil {
		if err := n.heartbeat(ctx); err != nil {
			return err
		}
		n.wg.Add(1)
		go n.heartbeatLoop()
	}
	n.log.Info("storage node up", "addr", n.Addr(), "zone", n.cfg.Zone)
	return nil
}

func (n *Node) heartbeatLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
			if err := n.heartbeat(context.Background()); err != nil {
				n.log.Warn("heartbeat", "err", err)
			}
		}
	}
}

func (n *Node) heartbeat(ctx context.Context) error {
	used, capacity, blocks := n.silo.Usage()
	return membership.Publish(ctx, n.nc, membership.SubjectHeartbeat, membership.Heartbeat{
		ID: n.cfg.ID, Addr: n.Addr(), Zone: n.cfg.Zone, Capacity: capacity, Used: used, Blocks: blocks, Started: n.started,
	})
}

// Stop announces a clean leave when leave is true, stops serving, and closes
// the silo. A node that stops without leaving is treated as failed (and
// expected back) until the eviction delay passes.
func (n *Node) Stop(leave bool) error {
	var err error
	n.stopOnce.Do(func() {
		close(n.done)
		if leave && n.nc != nil {
			_ = membership.Publish(context.Background(), n.nc, membership.SubjectLeave, membership.Leave{ID: n.cfg.ID})
			_ = n.nc.Flush()
		}
		if n.srv != nil {
			stopped := make(chan struct{})
			go func() { n.srv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				n.srv.Stop()
			}
		}
		n.wg.Wait()
		err = n.silo.Close()
	})
	return err
}

func toStatus(err error) error {
	switch {
	case errors.Is(err, silo.ErrFull):
		return status.Error(codes.ResourceExhausted, rpc.ErrFull.Error()+": "+err.Error())
	case errors.Is(err, silo.ErrCorrupt):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, silo.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	}
	return rpc.ToStatus(err)
}

func span(ctx context.Context, name string, addr []byte) trace.Span {
	_, sp := telemetry.Tracer().Start(ctx, name)
	if sp.IsRecording() { // the address's hex costs even when tracing is off
		sp.SetAttributes(attribute.String("block.address", hex.EncodeToString(addr)))
	}
	return sp
}

// A Put's data is done with when it returns (the silo writes it through),
// so the codec decodes it into a pooled buffer.
func init() { rpc.PoolField(&pb.PutRequest{}, "data") }

// Put validates and stores a block.
func (n *Node) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	defer rpc.Release(req)
	addr, err := block.FromBytes(req.Address)
	if err != nil {
		return nil, toStatus(err)
	}
	kind := block.Kind(req.Kind)
	if req.Kind == pb.BlockKind_BLOCK_KIND_UNSPECIFIED {
		kind = block.KindImmutable
	}
	if err := block.Validate(addr, kind, req.Data, n.cfg.MaxBlockSize); err != nil {
		return nil, toStatus(err)
	}
	sp := span(ctx, "silo.put", req.Address)
	sp.SetAttributes(attribute.Int("block.size", len(req.Data)))
	existed, err := n.silo.Put(addr, kind, req.Data)
	if err != nil {
		sp.RecordError(err)
	}
	sp.End()
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.PutResponse{Existed: existed}, nil
}

// Get returns a block after the silo's checksum check.
func (n *Node) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	addr, err := block.FromBytes(req.Address)
	if err != nil {
		return nil, toStatus(err)
	}
	data, kind, err := n.silo.Get(addr)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetResponse{Data: data, Kind: pb.BlockKind(kind)}, nil
}

// maxHasBatch bounds one Has request.
const maxHasBatch = 100_000

// Has answers a batch of presence checks.
func (n *Node) Has(_ context.Context, req *pb.HasRequest) (*pb.HasResponse, error) {
	if len(req.Addresses) > maxHasBatch {
		return nil, status.Errorf(codes.InvalidArgument, "blockstore: at most %d addresses per Has", maxHasBatch)
	}
	addrs := make([]block.Address, len(req.Addresses))
	for i, b := range req.Addresses {
		addr, err := block.FromBytes(b)
		if err != nil {
			return nil, toStatus(err)
		}
		addrs[i] = addr
	}
	if req.Touch {
		out, err := n.silo.Touch(addrs)
		if err != nil {
			return nil, toStatus(err)
		}
		return &pb.HasResponse{Present: out}, nil
	}
	out := make([]bool, len(addrs))
	for i, addr := range addrs {
		var err error
		if out[i], err = n.silo.Has(addr); err != nil {
			return nil, toStatus(err)
		}
	}
	return &pb.HasResponse{Present: out}, nil
}

// Delete removes a block from this node.
func (n *Node) Delete(_ context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	addr, err := block.FromBytes(req.Address)
	if err != nil {
		return nil, toStatus(err)
	}
	if req.IfTouchedBeforeUnixMs != 0 {
		deleted, kept, err := n.silo.DeleteIfUntouched(addr, req.IfTouchedBeforeUnixMs)
		if err != nil {
			return nil, toStatus(err)
		}
		return &pb.DeleteResponse{Existed: deleted || kept, Kept: kept}, nil
	}
	existed, err := n.silo.Delete(addr)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeleteResponse{Existed: existed}, nil
}

// Stat returns a block's size and kind.
func (n *Node) Stat(_ context.Context, req *pb.StatRequest) (*pb.StatResponse, error) {
	addr, err := block.FromBytes(req.Address)
	if err != nil {
		return nil, toStatus(err)
	}
	info, err := n.silo.Stat(addr)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StatResponse{Size: uint64(info.Size), Kind: pb.BlockKind(info.Kind)}, nil
}

// NodeStats reports the node's usage.
func (n *Node) NodeStats(context.Context, *pb.NodeStatsRequest) (*pb.NodeStatsResponse, error) {
	used, capacity, blocks := n.silo.Usage()
	return &pb.NodeStatsResponse{NodeId: n.cfg.ID, Zone: n.cfg.Zone, CapacityBytes: capacity, UsedBytes: used, Blocks: blocks,
		SegmentBytes: uint64(n.silo.DiskBytes())}, nil
}

// List streams stored addresses in order.
func (n *Node) List(req *pb.ListRequest, stream pb.BlockStore_ListServer) error {
	var after *block.Address
	if len(req.After) > 0 {
		a, err := block.FromBytes(req.After)
		if err != nil {
			return toStatus(err)
		}
		after = &a
	}
	limit := int(req.Limit)
	const page = 1024
	batch := &pb.ListResponse{NowUnixMs: time.Now().UnixMilli()}
	sent := 0
	var sendErr error
	err := n.silo.Range(after, func(a block.Address, info silo.Info) bool {
		batch.Addresses = append(batch.Addresses, append([]byte(nil), a[:]...))
		batch.Sizes = append(batch.Sizes, uint64(info.Size))
		batch.TouchedUnixMs = append(batch.TouchedUnixMs, info.Touched)
		sent++
		if len(batch.Addresses) == page {
			if sendErr = stream.Send(batch); sendErr != nil {
				return false
			}
			batch = &pb.ListResponse{}
		}
		return limit == 0 || sent < limit
	})
	if sendErr != nil {
		return sendErr
	}
	if err != nil {
		return toStatus(err)
	}
	if len(batch.Addresses) > 0 || sent == 0 {
		// An empty listing still sends one message: it carries the clock.
		return stream.Send(batch)
	}
	return nil
}
