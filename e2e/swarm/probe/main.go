// Command probe is the swarm suite's helper inside the cluster's own
// network, shipped in an image built FROM the shoal image (so the shoal CLI
// sits beside it):
//
//	probe otlp [-listen :4317]     OTLP/gRPC trace receiver; prints one JSON line per span
//	probe nats -url URL -want N    prints the storage node ids heard on one NATS server
//	probe s3 mb|put|get ...        S3 client (see s3.go)
//	probe idle                     keeps a client container alive for `docker exec`
//
// It is a test tool, not part of Shoal: nothing in services/ depends on it.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"shoal/shared/membership"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe otlp|nats|s3|idle [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "otlp":
		err = runOTLP(ctx, os.Args[2:])
	case "nats":
		err = runNATS(ctx, os.Args[2:])
	case "s3":
		err = runS3(ctx, os.Args[2:])
	case "idle":
		<-ctx.Done()
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

// Span is what the receiver prints for each span it gets; the test parses it.
type Span struct {
	Trace    string `json:"trace"`
	Span     string `json:"span"`
	Parent   string `json:"parent"`
	Name     string `json:"name"`
	Kind     int32  `json:"kind"`
	Service  string `json:"service"`
	Instance string `json:"instance"`
	// Peer is the IP the export came from: which container sent the span,
	// whatever its resource attributes claim.
	Peer string `json:"peer"`
	// Bucket is the S3 frontend's s3.bucket attribute, if any.
	Bucket string `json:"bucket,omitempty"`
}

type receiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu  sync.Mutex
	enc *json.Encoder
}

func attr(attrs []*commonpb.KeyValue, key string) string {
	for _, kv := range attrs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func (r *receiver) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	from := ""
	if p, ok := peer.FromContext(ctx); ok {
		if h, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			from = h
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		res := rs.GetResource().GetAttributes()
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				_ = r.enc.Encode(Span{
					Trace: hex.EncodeToString(s.GetTraceId()), Span: hex.EncodeToString(s.GetSpanId()),
					Parent: hex.EncodeToString(s.GetParentSpanId()), Name: s.GetName(), Kind: int32(s.GetKind()),
					Service: attr(res, "service.name"), Instance: attr(res, "service.instance.id"), Peer: from,
					Bucket: attr(s.GetAttributes(), "s3.bucket"),
				})
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func runOTLP(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("otlp", flag.ContinueOnError)
	listen := fs.String("listen", ":4317", "OTLP/gRPC listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, &receiver{enc: json.NewEncoder(os.Stdout)})
	// Lets the image's HEALTHCHECK (`shoal health`) tell swarm it is up.
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	fmt.Fprintln(os.Stderr, "otlp receiver on", lis.Addr())
	return srv.Serve(lis)
}

func runNATS(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nats", flag.ContinueOnError)
	url := fs.String("url", "", "one NATS server, e.g. nats://nats2:4222")
	want := fs.Int("want", 1, "distinct storage nodes to hear before printing")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// One server only, no failover: the point is what this server relays.
	nc, err := nats.Connect(*url, nats.DontRandomize(), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	seen := map[string]bool{}
	ch := make(chan *nats.Msg, 64)
	if _, err := nc.ChanSubscribe(membership.SubjectHeartbeat, ch); err != nil {
		return err
	}
	deadline := time.After(*timeout)
	for len(seen) < *want {
		select {
		case m := <-ch:
			var hb membership.Heartbeat
			if json.Unmarshal(m.Data, &hb) == nil && hb.ID != "" {
				seen[hb.ID] = true
			}
		case <-deadline:
			return fmt.Errorf("%s: heard %d of %d nodes in %v: %v", *url, len(seen), *want, *timeout, keys(seen))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, id := range keys(seen) {
		fmt.Println(id)
	}
	return nil
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
