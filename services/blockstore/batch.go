package blockstore

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "shoal/proto/blockstorepb"
	"shoal/services/blockstore/silo"
	"shoal/shared/block"
	"shoal/shared/rpc"
	"shoal/shared/telemetry"
)

const (
	// MaxBatchItems bounds the items of one PutBatch or GetBatch.
	MaxBatchItems = 4096
	// GetBatchMaxBytes is how much block data one GetBatch response carries;
	// the items past it are answered RESOURCE_EXHAUSTED, to be asked again.
	GetBatchMaxBytes = 1 << 20
)

// itemStatus is an item's error as the unary call would have returned it.
func itemStatus(err error) (code uint32, msg string) {
	st, _ := status.FromError(toStatus(err))
	return uint32(st.Code()), st.Message()
}

func batchErr(err error) *pb.BatchResult {
	code, msg := itemStatus(err)
	return &pb.BatchResult{Code: code, Message: msg}
}

// PutBatch validates and stores several blocks: one segment write, one
// index batch and one fsync of each for all of them.
func (n *Node) PutBatch(ctx context.Context, req *pb.PutBatchRequest) (*pb.PutBatchResponse, error) {
	if len(req.Puts) > MaxBatchItems {
		return nil, status.Errorf(codes.InvalidArgument, "blockstore: at most %d items per batch", MaxBatchItems)
	}
	results := make([]*pb.BatchResult, len(req.Puts))
	items := make([]silo.Item, 0, len(req.Puts))
	pos := make([]int, 0, len(req.Puts))
	size := 0
	for i, p := range req.Puts {
		addr, err := block.FromBytes(p.Address)
		if err != nil {
			results[i] = batchErr(err)
			continue
		}
		kind := block.Kind(p.Kind)
		if p.Kind == pb.BlockKind_BLOCK_KIND_UNSPECIFIED {
			kind = block.KindImmutable
		}
		if err := block.Validate(addr, kind, p.Data, n.cfg.MaxBlockSize); err != nil {
			results[i] = batchErr(err)
			continue
		}
		items = append(items, silo.Item{Addr: addr, Kind: kind, Data: p.Data})
		pos = append(pos, i)
		size += len(p.Data)
	}
	_, sp := telemetry.Tracer().Start(ctx, "silo.put", trace.WithAttributes(
		attribute.Int("batch.items", len(items)), attribute.Int("batch.bytes", size)))
	for j, r := range n.silo.PutMany(items) {
		if r.Err != nil {
			sp.RecordError(r.Err)
			results[pos[j]] = batchErr(r.Err)
			continue
		}
		results[pos[j]] = &pb.BatchResult{Existed: r.Existed}
	}
	sp.End()
	return &pb.PutBatchResponse{Results: results}, nil
}

// A GetBatch response's blocks are read into buffers of the message pool,
// which the codec sends as they are and gives back once gRPC has written
// them: a new slice per block read was mostly pages the node process had
// not touched, and copying each block into the response was a tenth of a
// node's CPU serving reads. The response's blocks are its own (inline ones
// are copies too).
func init() {
	rpc.SendItemsInPlace(&pb.GetBatchResponse{}, "results", "data", func(m proto.Message) []byte {
		r := m.(*pb.BatchResult)
		d := r.Data
		r.Data = nil
		return d
	})
}

func pooledBlock(n int) []byte { return *rpc.Buffer(n) }

// GetBatch reads several blocks, each after the silo's checksum check, up
// to GetBatchMaxBytes of data.
func (n *Node) GetBatch(ctx context.Context, req *pb.GetBatchRequest) (*pb.GetBatchResponse, error) {
	if len(req.Addresses) > MaxBatchItems {
		return nil, status.Errorf(codes.InvalidArgument, "blockstore: at most %d items per batch", MaxBatchItems)
	}
	_, sp := telemetry.Tracer().Start(ctx, "silo.get", trace.WithAttributes(attribute.Int("batch.items", len(req.Addresses))))
	defer sp.End()
	results := make([]*pb.BatchResult, len(req.Addresses))
	size := 0
	for i, a := range req.Addresses {
		if size >= GetBatchMaxBytes {
			results[i] = &pb.BatchResult{Code: uint32(codes.ResourceExhausted), Message: "blockstore: batch response full; ask again"}
			continue
		}
		addr, err := block.FromBytes(a)
		if err != nil {
			results[i] = batchErr(err)
			continue
		}
		data, kind, err := n.silo.GetAlloc(addr, pooledBlock)
		if err != nil {
			results[i] = batchErr(err)
			continue
		}
		size += len(data)
		results[i] = &pb.BatchResult{Data: data, Kind: pb.BlockKind(kind)}
	}
	sp.SetAttributes(attribute.Int("batch.bytes", size))
	return &pb.GetBatchResponse{Results: results}, nil
}

// PaxosBatch runs several acceptor operations concurrently, so the records
// they write share the WAL's group commit, and answers each on its own.
func (n *Node) PaxosBatch(ctx context.Context, req *pb.PaxosBatchRequest) (*pb.PaxosBatchResponse, error) {
	if len(req.Ops) > MaxBatchItems {
		return nil, status.Errorf(codes.InvalidArgument, "blockstore: at most %d items per batch", MaxBatchItems)
	}
	results := make([]*pb.PaxosResult, len(req.Ops))
	if len(req.Ops) == 1 {
		results[0] = n.paxosOp(req.Ops[0])
		return &pb.PaxosBatchResponse{Results: results}, nil
	}
	var wg sync.WaitGroup
	for i, op := range req.Ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = n.paxosOp(op)
		}()
	}
	wg.Wait()
	return &pb.PaxosBatchResponse{Results: results}, nil
}

func (n *Node) paxosOp(op *pb.PaxosOp) *pb.PaxosResult {
	var err error
	r := &pb.PaxosResult{}
	switch o := op.GetOp().(type) {
	case *pb.PaxosOp_Prepare:
		var resp *pb.PrepareResponse
		if resp, err = n.acceptor.Prepare(o.Prepare); err == nil {
			r.Result = &pb.PaxosResult_Prepare{Prepare: resp}
		}
	case *pb.PaxosOp_Accept:
		var resp *pb.AcceptResponse
		if resp, err = n.acceptor.Accept(o.Accept); err == nil {
			r.Result = &pb.PaxosResult_Accept{Accept: resp}
		}
	case *pb.PaxosOp_Learn:
		if err = n.acceptor.Learn(o.Learn); err == nil {
			r.Result = &pb.PaxosResult_Learn{Learn: &pb.LearnResponse{}}
		}
	case *pb.PaxosOp_Peek:
		var resp *pb.PeekResponse
		if resp, err = n.acceptor.Peek(o.Peek); err == nil {
			r.Result = &pb.PaxosResult_Peek{Peek: resp}
		}
	default:
		return &pb.PaxosResult{Code: uint32(codes.InvalidArgument), Message: "blockstore: empty Paxos operation"}
	}
	if err != nil {
		code, msg := itemStatus(err)
		return &pb.PaxosResult{Code: code, Message: msg}
	}
	return r
}
