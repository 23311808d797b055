package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sync"
	"time"

	"github.com/pojntfx/go-nbd/pkg/protocol"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// shutdownGrace is how long Close lets requests in flight finish (and their
// replies reach the client) before cancelling them. Draining beats failing
// I/O the client would otherwise retry against another server.
const shutdownGrace = 5 * time.Second

// conn is one client connection.
type conn struct {
	s      *Server
	nc     net.Conn
	br     *bufio.Reader
	log    *slog.Logger
	ctx    context.Context // backend calls; cancelled at the end of Close's grace
	cancel context.CancelFunc
	parent context.Context

	// Deadlines are set both by the protocol and by stop; stopping makes
	// stop's deadline stick.
	dmu      sync.Mutex
	stopping bool

	// Set when transmission starts.
	b        Backend
	export   string
	size     int64
	readOnly bool
	noZeroes bool

	sem      chan struct{} // a slot per request in flight
	inflight sync.WaitGroup

	wmu  sync.Mutex // serializes replies
	werr error      // first reply write failure; the stream is broken after it
}

// request is one transmission-phase request, from header to reply.
type request struct {
	protocol.TransmissionRequestHeader
	op    string
	ctx   context.Context
	span  trace.Span
	start time.Time
	buf   *[]byte // WRITE payload

	// Outcome, for the span and metrics.
	errno   uint32
	err     error
	fault   bool // err is ours or the backend's, not a refused request
	in, out int64
}

func newConn(ctx context.Context, s *Server, nc net.Conn) *conn {
	// Backend calls must outlive a cancelled ctx by the grace period, so
	// ctx only triggers stop; its values (e.g. baggage) are kept.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &conn{
		s:      s,
		nc:     nc,
		br:     bufio.NewReader(nc),
		log:    s.log.With("remote", nc.RemoteAddr()),
		ctx:    cctx,
		cancel: cancel,
		parent: ctx,
		sem:    make(chan struct{}, s.conc),
	}
}

func (c *conn) serve() (err error) {
	defer c.s.untrack(c)
	defer c.cancel()
	defer func() { _ = c.nc.Close() }()
	defer context.AfterFunc(c.parent, c.stop)()

	err = c.negotiate()
	if c.b == nil {
		if c.isStopping() {
			return nil
		}
		if err != nil {
			c.log.Debug("nbd: negotiation failed", "err", err)
		}
		return err
	}
	defer c.closeBackend(c.b)
	c.log.Info("nbd: connected", "size", c.size, "read_only", c.readOnly)
	err = c.transmit()
	if err != nil {
		c.log.Info("nbd: disconnected", "err", err)
	} else {
		c.log.Info("nbd: disconnected")
	}
	return err
}

// stop ends the connection gracefully: no further requests are read, the
// ones in flight get until shutdownGrace to finish.
func (c *conn) stop() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.stopping {
		return
	}
	c.stopping = true
	now := time.Now()
	_ = c.nc.SetReadDeadline(now)
	_ = c.nc.SetWriteDeadline(now.Add(shutdownGrace))
	time.AfterFunc(shutdownGrace, c.cancel)
}

func (c *conn) isStopping() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return c.stopping
}

func (c *conn) setDeadline(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !c.stopping {
		_ = c.nc.SetDeadline(t)
	}
}

// enter switches to transmission with the export the client chose.
func (c *conn) enter(b Backend, ei ExportInfo, name string, size int64, flags uint16) {
	c.b, c.size, c.readOnly = b, size, flags&flagReadOnly != 0
	c.export = name
	if ei.Name != "" {
		c.export = ei.Name
	}
	c.log = c.log.With("export", c.export)
}

func (c *conn) transmit() error {
	c.setDeadline(time.Time{})
	var (
		hb   [requestSize]byte
		err  error
		disc *request
	)
	for {
		if _, err = io.ReadFull(c.br, hb[:]); err != nil {
			break
		}
		h := decodeRequest(&hb)
		if h.RequestMagic != protocol.TRANSMISSION_MAGIC_REQUEST {
			c.log.Warn("nbd: bad request magic, disconnecting", "magic", h.RequestMagic)
			err = fmt.Errorf("nbd: bad request magic %#x", h.RequestMagic)
			break
		}
		r := c.begin(h)
		if h.Type == protocol.TRANSMISSION_TYPE_REQUEST_DISC {
			disc = r
			break
		}
		if err = c.dispatch(r); err != nil {
			break
		}
	}
	// Requests already accepted are answered even if the client has
	// stopped sending; their replies may still reach it.
	c.inflight.Wait()

	if disc != nil {
		// Not required by the spec, but a clean disconnect is the last
		// chance to make the client's writes durable before its backend
		// is closed.
		disc.err = c.b.Flush(disc.ctx)
		disc.errno, disc.fault = errno(disc.err), true
		if disc.err != nil {
			c.log.Warn("nbd: flush on disconnect failed", "err", disc.err)
		}
		c.finish(disc)
		return nil
	}
	c.wmu.Lock()
	werr := c.werr
	c.wmu.Unlock()
	switch {
	case c.isStopping(), errors.Is(err, io.EOF):
		// Replies lost because the client hung up are its own doing.
		return nil
	case werr != nil:
		return werr
	default:
		return err
	}
}

