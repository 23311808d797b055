// Package edge is a stack's edge service: an HTTP CONNECT proxy, published
// on each node's host port, through which processes outside the overlay
// network (the Docker volume plugin, the CLI on a host; shared/edge is their
// side) reach Shoal's services inside it. Swarm gives a managed plugin only
// the host's network, and storage nodes advertise overlay addresses, so
// without it a plugin could reach no storage node.
//
// It forwards bytes and nothing else: a tunnel is opened only to an address
// inside the allowed networks (the overlay's subnet) and to one of Shoal's
// ports, so the edge does not make the overlay an open relay; names are
// resolved here, inside the overlay, where the services' names resolve.
package edge

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures the edge proxy.
type Config struct {
	Listen string `yaml:"listen"`
	// Allow is a comma-separated list of CIDRs tunnels may reach.
	Allow string `yaml:"allow"`
	// Ports is a comma-separated list of ports tunnels may reach.
	Ports string `yaml:"ports"`
}

// RegisterFlags registers the service's flags under prefix.
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, prefix+"listen", "127.0.0.1:7400", "CONNECT proxy listen address")
	fs.StringVar(&c.Allow, prefix+"allow", "", "comma-separated CIDRs tunnels may reach (required: the overlay's subnet)")
	fs.StringVar(&c.Ports, prefix+"ports", "4222,7100,7200,7300", "comma-separated ports tunnels may reach (NATS, placement, storage, dedup)")
}

// handshakeTimeout bounds reading the CONNECT request and dialing.
const handshakeTimeout = 10 * time.Second

// Service is a running edge proxy.
type Service struct {
	log   *slog.Logger
	allow []*net.IPNet
	ports map[int]bool
	lis   net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New validates cfg and listens.
func New(cfg Config, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{log: log, ports: map[int]bool{}, conns: map[net.Conn]struct{}{}}
	for _, c := range strings.Split(cfg.Allow, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("edge: -edge.allow: %w", err)
		}
		s.allow = append(s.allow, n)
	}
	if len(s.allow) == 0 {
		return nil, errors.New("edge: -edge.allow names no network: the edge would reach nothing")
	}
	for _, p := range strings.Split(cfg.Ports, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("edge: -edge.ports: bad port %q", p)
		}
		s.ports[n] = true
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("edge: listen: %w", err)
	}
	s.lis = lis
	return s, nil
}

// Addr is the proxy's listen address.
func (s *Service) Addr() string { return s.lis.Addr().String() }

// Start serves until Stop.
func (s *Service) Start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.lis.Accept()
			if err != nil {
				return
			}
			if !s.track(c) {
				c.Close()
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.untrack(c)
				s.serve(c)
			}()
		}
	}()
}

func (s *Service) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Service) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Stop closes the listener and every tunnel.
func (s *Service) Stop() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := s.lis.Close()
	s.wg.Wait()
	return err
}

func reply(c net.Conn, code int, msg string) {
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(msg), msg)
}

func (s *Service) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		reply(c, http.StatusBadRequest, "edge: not an HTTP request\n")
		return
	}
	if req.Method != http.MethodConnect {
		reply(c, http.StatusMethodNotAllowed, "edge: only CONNECT HOST:PORT is served\n")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	up, code, err := s.dial(ctx, req.Host)
	if err != nil {
		s.log.Debug("edge: tunnel refused", "target", req.Host, "err", err)
		reply(c, code, err.Error()+"\n")
		return
	}
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, up)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(up, c)
	if tc, ok := up.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	<-done
}

// dial opens the tunnel's far end: target's port must be allowed, and the
// address dialed is one of its resolved addresses inside the allowed
// networks (a name such as placement resolves to every task, dnsrr).
func (s *Service) dial(ctx context.Context, target string) (net.Conn, int, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("edge: CONNECT needs HOST:PORT: %w", err)
	}
	pn, err := strconv.Atoi(port)
	if err != nil || !s.ports[pn] {
		return nil, http.StatusForbidden, fmt.Errorf("edge: port %s is not a Shoal service port", port)
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, http.StatusBadGateway, fmt.Errorf("edge: resolving %s: %w", host, err)
	}
	var ok []net.IP
	for _, ip := range ips {
		for _, n := range s.allow {
			if n.Contains(ip.IP) {
				ok = append(ok, ip.IP)
				break
			}
		}
	}
	if len(ok) == 0 {
		return nil, http.StatusForbidden, fmt.Errorf("edge: %s is outside the networks the edge serves", host)
	}
	rand.Shuffle(len(ok), func(i, j int) { ok[i], ok[j] = ok[j], ok[i] })
	var d net.Dialer
	var errs []error
	for _, ip := range ok {
		up, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
		if err == nil {
			return up, 0, nil
		}
		errs = append(errs, err)
	}
	return nil, http.StatusBadGateway, fmt.Errorf("edge: %w", errors.Join(errs...))
}
