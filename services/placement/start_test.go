package placement

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"shoal/services/natsd"
)

// signalHandler closes seen at the first record whose message is msg.
type signalHandler struct {
	msg  string
	seen chan struct{}
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *signalHandler) WithGroup(string) slog.Handler            { return h }
func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.msg) {
		select {
		case <-h.seen:
		default:
			close(h.seen)
		}
	}
	return nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitingService is a placement replica whose NATS connection retries
// natsAddr until a server listens there, and a handler that signals the
// replica's first "waiting for NATS".
func waitingService(t *testing.T, natsAddr string) (*Service, *signalHandler) {
	t.Helper()
	nc, err := nats.Connect("nats://"+natsAddr, nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	h := &signalHandler{msg: "waiting for NATS", seen: make(chan struct{})}
	s, err := New(Config{Listen: "127.0.0.1:0", DownAfter: time.Second, EvictAfter: time.Minute, Replicas: 3}, nc, slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	s.natsWait = 100 * time.Millisecond
	return s, h
}

// In a stack the placement tier may start before NATS does: Start waits for
// the server instead of failing (which had swarm restart the task), and
// serves once the subscriptions are in place.
func TestStartWaitsForNATS(t *testing.T) {
	natsAddr := freeAddr(t)
	s, h := waitingService(t, natsAddr)
	started := make(chan error, 1)
	go func() { started <- s.Start(context.Background()) }()
	select {
	case err := <-started:
		t.Fatalf("Start returned before NATS was up: %v", err)
	case <-h.seen:
	case <-time.After(30 * time.Second):
		t.Fatal("Start neither waited for NATS nor returned")
	}
	ns, err := natsd.Start(natsd.Config{Listen: natsAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("Start after NATS came up: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start still waiting 30 s after NATS came up")
	}
	defer func() { _ = s.Stop() }()
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health after start: %v", err)
	}
}

// A context cancelled while waiting ends Start with an error.
func TestStartGivesUpWithContext(t *testing.T) {
	s, h := waitingService(t, freeAddr(t))
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan error, 1)
	go func() { started <- s.Start(ctx) }()
	<-h.seen
	cancel()
	select {
	case err := <-started:
		if err == nil || !strings.Contains(err.Error(), "waiting for NATS") {
			t.Fatalf("Start after cancel: %v, want a waiting-for-NATS error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start ignored its context")
	}
}
