package blockstore

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	pb "shoal/proto/blockstorepb"
	"shoal/services/blockstore/silo"
	"shoal/shared/block"
	"shoal/shared/sizedcache"
)

// siloRecords stores acceptor records in the node's silo, and keeps the
// decoded records of recently used blocks: a hot mutable block (an S3 index
// shard, up to 256 KiB) is otherwise read from the LSM and unmarshalled on
// every Peek, Prepare and Accept.
type siloRecords struct {
	s     *silo.Silo
	cache *sizedcache.Cache[block.Address, *pb.AcceptorRecord]
}

// recordCacheBytes bounds one node's record cache.
const recordCacheBytes = 32 << 20

func newSiloRecords(s *silo.Silo) *siloRecords {
	return &siloRecords{s: s, cache: sizedcache.New[block.Address, *pb.AcceptorRecord](recordCacheBytes)}
}

func (r *siloRecords) Load(a block.Address) (*pb.AcceptorRecord, error) {
	if rec, ok := r.cache.Get(a); ok {
		return shallow(rec), nil
	}
	b, err := r.s.LoadRecord(a)
	if err != nil || b == nil {
		return nil, err
	}
	rec := &pb.AcceptorRecord{}
	if err := proto.Unmarshal(b, rec); err != nil {
		return nil, errors.Join(silo.ErrCorrupt, err)
	}
	r.cache.Put(a, rec, len(b))
	return shallow(rec), nil
}

func (r *siloRecords) Store(a block.Address, rec *pb.AcceptorRecord) error {
	b, err := proto.Marshal(rec)
	if err != nil {
		return err
	}
	if err := r.s.StoreRecord(a, b); err != nil {
		r.cache.Drop(a)
		return err
	}
	r.cache.Put(a, shallow(rec), len(b))
	return nil
}

// shallow copies a record's fields. The acceptor changes a record only by
// replacing its fields (never the ballots or state they point to), so a
// shallow copy is enough to keep the cached one as stored.
func shallow(rec *pb.AcceptorRecord) *pb.AcceptorRecord {
	return &pb.AcceptorRecord{Promised: rec.Promised, Accepted: rec.Accepted, State: rec.State}
}

func (r *siloRecords) Sync() error { return r.s.SyncRecords() }

// paxosStatus maps acceptor errors through the shared table, so the
// proposer matches them with errors.Is on its side.
func paxosStatus(err error) error {
	return toStatus(err)
}

// Prepare is phase 1 of Paxos on one mutable block.
func (n *Node) Prepare(_ context.Context, req *pb.PrepareRequest) (*pb.PrepareResponse, error) {
	r, err := n.acceptor.Prepare(req)
	return r, paxosStatus(err)
}

// Accept is phase 2 of Paxos on one mutable block.
func (n *Node) Accept(_ context.Context, req *pb.AcceptRequest) (*pb.AcceptResponse, error) {
	r, err := n.acceptor.Accept(req)
	return r, paxosStatus(err)
}

// Learn installs a decided state.
func (n *Node) Learn(_ context.Context, req *pb.LearnRequest) (*pb.LearnResponse, error) {
	if err := n.acceptor.Learn(req); err != nil {
		return nil, paxosStatus(err)
	}
	return &pb.LearnResponse{}, nil
}

// Peek returns the accepted state without promising.
func (n *Node) Peek(_ context.Context, req *pb.PeekRequest) (*pb.PeekResponse, error) {
	r, err := n.acceptor.Peek(req)
	return r, paxosStatus(err)
}
