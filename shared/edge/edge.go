// Package edge is the client side of a stack's edge service: an HTTP
// CONNECT proxy that lets a process outside the swarm's overlay network
// reach Shoal's services inside it. The Docker volume plugin and the CLI run
// in a node's host network namespace, where overlay addresses (the storage
// nodes advertise theirs) do not route; through the edge they dial the same
// names and addresses as a task would (placement:7100, 10.231.0.7:7200).
//
// The proxy is process-wide, from the environment (SHOAL_PROXY=HOST:PORT),
// so every gRPC connection (shared/rpc.Dial) and NATS connection
// (NATSOptions) of the process goes through it without each caller
// carrying a setting.
package edge

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

// Env names the environment variable holding the proxy's HOST:PORT.
const Env = "SHOAL_PROXY"

// Proxy is the process's proxy address, "" to dial directly.
func Proxy() string { return os.Getenv(Env) }

// Dial opens a TCP connection to addr (HOST:PORT, resolved by the proxy)
// through the CONNECT proxy at proxy.
func Dial(ctx context.Context, proxy, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, fmt.Errorf("edge proxy %s: %w", proxy, err)
	}
	// The handshake is bounded by ctx; the tunnel afterwards is not.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr); err != nil {
		conn.Close()
		return nil, fmt.Errorf("edge proxy %s: %w", proxy, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("edge proxy %s: CONNECT %s: %w", proxy, addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, fmt.Errorf("edge proxy %s: CONNECT %s: %s", proxy, addr, resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// The peer spoke first (NATS does): keep what was read ahead.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// natsDialer dials NATS servers through the proxy.
type natsDialer struct{ proxy string }

func (d natsDialer) Dial(_, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Dial(ctx, d.proxy, addr)
}

// NATSOptions are the options a NATS connection of this process needs:
// the proxy's dialer when one is set, else none.
func NATSOptions() []nats.Option {
	if p := Proxy(); p != "" {
		return []nats.Option{nats.SetCustomDialer(natsDialer{proxy: p})}
	}
	return nil
}
