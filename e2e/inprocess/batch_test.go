package inprocess

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/e2e/framework"
	bpb "shoal/proto/blockstorepb"
	"shoal/services/blockstore"
	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/rpc"
)

// Many concurrent small puts and gets go through the client's per-node
// batches; every block must come back intact from every replica.
func TestConcurrentSmallBlocksBatched(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3})
	// 400 puts of up to 70 KiB queue behind each other in the per-node
	// batches (one call in flight per node), and a call's deadline covers
	// its time in the queue: the framework's 3 s, meant to give up on dead
	// nodes quickly, was seen running out under -race on a busy machine.
	// Nothing is down here; the test is about what comes back.
	cl := c.Client(dht.Config{Replicas: 3, WriteQuorum: 2, CallTimeout: 30 * time.Second})
	ctx := ctxT(t)
	const n = 400
	datas := make([][]byte, n)
	addrs := make([]block.Address, n)
	for i := range datas {
		datas[i] = randBytes(t, 1+i*163%(70<<10)) // up to 70 KiB: some over the batching limit
	}
	datas[n-1] = datas[0] // the same block twice, concurrently
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := cl.Put(ctx, datas[i])
			if err != nil {
				errs <- err
				return
			}
			addrs[i] = a
			got, err := cl.Get(ctx, a)
			if err != nil {
				errs <- err
			} else if !bytes.Equal(got, datas[i]) {
				errs <- errors.New("block came back different")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	cl.Close() // waits for the third replica writes
	for i, a := range addrs {
		if h := holders(t, c, a); h != 3 {
			t.Fatalf("block %d on %d nodes, want 3", i, h)
		}
	}
}

// Batch calls answer each item as its own call would: bad items fail
// alone, a full GetBatch response defers the rest, oversize batches are
// refused.
func TestBatchCallsPerItem(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3})
	ctx := ctxT(t)
	bs := dialNode(t, c.Nodes[0].Addr())
	good := randBytes(t, 3000)
	ga := block.Sum(good)
	wrong := block.Sum([]byte("other"))
	resp, err := bs.PutBatch(ctx, &bpb.PutBatchRequest{Puts: []*bpb.PutRequest{
		{Address: wrong[:], Data: []byte("data")},
		{Address: ga[:], Data: good},
		{Address: []byte{1, 2}, Data: []byte("x")},
		{Address: ga[:], Data: good},
	}})
	if err != nil || len(resp.Results) != 4 {
		t.Fatalf("PutBatch: %v", err)
	}
	if codes.Code(resp.Results[0].Code) != codes.InvalidArgument || codes.Code(resp.Results[2].Code) != codes.InvalidArgument {
		t.Fatalf("bad items: %v / %v", resp.Results[0], resp.Results[2])
	}
	if resp.Results[1].Code != 0 || resp.Results[3].Code != 0 {
		t.Fatalf("good items: %v / %v", resp.Results[1], resp.Results[3])
	}
	if ok, _ := c.Nodes[0].Silo().Has(ga); !ok {
		t.Fatal("good item not stored")
	}
	if ok, _ := c.Nodes[0].Silo().Has(wrong); ok {
		t.Fatal("mismatched item stored")
	}

	// Three 1 MiB blocks: the response fills after the first.
	var bigs [][]byte
	req := &bpb.GetBatchRequest{Addresses: [][]byte{wrong[:]}}
	for range 3 {
		d := randBytes(t, blockstore.GetBatchMaxBytes)
		a := block.Sum(d)
		if _, err := bs.Put(ctx, &bpb.PutRequest{Address: a[:], Data: d}); err != nil {
			t.Fatal(err)
		}
		bigs = append(bigs, d)
		req.Addresses = append(req.Addresses, a[:])
	}
	gr, err := bs.GetBatch(ctx, req)
	if err != nil || len(gr.Results) != 4 {
		t.Fatalf("GetBatch: %v", err)
	}
	if codes.Code(gr.Results[0].Code) != codes.NotFound {
		t.Fatalf("missing block: %v", gr.Results[0])
	}
	if gr.Results[1].Code != 0 || !bytes.Equal(gr.Results[1].Data, bigs[0]) {
		t.Fatalf("first big block: code %d, %d bytes", gr.Results[1].Code, len(gr.Results[1].Data))
	}
	for _, r := range gr.Results[2:] {
		if codes.Code(r.Code) != codes.ResourceExhausted || len(r.Data) != 0 {
			t.Fatalf("past the response limit: code %d, %d bytes", r.Code, len(r.Data))
		}
	}
	// The client asks again for what a full response deferred.
	cl := c.Client(dht.Config{Replicas: 3, WriteQuorum: 2})
	var wg sync.WaitGroup
	for _, d := range bigs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := cl.Get(ctx, block.Sum(d)); err != nil || !bytes.Equal(got, d) {
				t.Errorf("client get of a big block: %v", err)
			}
		}()
	}
	wg.Wait()

	_, err = bs.GetBatch(ctx, &bpb.GetBatchRequest{Addresses: make([][]byte, blockstore.MaxBatchItems+1)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("oversize batch: %v", err)
	}
}

// A Paxos batch answers each operation as its own call would: a malformed
// one fails alone, and a read of an unknown block is an empty state.
func TestPaxosBatchPerItem(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3})
	ctx := ctxT(t)
	bs := dialNode(t, c.Nodes[0].Addr())
	unknown := block.Sum([]byte("no such mutable block"))
	resp, err := bs.PaxosBatch(ctx, &bpb.PaxosBatchRequest{Ops: []*bpb.PaxosOp{
		{},
		{Op: &bpb.PaxosOp_Peek{Peek: &bpb.PeekRequest{Address: []byte{1}}}},
		{Op: &bpb.PaxosOp_Peek{Peek: &bpb.PeekRequest{Address: unknown[:]}}},
		{Op: &bpb.PaxosOp_Prepare{Prepare: &bpb.PrepareRequest{Address: unknown[:]}}},
	}})
	if err != nil || len(resp.Results) != 4 {
		t.Fatalf("PaxosBatch: %v", err)
	}
	for i := range 2 {
		if codes.Code(resp.Results[i].Code) != codes.InvalidArgument {
			t.Fatalf("malformed op %d: %v", i, resp.Results[i])
		}
	}
	if r := resp.Results[2]; r.Code != 0 || r.GetPeek() == nil || r.GetPeek().State != nil {
		t.Fatalf("peek of an unknown block: %v", r)
	}
	if r := resp.Results[3]; codes.Code(r.Code) != codes.InvalidArgument {
		t.Fatalf("prepare without a ballot: %v", r)
	}
	_, err = bs.PaxosBatch(ctx, &bpb.PaxosBatchRequest{Ops: make([]*bpb.PaxosOp, blockstore.MaxBatchItems+1)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("oversize batch: %v", err)
	}
}

// dialNode is a raw gRPC client of one storage node, closed at test end.
func dialNode(t *testing.T, addr string) bpb.BlockStoreClient {
	t.Helper()
	cc, err := rpc.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return bpb.NewBlockStoreClient(cc)
}
