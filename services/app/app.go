package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"

	"shoal/services/blockstore"
	"shoal/services/dedup"
	"shoal/services/edge"
	"shoal/services/natsd"
	"shoal/services/nbd"
	"shoal/services/placement"
	"shoal/services/s3"
	"shoal/shared/dht"
)

// Config is the whole process's configuration. YAML keys mirror the flag
// prefixes: nats, placement, blockstore, dht.
type Config struct {
	Target  string `yaml:"target"`
	DataDir string `yaml:"data"`
	NATSURL string `yaml:"nats_url"`
	// Nodes is how many storage nodes this process runs (the all-in-one
	// runs three, each with its own silo, port and zone).
	Nodes int `yaml:"nodes"`

	NATS       natsd.Config      `yaml:"nats"`
	Placement  placement.Config  `yaml:"placement"`
	Blockstore blockstore.Config `yaml:"blockstore"`
	DHT        dht.Config        `yaml:"dht"`
	S3         s3.Config         `yaml:"s3"`

	Dedup dedup.Config `yaml:"dedup"`
	NBD   nbd.Config   `yaml:"nbd"`
	Edge  edge.Config  `yaml:"edge"`
}

// RegisterFlags registers every flag of the process; each is registered here
// once, through its component's RegisterFlags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", All, "comma-separated services to run: "+fmt.Sprint(Known()))
	fs.StringVar(&c.DataDir, "data", envOr("SHOAL_DATA", "./data"), "directory holding all local state (env SHOAL_DATA)")
	fs.StringVar(&c.NATSURL, "nats.url", "", "NATS URL (default: the embedded server when -target includes nats, else nats://127.0.0.1:4222)")
	fs.IntVar(&c.Nodes, "nodes", 0, "storage nodes to run in this process (default: 3 with -target=all, else 1)")
	c.NATS.RegisterFlags("nats.", fs)
	c.Placement.RegisterFlags("placement.", fs)
	c.Blockstore.RegisterFlags("blockstore.", fs)
	c.DHT.RegisterFlags("dht.", fs)
	c.S3.RegisterFlags("s3.", fs)

	c.Dedup.RegisterFlags("dedup.", fs)
	c.NBD.RegisterFlags("nbd.", fs)
	c.Edge.RegisterFlags("edge.", fs)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Load applies defaults, then the YAML file named by -config.file (if any),
