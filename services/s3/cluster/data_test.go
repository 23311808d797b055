package cluster

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"shoal/proto/dedupb"
)

// streamOnly is a dedup tier from before ReadBatch: it serves Read from
// memory and leaves ReadBatch unimplemented.
type streamOnly struct {
	dedupb.UnimplementedDedupServer
	body    []byte
	streams atomic.Int64
}

func (s *streamOnly) Read(req *dedupb.ReadRequest, st grpc.ServerStreamingServer[dedupb.ReadResponse]) error {
	s.streams.Add(1)
	end := min(int64(len(s.body)), req.Offset+req.Length)
	if req.Length < 0 {
		end = int64(len(s.body))
	}
	if req.Offset > end {
		return status.Error(codes.InvalidArgument, "range")
	}
	return st.Send(&dedupb.ReadResponse{Data: s.body[req.Offset:end]})
}

// Against a dedup tier without ReadBatch, small reads fall back to the
// stream, once told so, and keep working.
func TestSmallReadsFallBackToTheStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	old := &streamOnly{body: []byte("hello, small object")}
	dedupb.RegisterDedupServer(srv, old)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	d := NewData(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ref := wrapRef("vol", []byte("inner"))
	for i := range 3 {
		rc, err := d.Read(ctx, ref, 7, 5)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		got, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil || !bytes.Equal(got, []byte("small")) {
			t.Fatalf("read %d: %q, %v", i, got, err)
		}
	}
	if d.Batches.Load() != 1 || !d.unbatched.Load() {
		t.Fatalf("%d ReadBatch calls, unbatched=%v: want one refused call, then streams", d.Batches.Load(), d.unbatched.Load())
	}
	if n := old.streams.Load(); n != 3 {
		t.Fatalf("%d Read streams, want 3", n)
	}
}
