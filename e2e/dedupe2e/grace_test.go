package dedupe2e

import (
	"math"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	dpb "shoal/proto/dedupb"
	"shoal/shared/dht"
)

// A grace period the server cannot represent is refused, and one longer
// than the nodes' clocks have run sweeps nothing: neither may turn into a
// short grace period and sweep a block an unfinished write is about to
// reference. (A grace of 2^62 seconds once wrapped to zero in
// nanoseconds and swept such a block.)
func TestCollectGraceBounds(t *testing.T) {
	c, d := start(t, 3)
	ctx := ctxT(t, time.Minute)
	// A block no root references yet, as an unfinished write leaves it.
	addr, err := c.Client(dht.Config{}).Put(ctx, randBytes(41, 10_000))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(d.Service.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := dpb.NewDedupClient(conn)
	for _, g := range []int64{1 << 62, math.MaxInt64, math.MaxInt64 / int64(time.Second) * 2} {
		_, err := api.Collect(ctx, &dpb.CollectRequest{GraceSeconds: g})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("grace %d s: %v, want InvalidArgument", g, err)
		}
	}
	// 80 years: longer than the nodes' clocks have run since 1970.
	res, err := api.Collect(ctx, &dpb.CollectRequest{GraceSeconds: 80 * 365 * 24 * 3600})
	if err != nil {
		t.Fatalf("grace of 80 years: %v", err)
	}
	if res.Swept != 0 {
		t.Fatalf("grace of 80 years swept %d blocks", res.Swept)
	}
	if _, err := c.Client(dht.Config{}).Get(ctx, addr); err != nil {
		t.Fatalf("the unreferenced fresh block is gone: %v", err)
	}
}
