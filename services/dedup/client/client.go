// Package client is the Go client of the dedup tier (services/dedup): what
// frontends (S3, FUSE, NBD) and the CLI use to turn byte streams into
// references and back. It dials with shared/rpc (tracing, message limits)
// and maps the tier's gRPC status codes to the sentinels below, so callers
// never match on error text. It holds no state beyond the connection.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dpb "shoal/proto/dedupb"
	"shoal/shared/rpc"
)

// Sentinels for the tier's errors; check them with errors.Is.
var (
	// ErrInvalid means the request was refused as malformed: a truncated
	// or forged reference, a bad policy, encryption without a volume, a
	// reference read under the wrong volume.
	ErrInvalid = errors.New("dedup: invalid argument")
	// ErrNotFound means a block the reference needs is not in the cluster
	// (never written, or reclaimed).
	ErrNotFound = errors.New("dedup: not found")
	// ErrRange means a read starts beyond the end of the stream.
	ErrRange = errors.New("dedup: offset out of range")
	// ErrCorrupt means stored data failed verification and could not be
	// recovered from redundancy.
	ErrCorrupt = errors.New("dedup: corrupt data")
	// ErrUnavailable means the tier or too many storage nodes could not be
	// reached; the call may succeed when retried.
	ErrUnavailable = errors.New("dedup: unavailable")
	// ErrFull means the storage nodes had no room left for the data. It is
	// the nodes' own sentinel, so a frontend checks one error whether the
	// tier or an acceptor it wrote to directly found them full.
	ErrFull = rpc.ErrFull
)

// Error is an error returned by the tier: it matches one of the sentinels
// with errors.Is and keeps the gRPC status for callers that want the code.
type Error struct {
	sentinel error
	st       *status.Status
}

func (e *Error) Error() string              { return e.st.Message() }
func (e *Error) Unwrap() error              { return e.sentinel }
func (e *Error) GRPCStatus() *status.Status { return e.st }

// codeTable maps status codes to sentinels; the server's table
// (services/dedup) is its inverse.
var codeTable = map[codes.Code]error{
	codes.InvalidArgument:   ErrInvalid,
	codes.NotFound:          ErrNotFound,
	codes.OutOfRange:        ErrRange,
	codes.DataLoss:          ErrCorrupt,
	codes.Unavailable:       ErrUnavailable,
	codes.ResourceExhausted: ErrFull,
	codes.DeadlineExceeded:  context.DeadlineExceeded,
	codes.Canceled:          context.Canceled,
}

// fromStatus turns a gRPC error into an *Error (or leaves it as is).
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if s, ok := codeTable[st.Code()]; ok {
		return &Error{sentinel: s, st: st}
	}
	return &Error{sentinel: nil, st: st}
}

// Client talks to one dedup server address (a swarm service VIP or a
// load balancer spreads calls over replicas; the tier is stateless).
type Client struct {
	cc     *grpc.ClientConn
	api    dpb.DedupClient
	direct *direct // see ReadDirect
	// pushed counts the windows offered writes sent whole (see learn).
	pushed atomic.Int64
}

// PushedWindows is how many windows WriteOffered calls sent whole,
// unasked, having found their data new.
func (c *Client) PushedWindows() int64 { return c.pushed.Load() }