func (c *conn) begin(h protocol.TransmissionRequestHeader) *request {
	r := &request{TransmissionRequestHeader: h, op: opName(h.Type), start: time.Now()}
	// A root span: the NBD client has no trace context to continue.
	r.ctx, r.span = c.s.tel.tracer.Start(c.ctx, "nbd."+r.op,
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("nbd.export", c.export),
			attribute.Int64("nbd.offset", int64(h.Offset)),
			attribute.Int64("nbd.length", int64(h.Length)),
		))
	return r
}

// dispatch validates a request and starts it. Only a broken stream or a
// client that cannot be trusted returns an error.
func (c *conn) dispatch(r *request) error {
	isWrite := r.Type == protocol.TRANSMISSION_TYPE_REQUEST_WRITE
	if isWrite && r.Length > c.s.maxReq {
		// Skipping the payload would mean reading up to 4 GiB from a
		// client that ignored the advertised maximum.
		r.errno = errnoEINVAL
		r.err = fmt.Errorf("nbd: write of %d bytes exceeds maximum %d", r.Length, c.s.maxReq)
		c.log.Warn("nbd: oversized write, disconnecting", "offset", r.Offset, "length", r.Length, "max", c.s.maxReq)
		c.finish(r)
		return r.err
	}
	if e, why := c.validate(r); e != 0 {
		r.errno, r.err = e, errors.New(why)
		if isWrite {
			if _, err := io.CopyN(io.Discard, c.br, int64(r.Length)); err != nil {
				r.err, r.fault = err, true
				c.finish(r)
				return err
			}
		}
		c.log.Debug("nbd: request refused", "op", r.op, "offset", r.Offset, "length", r.Length, "flags", r.CommandFlags, "reason", why)
		err := c.reply(r.Handle, e, nil)
		c.finish(r)
		return err
	}

	c.sem <- struct{}{}
	if isWrite && r.Length > 0 {
		r.buf = buffers.get(int(r.Length))
		if _, err := io.ReadFull(c.br, *r.buf); err != nil {
			buffers.put(r.buf)
			<-c.sem
			r.errno, r.err, r.fault = errnoEIO, err, true
			c.finish(r)
			return err
		}
	}
	c.inflight.Add(1)
	go c.run(r)
	return nil
}

// validate returns the errno refusing r without touching the backend, or 0.
func (c *conn) validate(r *request) (uint32, string) {
	allowed := cmdFlagFUA // valid on every command once SEND_FUA is negotiated
	writeType := false
	switch r.Type {
	case protocol.TRANSMISSION_TYPE_REQUEST_READ:
		if r.Length > c.s.maxReq {
			return errnoEINVAL, "read exceeds maximum request size"
		}
	case protocol.TRANSMISSION_TYPE_REQUEST_WRITE, cmdTrim:
		writeType = true
	case cmdWriteZeroes:
		writeType = true
		allowed |= cmdFlagNoHole
	case cmdFlush:
		return flagsOK(r, allowed)
	default:
		return errnoEINVAL, "unsupported command"
	}
	if e, why := flagsOK(r, allowed); e != 0 {
		return e, why
	}
	if writeType && c.readOnly {
		return errnoEPERM, "export is read-only"
	}
	// Written without overflow: off <= size && len <= size-off.
	if r.Offset > uint64(c.size) || uint64(r.Length) > uint64(c.size)-r.Offset {
		// The spec asks for ENOSPC on writes past the end (as nbdkit does),
		// EINVAL otherwise.
		if r.Type == protocol.TRANSMISSION_TYPE_REQUEST_WRITE || r.Type == cmdWriteZeroes {
			return errnoENOSPC, "request beyond end of export"
		}
		return errnoEINVAL, "request beyond end of export"
	}
	return 0, ""
}

