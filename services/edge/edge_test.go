package edge_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"shoal/services/edge"
	"shoal/services/natsd"
	sedge "shoal/shared/edge"
	"shoal/shared/rpc"
)

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startEdge(t *testing.T, allow string, ports ...string) *edge.Service {
	t.Helper()
	s, err := edge.New(edge.Config{Listen: "127.0.0.1:0", Allow: allow, Ports: strings.Join(ports, ",")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

// healthServer is a gRPC server answering health checks on a loopback port.
func healthServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func check(ctx context.Context, addr string) error {
	cc, err := rpc.Dial(addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// A gRPC client with SHOAL_PROXY set reaches a service by name through
// the edge, which resolves the name on its side; the same client fails
// when the edge refuses the port, so the call did go through the edge.
func TestGRPCThroughEdge(t *testing.T) {
	target := healthServer(t)
	port := portOf(t, target)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	open := startEdge(t, "127.0.0.0/8", port)
	t.Setenv(sedge.Env, open.Addr())
	if err := check(ctx, "localhost:"+port); err != nil {
		t.Fatalf("health check through the edge: %v", err)
	}

	closed := startEdge(t, "127.0.0.0/8", "1")
	t.Setenv(sedge.Env, closed.Addr())
	short, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if err := check(short, "localhost:"+port); err == nil {
		t.Fatal("a call succeeded through an edge that refuses its port: the proxy was bypassed")
	}
}

// NATS speaks first (INFO) as soon as the tunnel opens; the client must
// keep what it read ahead of the proxy's answer.
func TestNATSThroughEdge(t *testing.T) {
	ns, err := natsd.Start(natsd.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	u := strings.TrimPrefix(ns.ClientURL(), "nats://")
	e := startEdge(t, "127.0.0.0/8", portOf(t, u))
	t.Setenv(sedge.Env, e.Addr())
	nc, err := nats.Connect(ns.ClientURL(), append(sedge.NATSOptions(), nats.NoReconnect())...)
	if err != nil {
		t.Fatalf("connect through the edge: %v", err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("edge.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("edge.test", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("round trip through the edge: %v", err)
	}
	if string(m.Data) != "hello" {
		t.Fatalf("round trip through the edge: got %q", m.Data)
	}
}

// What the edge refuses, with the HTTP status a client sees.
func TestEdgeRefuses(t *testing.T) {
	target := healthServer(t)
	port := portOf(t, target)
	e := startEdge(t, "10.0.0.0/8", port, "7100")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		addr, want string
	}{
		{"127.0.0.1:" + port, "403"},         // outside the allowed networks
		{"10.1.2.3:9999", "403"},             // not a Shoal port
		{"no-such-host.invalid:7100", "502"}, // does not resolve
		{"missing-port", "400"},              // not HOST:PORT
	} {
		_, err := sedge.Dial(ctx, e.Addr(), tc.addr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CONNECT %s: got %v, want status %s", tc.addr, err, tc.want)
		}
	}

	// Not CONNECT, and not HTTP at all: an error answer, then close.
	for _, tc := range []struct{ send, want string }{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "405"},
		{"\x00\x01garbage\r\n\r\n", "400"},
	} {
		c, err := net.Dial("tcp", e.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(tc.send)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: no HTTP answer: %v", tc.send, err)
		}
		if got := strconv.Itoa(resp.StatusCode); got != tc.want {
			t.Errorf("%q: status %s, want %s", tc.send, got, tc.want)
		}
		c.Close()
	}
}

// Configuration mistakes are refused at start.
func TestEdgeConfig(t *testing.T) {
	for _, cfg := range []edge.Config{
		{Listen: "127.0.0.1:0", Allow: "", Ports: "7100"},
		{Listen: "127.0.0.1:0", Allow: "10.0.0.0/33", Ports: "7100"},
		{Listen: "127.0.0.1:0", Allow: "10.0.0.0/8", Ports: "70000"},
	} {
		if s, err := edge.New(cfg, nil); err == nil {
			_ = s.Stop()
			t.Errorf("edge.New(%+v) accepted", cfg)
		}
	}
}

// Stop ends open tunnels: the client's side sees EOF.
func TestStopClosesTunnels(t *testing.T) {
	ns, err := natsd.Start(natsd.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	u := strings.TrimPrefix(ns.ClientURL(), "nats://")
	e, err := edge.New(edge.Config{Listen: "127.0.0.1:0", Allow: "127.0.0.0/8", Ports: portOf(t, u)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sedge.Dial(ctx, e.Addr(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("tunnel to NATS: %q %v", line, err)
	}
	if err := e.Stop(); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1)
	for {
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("tunnel still open after Stop")
			}
			return
		}
	}
}
