// Package natsd runs an embedded NATS server (nats-server/v2) so Shoal needs
// no separate message broker: the all-in-one runs one, a swarm runs three
// clustered through routes. Only membership and heal events travel on it.
package natsd

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures the embedded server.
type Config struct {
	Listen        string `yaml:"listen"`
	ClusterName   string `yaml:"cluster_name"`
	ClusterListen string `yaml:"cluster_listen"`
	Routes        string `yaml:"routes"`
}

// RegisterFlags registers the server's flags under prefix.
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, prefix+"listen", "127.0.0.1:4222", "client listen address of the embedded NATS server")
	fs.StringVar(&c.ClusterName, prefix+"cluster-name", "shoal", "NATS cluster name")
	fs.StringVar(&c.ClusterListen, prefix+"cluster-listen", "", "route listen address for a NATS cluster (empty: no cluster)")
	fs.StringVar(&c.Routes, prefix+"routes", "", "comma-separated nats-route:// URLs of the other cluster members")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("natsd: bad -nats.listen %q: %w", c.Listen, err)
	}
	if c.Routes != "" && c.ClusterListen == "" {
		return errors.New("natsd: -nats.routes needs -nats.cluster-listen")
	}
	return nil
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

func hostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return h, port, err
}

// Start starts the server and waits until it accepts clients.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, port, err := hostPort(cfg.Listen)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		// nats-server reads 0 as "the default port"; Shoal's :0 means any.
		port = server.RANDOM_PORT
	}
	opts := &server.Options{Host: host, Port: port, NoSigs: true, NoLog: true, MaxPayload: 8 << 20}
	if cfg.ClusterListen != "" {
		ch, cp, err := hostPort(cfg.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("natsd: bad -nats.cluster-listen: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: ch, Port: cp}
		for _, r := range strings.Split(cfg.Routes, ",") {
			if r = strings.TrimSpace(r); r == "" {
				continue
			}
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("natsd: bad route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsd: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsd: not ready on %s", cfg.Listen)
	}
	return &Server{ns: ns}, nil
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Stop shuts the server down.
func (s *Server) Stop() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
