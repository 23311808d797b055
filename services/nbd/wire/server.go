// Package wire is the server side of the NBD protocol (NetworkBlockDevice/nbd
// doc/proto.md): fixed newstyle negotiation, simple replies, and requests
// served concurrently over a Backend. It behaves like nbdkit where the spec
// leaves room, so the Linux kernel client, qemu and libnbd tools work as
// they do against nbdkit.
package wire

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
)

// Backend is one open export.
type Backend interface {
	Size() int64
	// ReadAt fills all of p from off. p comes from a pool and holds stale
	// bytes of earlier requests, possibly of other exports, until filled.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt stores p at off; fua: durable before return. p is reused
	// once WriteAt returns.
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Trim may free space; reads after it returns see zeros. A FUA trim
	// is followed by Flush.
	Trim(ctx context.Context, off, length int64) error
	// WriteZeroes may allocate or deallocate as it likes: NBD_CMD_FLAG_NO_HOLE
	// is accepted but not passed on, as readers cannot tell the difference.
	WriteZeroes(ctx context.Context, off, length int64, fua bool) error
	// Flush makes every write that has completed (on any connection)
	// durable.
	Flush(ctx context.Context) error
	// Close is called once per successful Exports.Open, when the
	// connection (or the NBD_OPT_INFO query, see Describer) using it ends.
	Close() error
}

// Exports resolves export names.
type Exports interface {
	// Open returns the export called name ("" is the default export).
	// ErrUnknownExport, ErrBusy, ErrShutdown and ErrInvalid (wrapped or
	// not) choose the reply the client sees; their text is shown to it.
	Open(ctx context.Context, name string) (Backend, ExportInfo, error)
	List(ctx context.Context) ([]ExportInfo, error)
}

// Describer may be implemented by an Exports whose Open is costly or
// exclusive (a lease, say): NBD_OPT_INFO queries (nbdinfo, qemu-img info)
// are then answered from Describe, with ExportInfo.Size as the size,
// instead of opening and closing the export.
type Describer interface {
	Describe(ctx context.Context, name string) (ExportInfo, error)
}

// ExportInfo describes an export. A connection uses Backend.Size at open
// time; Size is only used by Describer.
type ExportInfo struct {
	Name, Description  string
	Size               int64
	ReadOnly           bool
	PreferredBlockSize uint32 // power of two in [512, MaxRequest]; 0 means 4096
}

// ErrServerClosed is returned by ServeConn once Close has been called.
var ErrServerClosed = errors.New("nbd: server closed")

var errNoExports = errors.New("nbd: Server.Exports is nil")

const (
	defaultMaxRequest  = 32 << 20
	defaultConcurrency = 16
)

// Server serves NBD connections. Set the exported fields before the first
// Serve or ServeConn and do not change them afterwards.
type Server struct {
	Exports Exports
	Log     *slog.Logger
	// MaxRequest bounds a READ or WRITE payload (default 32 MiB, at least
	// 4096); it is advertised as the maximum block size.
	MaxRequest uint32
	// Concurrency bounds the requests in flight per connection (default 16).
	Concurrency int

	initOnce sync.Once
	log      *slog.Logger
	tel      *telemetry
	maxReq   uint32
	conc     int

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup // one per tracked connection
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.log = s.Log
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		var err error
		if s.tel, err = newTelemetry(); err != nil {
			s.log.Warn("nbd: metrics disabled", "err", err)
			s.tel = noopTelemetry()
		}
		s.maxReq = s.MaxRequest
		if s.maxReq == 0 {
			s.maxReq = defaultMaxRequest
		}
		// Below one page the advertised preferred block size (>= 512,
		// power of two) could exceed the maximum, which the spec forbids.
		s.maxReq = max(s.maxReq, 4096)
		s.conc = s.Concurrency
		if s.conc <= 0 {
			s.conc = defaultConcurrency
		}
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
	})
}

// Serve accepts connections on ln until Close, then returns nil. Any other
// accept error is returned.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	if s.Exports == nil {
		return errNoExports
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			return err
		}
		c, err := s.track(context.Background(), nc)
		if err != nil { // closed since Accept returned
			_ = nc.Close()
			return nil
		}
		go func() { _ = c.serve() }() // serve logs how it ended
	}
}

// ServeConn runs the protocol on nc until the client disconnects, ctx is
// done or the server is closed, and closes nc. It returns only once every
// request it accepted has finished, and nil when the client went away
// cleanly or the server shut it down.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	s.init()
	c, err := s.track(ctx, nc)
	if err != nil {
		_ = nc.Close()
		return err
	}
	return c.serve()
}

// Close stops accepting, stops reading requests on every connection, lets
// requests in flight finish (cancelling them after a grace period) and
// waits for all connections to end.
func (s *Server) Close() error {
	s.init()
	var err error
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for ln := range s.listeners {
			if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				err = errors.Join(err, cerr)
			}
		}
		for c := range s.conns {
			c.stop()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers a connection so that Close can stop it and wait for it.
func (s *Server) track(ctx context.Context, nc net.Conn) (*conn, error) {
	if s.Exports == nil {
		return nil, errNoExports
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrServerClosed
	}
	c := newConn(ctx, s, nc)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c, nil
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}
