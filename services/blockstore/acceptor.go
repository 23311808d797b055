package blockstore

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	pb "shoal/proto/blockstorepb"
	"shoal/services/blockstore/silo"
	"shoal/shared/block"
)

// siloRecords stores acceptor records in the node's silo.
type siloRecords struct{ s *silo.Silo }

func (r siloRecords) Load(a block.Address) (*pb.AcceptorRecord, error) {
	b, err := r.s.LoadRecord(a)
	if err != nil || b == nil {
		return nil, err
	}
	rec := &pb.AcceptorRecord{}
	if err := proto.Unmarshal(b, rec); err != nil {
		return nil, errors.Join(silo.ErrCorrupt, err)
	}
	return rec, nil
}

func (r siloRecords) Store(a block.Address, rec *pb.AcceptorRecord) error {
	b, err := proto.Marshal(rec)
	if err != nil {
		return err
	}
	return r.s.StoreRecord(a, b)
}

func (r siloRecords) Sync() error { return r.s.SyncRecords() }

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