// Dial connects lazily to addr: errors surface on the first call.
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	cc, err := rpc.Dial(addr, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{cc: cc, api: dpb.NewDedupClient(cc)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.cc.Close() }

// writeChunk is how much of the stream one WriteRequest carries. The gRPC
// flow-control window (rpc.Dial) is what bounds bytes in flight, so a slow
// tier pushes back on the reader.
const writeChunk = 1 << 20

// Write stores everything r yields under policy (policy.Parse syntax, ""
// = the default) and volume (whose derived key encrypts the stream when
// the policy says encrypt=on; "" is allowed only without encryption). It
// returns the reference (manifest.Ref binary form), the stream's size and
// its hex digest (manifest.Ref.ETag: SHA-256 over the chunks' SHA-256s; not
// an MD5).
//
// The returned reference holds one retain: it is a live root for space
// reclamation until Release is called for it. Call Retain once more for
// each further use (a copy), Release once per use ended.
//
// If r fails, the write is abandoned and the error wraps r's error; no
// reference is returned.
func (c *Client) Write(ctx context.Context, policy, volume string, r io.Reader) (ref []byte, size int64, etag string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.Write(ctx)
	if err != nil {
		return nil, 0, "", fromStatus(err)
	}
	buf := make([]byte, writeChunk)
	first := true
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 || first {
			req := &dpb.WriteRequest{Data: buf[:n]}
			if first {
				req.Policy, req.Volume = policy, volume
				first = false
			}
			if serr := stream.Send(req); serr != nil {
				// io.EOF means the server ended the call; its status says why.
				if errors.Is(serr, io.EOF) {
					_, serr = stream.CloseAndRecv()
				}
				return nil, 0, "", fromStatus(serr)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			cancel() // aborts the stream: the server stores no reference
			return nil, 0, "", fmt.Errorf("dedup: reading the stream: %w", rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, 0, "", fromStatus(err)
	}
	return resp.Ref, resp.Size, resp.Etag, nil
}

// Extent is one piece of a Patch: Data at Off, or ZeroLength zero bytes
// when Data is empty. Offsets and lengths are multiples of the stream's
// chunk size.
type Extent struct {
	Off        int64
	Data       []byte
	ZeroLength int64
}

// Patch returns a new reference: the stream behind base with the extents
// written (fixed chunking only), sharing everything else with base. An
// empty base makes a new stream of size zero bytes under policy (a new
// block device); otherwise policy and size are ignored. Like Write, the
// new reference holds one retain; base keeps its own.
func (c *Client) Patch(ctx context.Context, policy, volume string, base []byte, size int64, extents []Extent) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.Patch(ctx)
	if err != nil {
		return nil, fromStatus(err)
	}
	send := func(m *dpb.PatchRequest) error {
		if err := stream.Send(m); err != nil {
			if errors.Is(err, io.EOF) {
				_, err = stream.CloseAndRecv()
			}
			return fromStatus(err)
		}
		return nil
	}
	if err := send(&dpb.PatchRequest{Policy: policy, Volume: volume, Base: base, Size: size}); err != nil {
		return nil, err
	}
	for _, e := range extents {
		// Large extents go in pieces, so no message nears the limit.
		for off, data := e.Off, e.Data; len(data) > 0 || e.ZeroLength > 0; {
			m := &dpb.PatchRequest{Offset: off, ZeroLength: e.ZeroLength}
			if len(data) > 0 {
				n := min(len(data), writeChunk)
				m.Data, m.ZeroLength = data[:n], 0
				data, off = data[n:], off+int64(n)
			}
			if err := send(m); err != nil {
				return nil, err
			}
			if m.ZeroLength > 0 || len(data) == 0 {
				break
			}
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.Ref, nil
}

// Read streams the bytes [off, off+n) of the stream behind ref; n < 0
// reads to the end. Every block is verified by the tier. The caller must
// Close the result; errors met mid-stream come out of Read.
func (c *Client) Read(ctx context.Context, ref []byte, volume string, off, n int64) (io.ReadCloser, error) {
	if c.direct != nil {
		if rc, ok := c.readDirect(ctx, ref, off, n); ok {
			return rc, nil
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.api.Read(ctx, &dpb.ReadRequest{Ref: ref, Volume: volume, Offset: off, Length: n})
	if err != nil {
		cancel()
		return nil, fromStatus(err)
	}
	// The first message carries the server's verdict on the request (bad
	// ref, out of range) before any data, so those errors come from Read
	// itself rather than from the first io.Reader call.
	first, err := stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, fromStatus(err)
	}
	rr := &reader{stream: stream, cancel: cancel}
	if err != nil {
		rr.err = io.EOF
	} else {
		rr.cur = first.Data
	}
	return rr, nil
}

type reader struct {
	stream dpb.Dedup_ReadClient
	cancel context.CancelFunc
	cur    []byte
	err    error
}

// fill receives the next message into cur, or records why there is none
// (io.EOF at the stream's end). It reports whether cur has bytes.
func (r *reader) fill() bool {
	for len(r.cur) == 0 && r.err == nil {
		m, err := r.stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			r.err = io.EOF
		case err != nil:
			r.err = fromStatus(err)
		default:
			r.cur = m.Data
		}
	}
	return len(r.cur) > 0
}

func (r *reader) Read(p []byte) (int, error) {
	if !r.fill() {
		return 0, r.err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// WriteTo hands each received message to w as it is, so io.Copy (shoal
// get -o, a discarding benchmark) writes whole messages without staging
// them through its own small buffer.
func (r *reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.fill() {
		n, err := w.Write(r.cur)
		total += int64(n)
		r.cur = r.cur[n:]
		if err != nil {
			return total, err
		}
		if len(r.cur) > 0 {
			return total, io.ErrShortWrite
		}
	}
	if errors.Is(r.err, io.EOF) {
		return total, nil
	}
	return total, r.err
}

func (r *reader) Close() error {
	r.cancel()
	return nil
}

// Stat is what a stored stream costs, as recorded when it was written.
type Stat struct {
	Size   int64
	Chunks int64
	// Stored is the sealed (compressed, encrypted) size of all chunk uses;
	// Physical adds erasure-coding parity; Unique counts each distinct
	// chunk once. Replicas are not counted.
	Stored   int64
	Physical int64
	Unique   int64
	Policy   string
}

// CompressionRatio is logical bytes per stored byte.
func (s Stat) CompressionRatio() float64 { return ratio(s.Size, s.Stored) }

// DedupRatio is physical bytes referenced per distinct physical byte
// (deduplication within the stream).
func (s Stat) DedupRatio() float64 { return ratio(s.Physical, s.Unique) }

func ratio(a, b int64) float64 {
	if b <= 0 {
		if a == 0 {
			return 1
		}
		return 0
	}
	return float64(a) / float64(b)
}

// Stat reads a stream's root and reports its size and costs.
func (c *Client) Stat(ctx context.Context, ref []byte, volume string) (Stat, error) {
	r, err := c.api.Stat(ctx, &dpb.StatRequest{Ref: ref, Volume: volume})
	if err != nil {
		return Stat{}, fromStatus(err)
	}
	return Stat{Size: r.Size, Chunks: r.Chunks, Stored: r.StoredBytes, Physical: r.PhysicalBytes, Unique: r.UniqueBytes, Policy: r.Policy}, nil
}

// Retain adds one use of ref (a live root for space reclamation).
func (c *Client) Retain(ctx context.Context, ref []byte, volume string) error {
	_, err := c.api.Retain(ctx, &dpb.RefRequest{Ref: ref, Volume: volume})
	return fromStatus(err)
}

// Release ends one use of ref. When no use is left, the stream's blocks
// become reclaimable (by Collect, after the grace period) unless another
// live reference shares them. Releasing a reference with no use left is
// not an error.
func (c *Client) Release(ctx context.Context, ref []byte, volume string) error {
	_, err := c.api.Release(ctx, &dpb.RefRequest{Ref: ref, Volume: volume})
	return fromStatus(err)
}

// Usage is the cluster-wide space picture.
type Usage struct {
	// Logical is the bytes referenced by live roots (each use counted);
	// Physical the bytes storage nodes hold, replicas and parity included.
	Logical  int64
	Physical int64
	Blocks   int64
	// Segments is the bytes of the nodes' segment files: physical bytes
	// stored there plus deleted blocks' space not compacted away yet.
	Segments int64
	// Journals is the registered root journals; JournalEntries the root
	// changes in them not yet folded into the root set.
	Journals, JournalEntries int64
}

// Usage reports logical against physical bytes.
func (c *Client) Usage(ctx context.Context) (Usage, error) {
	r, err := c.api.Usage(ctx, &dpb.UsageRequest{})
	if err != nil {
		return Usage{}, fromStatus(err)
	}
	return Usage{Logical: r.LogicalBytes, Physical: r.PhysicalBytes, Blocks: r.Blocks, Segments: r.SegmentBytes,
		Journals: r.RootJournals, JournalEntries: r.JournalEntries}, nil
}

// CollectResult is what one reclamation cycle did.
type CollectResult struct {
	Marked     int64 // blocks reachable from live roots
	Swept      int64 // block copies deleted (or that would be, on a dry run)
	FreedBytes int64
}

// Collect runs one mark-and-sweep cycle: blocks unreachable from every
// live root and untouched for longer than grace are deleted from every
// storage node. dryRun counts without deleting.
func (c *Client) Collect(ctx context.Context, grace time.Duration, dryRun bool) (CollectResult, error) {
	r, err := c.api.Collect(ctx, &dpb.CollectRequest{GraceSeconds: int64(grace / time.Second), DryRun: dryRun})
	if err != nil {
		return CollectResult{}, fromStatus(err)
	}
	return CollectResult{Marked: r.Marked, Swept: r.Swept, FreedBytes: r.FreedBytes}, nil
}