// then the flags given on the command line, in that order.
func Load(args []string, stderr io.Writer) (*Config, error) {
	cfg := &Config{}
	fs := flag.NewFlagSet("shoal serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var file string
	fs.StringVar(&file, "config.file", "", "YAML configuration file (flags override it)")
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(b, cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		// Flags given explicitly win over the file.
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// Process is a running set of services.
type Process struct {
	cfg      *Config
	log      *slog.Logger
	targets  []string
	NATS     *natsd.Server
	nc       *nats.Conn
	Place    *placement.Service
	Nodes    []*blockstore.Node
	s3       *s3Service
	Dedup    *dedup.Service
	NBD      *nbd.Service
	Edge     *edge.Service
	stoppers []func() error
}

// ErrConfig marks a configuration error found before anything started.
var ErrConfig = errors.New("configuration")

// Start starts the configured services in dependency order. On error,
// whatever started is stopped again. Every target's configuration is
// checked first: a bad flag of the last service to start fails at once,
// with ErrConfig, not after the others are up.
func Start(ctx context.Context, cfg *Config, log *slog.Logger) (*Process, error) {
	targets, err := ParseTargets(cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	p := &Process{cfg: cfg, log: log, targets: targets}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if p.has(Blockstore) {
		raiseProcs()
	}
	for _, t := range targets {
		if err := p.start(ctx, t); err != nil {
			// The start error is the one to report; Stop's is a
			// consequence of it.
			_ = p.Stop()
			return nil, fmt.Errorf("start %s: %w", t, err)
		}
	}
	return p, nil
}

// raiseProcs gives a process that hosts storage nodes more Ps than CPUs.
// fsync and pwrite are blocking syscalls: each holds its P until the
// runtime's sysmon takes it back, which can be milliseconds once sysmon has
// backed off. With GOMAXPROCS = CPUs, two nodes syncing at once leave no P
// to run the gRPC handlers that would fill the next group commit; measured
// on 2 cores, 4 KiB puts went from ~730/s to ~1,600/s with 4× the Ps. An
// explicit GOMAXPROCS in the environment wins.
func raiseProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if n := runtime.GOMAXPROCS(0); n < 4*runtime.NumCPU() {
		runtime.GOMAXPROCS(max(4*n, 8))
	}
}

func (p *Process) has(t string) bool {
	for _, x := range p.targets {
		if x == t {
			return true
		}
	}
	return false
}

func (p *Process) natsConn() (*nats.Conn, error) {
	if p.nc != nil {
		return p.nc, nil
	}
	url := p.cfg.NATSURL
	if url == "" && p.NATS != nil {
		url = p.NATS.ClientURL()
	}
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url, nats.Name("shoal"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", url, err)
	}
	p.nc = nc
	p.stoppers = append(p.stoppers, func() error { nc.Close(); return nil })
	return nc, nil
}

func (p *Process) start(ctx context.Context, t string) error {
	switch t {
	case NATS:
		s, err := natsd.Start(p.cfg.NATS)
		if err != nil {
			return err
		}
		p.NATS = s
		p.stoppers = append(p.stoppers, func() error { s.Stop(); return nil })
	case Placement:
		nc, err := p.natsConn()
		if err != nil {
			return err
		}
		s, err := placement.New(p.cfg.Placement, nc, p.log.With("svc", "placement"))
		if err != nil {
			return err
		}
		if err := s.Start(ctx); err != nil {
			return err
		}
		p.Place = s
		p.stoppers = append(p.stoppers, s.Stop)
	case Blockstore:
		nc, err := p.natsConn()
		if err != nil {
			return err
		}
		n := p.cfg.Nodes
		if n <= 0 {
			n = 1
			if p.has(NATS) && p.has(Placement) {
				n = 3
			}
		}
		for i := 1; i <= n; i++ {
			bc, err := p.nodeConfig(i, n)
			if err != nil {
				return err
			}
			node, err := blockstore.New(bc, nc, p.log.With("svc", "blockstore"))
			if err != nil {
				return err
			}
			if err := node.Start(ctx); err != nil {
				_ = node.Stop(false)
				return err
			}
			p.Nodes = append(p.Nodes, node)
			p.stoppers = append(p.stoppers, func() error { return node.Stop(false) })
		}
	case S3:
		return p.startS3(ctx)

	case Dedup:
		return p.startDedup(ctx)
	case NBD:
		return p.startNBD(ctx)
	case Edge:
		e, err := edge.New(p.cfg.Edge, p.log.With("svc", "edge"))
		if err != nil {
			return err
		}
		e.Start()
		p.Edge = e
		p.stoppers = append(p.stoppers, e.Stop)
	}
	return nil
}

// validate checks each target's configuration as its start would derive
// it (data directories, node ports), without starting anything.
func (p *Process) validate() error {
	for _, t := range p.targets {
		var err error
		switch t {
		case NATS:
			err = p.cfg.NATS.Validate()
		case Placement:
			err = p.cfg.Placement.Validate()
		case Blockstore:
			var bc blockstore.Config
			if bc, err = p.nodeConfig(1, max(p.cfg.Nodes, 1)); err == nil {
				err = bc.Validate()
			}
		case Dedup:
			dc := p.dedupConfig()
			err = dc.Validate()
		case S3:
			err = p.cfg.S3.Validate()
		case NBD:
			err = p.cfg.NBD.Validate()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// nodeConfig derives node i of n: with several nodes in one process each
// gets the next port, its own directory and its own zone.
func (p *Process) nodeConfig(i, n int) (blockstore.Config, error) {
	bc := p.cfg.Blockstore
	if bc.Dir == "" {
		bc.Dir = filepath.Join(p.cfg.DataDir, "blockstore")
	}
	if n == 1 {
		return bc, nil
	}
	host, port, err := net.SplitHostPort(bc.Listen)
	if err != nil {
		return bc, err
	}
	pn, err := strconv.Atoi(port)
	if err != nil {
		return bc, err
	}
	if pn != 0 {
		pn += i
	}
	bc.Listen = net.JoinHostPort(host, strconv.Itoa(pn))
	bc.Dir = filepath.Join(bc.Dir, strconv.Itoa(i))
	bc.Zone = "z" + strconv.Itoa(i)
	if bc.ID != "" {
		bc.ID = bc.ID + "-" + strconv.Itoa(i)
	}
	return bc, nil
}

// Endpoints describes what the process serves, for the start-up banner.
func (p *Process) Endpoints() []string {
	var out []string
	if p.NATS != nil {
		out = append(out, "nats        "+p.NATS.ClientURL())
	}
	if p.Place != nil {
		out = append(out, "placement   "+p.Place.Addr()+"   (shoal status --placement "+p.Place.Addr()+")")
	}
	for _, n := range p.Nodes {
		out = append(out, fmt.Sprintf("blockstore  %s   id=%s", n.Addr(), n.ID()))
	}
	out = append(out, p.s3Endpoints()...)
	out = append(out, p.dedupEndpoints()...)
	out = append(out, p.nbdEndpoints()...)
	if p.Edge != nil {
		out = append(out, "edge        "+p.Edge.Addr()+"   (SHOAL_PROXY="+p.Edge.Addr()+" for clients outside the overlay)")
	}
	out = append(out, "data        "+p.cfg.DataDir)
	return out
}

// Stop stops services in reverse start order.
func (p *Process) Stop() error {
	var errs []error
	for i := len(p.stoppers) - 1; i >= 0; i-- {
		errs = append(errs, p.stoppers[i]())
	}
	p.stoppers = nil
	return errors.Join(errs...)
}