func flagsOK(r *request, allowed uint16) (uint32, string) {
	if r.CommandFlags&^allowed != 0 {
		return errnoEINVAL, "unsupported command flags"
	}
	return 0, ""
}

// run executes a validated request on the backend and replies.
func (c *conn) run(r *request) {
	defer func() {
		<-c.sem
		c.inflight.Done()
	}()
	var (
		data    []byte
		readBuf *[]byte
	)
	off, n := int64(r.Offset), int64(r.Length)
	fua := r.CommandFlags&cmdFlagFUA != 0
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("nbd: backend panic", "op", r.op, "panic", p)
				err = fmt.Errorf("nbd: backend panic: %v", p)
			}
		}()
		switch r.Type {
		case protocol.TRANSMISSION_TYPE_REQUEST_READ:
			if n == 0 {
				return nil
			}
			readBuf = buffers.get(int(n))
			if err := c.b.ReadAt(r.ctx, *readBuf, off); err != nil {
				return err
			}
			data, r.out = *readBuf, n
		case protocol.TRANSMISSION_TYPE_REQUEST_WRITE:
			defer buffers.put(r.buf)
			r.in = n
			if n == 0 {
				return nil
			}
			return c.b.WriteAt(r.ctx, *r.buf, off, fua)
		case cmdFlush:
			return c.b.Flush(r.ctx)
		case cmdTrim:
			if n == 0 {
				return nil
			}
			if err := c.b.Trim(r.ctx, off, n); err != nil || !fua {
				return err
			}
			return c.b.Flush(r.ctx)
		case cmdWriteZeroes:
			if n == 0 {
				return nil
			}
			return c.b.WriteZeroes(r.ctx, off, n, fua)
		}
		return nil
	}()

	r.errno, r.err, r.fault = errno(err), err, true
	if err != nil {
		if c.ctx.Err() != nil {
			// Cancelled by Close: tell the client to go elsewhere.
			r.errno = errnoESHUTDOWN
		}
		c.log.Warn("nbd: request failed", "op", r.op, "offset", off, "length", n, "errno", errnoName(r.errno), "err", err)
		data, r.out = nil, 0
	}
	werr := c.reply(r.Handle, r.errno, data)
	if readBuf != nil {
		buffers.put(readBuf)
	}
	if werr != nil && r.err == nil {
		r.err = werr
	}
	c.finish(r)
}

// reply sends a simple reply. On error it sends no data, as the spec
// requires when the header announces an error.
func (c *conn) reply(handle uint64, e uint32, data []byte) error {
	var hb [replySize]byte
	encodeReply(&hb, protocol.TransmissionReplyHeader{
		ReplyMagic: protocol.TRANSMISSION_MAGIC_REPLY,
		Error:      e,
		Handle:     handle,
	})
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	var err error
	if len(data) == 0 {
		_, err = c.nc.Write(hb[:])
	} else {
		bufs := net.Buffers{hb[:], data}
		_, err = bufs.WriteTo(c.nc)
	}
	if err != nil {
		// A partial reply desynchronises the stream; unblock the reader.
		c.werr = err
		_ = c.nc.Close()
	}
	return err
}

// finish ends r's span and records its metrics. Every error is recorded
// on the span, but only failures on our side (backend, connection) mark
// it failed: refusing an invalid request is the server working.
func (c *conn) finish(r *request) {
	r.span.SetAttributes(attribute.String("nbd.status", errnoName(r.errno)))
	if r.err != nil {
		r.span.RecordError(r.err)
		if r.fault {
			r.span.SetStatus(codes.Error, r.err.Error())
		}
	}
	r.span.End()
	c.s.tel.record(r.ctx, r.op, r.errno, r.in, r.out, time.Since(r.start))
}

// bufPool recycles payload buffers by power-of-two size class, so busy
// connections do not allocate and zero up to MaxRequest per request.
type bufPool struct{ classes [33]sync.Pool }

const minBufClass = 12 // 4 KiB

var buffers bufPool

func (p *bufPool) get(n int) *[]byte {
	class := minBufClass
	if n > 1 {
		class = max(bits.Len(uint(n-1)), minBufClass)
	}
	if v := p.classes[class].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<class)
	return &b
}

func (p *bufPool) put(b *[]byte) {
	if b == nil {
		return
	}
	class := bits.Len(uint(cap(*b) - 1))
	if cap(*b) == 1<<class && class < len(p.classes) {
		p.classes[class].Put(b)
	}
}
