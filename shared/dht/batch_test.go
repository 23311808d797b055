package dht

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	bpb "shoal/proto/blockstorepb"
	ppb "shoal/proto/placementpb"
)

// stallNode answers PutBatch only once released, after reporting that a
// batch arrived.
type stallNode struct {
	bpb.UnimplementedBlockStoreServer
	got     chan int
	release chan struct{}
}

func (s *stallNode) PutBatch(_ context.Context, req *bpb.PutBatchRequest) (*bpb.PutBatchResponse, error) {
	s.got <- len(req.Puts)
	<-s.release
	return &bpb.PutBatchResponse{Results: make([]*bpb.BatchResult, len(req.Puts))}, nil
}

// A put's caller may reuse its buffer once the put returns, even when its
// context ends first: a put already in a batch on its way returns only
// once that call is done with it, and one still queued returns at once
// (it is never sent).
func TestCancelledPutLeavesNoReaderBehind(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node := &stallNode{got: make(chan int, 4), release: make(chan struct{})}
	srv := grpc.NewServer()
	bpb.RegisterBlockStoreServer(srv, node)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	c := &Client{cfg: Config{CallTimeout: time.Minute}, conns: map[string]*grpc.ClientConn{}, changed: make(chan struct{}), view: &ppb.View{}}
	defer func() { _ = c.Close() }()
	n := &ppb.Node{Id: "a", Addr: lis.Addr().String()}
	put := func(ctx context.Context) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := c.batchPut(ctx, n, &bpb.PutRequest{Address: make([]byte, 32), Data: []byte("data")})
			done <- err
		}()
		return done
	}
	sentCtx, cancelSent := context.WithCancel(context.Background())
	sent := put(sentCtx)
	<-node.got // its batch is at the node
	// With the one call per node in flight, the next put waits in the queue.
	queuedCtx, cancelQueued := context.WithCancel(context.Background())
	queued := put(queuedCtx)
	cancelQueued()
	wantCanceled(t, queued, "a cancelled put that was never sent")
	cancelSent()
	select {
	case err := <-sent:
		t.Fatalf("a cancelled put returned while its batch was still in flight: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(node.release)
	wantCanceled(t, sent, "a cancelled put whose batch was answered")
	select {
	case k := <-node.got:
		t.Fatalf("the cancelled queued put was sent after all (a batch of %d)", k)
	default:
	}
}

// wantCanceled waits for a put's outcome, which must be context.Canceled.
func wantCanceled(t *testing.T, outcome <-chan error, what string) {
	t.Helper()
	select {
	case err := <-outcome:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: %v, want context.Canceled", what, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}
