package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/proto/dedupb"
	"shoal/services/s3"
	"shoal/services/s3/s3err"
)

// writeChunk is the payload of one Write message: large enough to keep the
// per-message overhead low, small enough to keep a stream's memory bounded.
const writeChunk = 1 << 20

// writeBufs reuses Write's chunk buffers: a fresh 1 MiB buffer per PUT,
// zeroed by the runtime, was a tenth of a small PUT's CPU.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, writeChunk); return &b }}

// refFormat leads every reference Data returns.
const refFormat = 1

// ErrBadRef means a reference was not made by Data.
var ErrBadRef = errors.New("s3 cluster: malformed data reference")

// Data is an s3.DataStore on the dedup tier. The bucket is the dedup
// volume (its key encrypts the data when the policy says so), and the
// dedup tier needs it again to read, so each reference carries it:
//
//	ref = 0x01 | len(volume) | volume | dedup manifest reference
//
// A copied object keeps its source's reference and so is still read with
// the source bucket's key.
type Data struct {
	c dedupb.DedupClient
}

// NewData returns a DataStore using the dedup service behind conn (see
// shared/rpc.Dial).
func NewData(conn grpc.ClientConnInterface) *Data {
	return &Data{c: dedupb.NewDedupClient(conn)}
}

var (
	_ s3.DataStore = (*Data)(nil)
	_ s3.Retainer  = (*Data)(nil)
)

func wrapRef(volume string, ref []byte) []byte {
	out := make([]byte, 0, 2+len(volume)+len(ref))
	out = append(out, refFormat, byte(len(volume)))
	out = append(out, volume...)
	return append(out, ref...)
}

func unwrapRef(ref []byte) (volume string, inner []byte, err error) {
	if len(ref) < 2 || ref[0] != refFormat || len(ref) < 2+int(ref[1]) {
		return "", nil, ErrBadRef
	}
	n := int(ref[1])
	return string(ref[2 : 2+n]), ref[2+n:], nil
}

// dataErr maps dedup status codes to the frontend's sentinels.
func dataErr(op string, err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("s3 cluster: %s: %w: %w", op, s3.ErrNotFound, err)
	case codes.Canceled:
		return fmt.Errorf("s3 cluster: %s: %w: %w", op, context.Canceled, err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("s3 cluster: %s: %w: %w", op, context.DeadlineExceeded, err)
	case codes.Unavailable, codes.ResourceExhausted:
		// Retryable: clients back off on 503 SlowDown/ServiceUnavailable.
		return s3err.Wrap(s3err.ServiceUnavailable, fmt.Errorf("s3 cluster: %s: %w", op, err))
	}
	return fmt.Errorf("s3 cluster: %s: %w", op, err)
}

// Write implements s3.DataStore. If r fails, the stream is cancelled
// before it is closed, so the dedup tier never returns (or publishes) a
// reference for partial data.
func (d *Data) Write(ctx context.Context, volume, policy string, r io.Reader) ([]byte, int64, error) {
	if len(volume) > 255 {
		return nil, 0, fmt.Errorf("s3 cluster: volume name too long")
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := d.c.Write(sctx)
	if err != nil {
		return nil, 0, dataErr("write", err)
	}
	bp := writeBufs.Get().(*[]byte)
	defer writeBufs.Put(bp)
	buf := *bp
	first := true
	for {
		// Not io.ReadFull: it reports a short final chunk and a body cut
		// short (io.ErrUnexpectedEOF from net/http) alike.
		n, rerr := fill(r, buf)
		if n > 0 || first {
			m := &dedupb.WriteRequest{Data: buf[:n]}
			if first {
				m.Policy, m.Volume, first = policy, volume, false
			}
			if err := st.Send(m); err != nil {
				if errors.Is(err, io.EOF) {
					// The server ended the stream; its status says why.
					_, err = st.CloseAndRecv()
				}
				return nil, 0, dataErr("write", err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			cancel()
			return nil, 0, fmt.Errorf("s3 cluster: write: %w", rerr)
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return nil, 0, dataErr("write", err)
	}
	return wrapRef(volume, resp.Ref), resp.Size, nil
}

// fill reads until buf is full or r fails; io.EOF means the stream ended.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Read implements s3.DataStore.
func (d *Data) Read(ctx context.Context, ref []byte, off, n int64) (io.ReadCloser, error) {
	vol, inner, err := unwrapRef(ref)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	st, err := d.c.Read(sctx, &dedupb.ReadRequest{Ref: inner, Volume: vol, Offset: off, Length: n})
	if err != nil {
		cancel()
		return nil, dataErr("read", err)
	}
	// Receive the first message now, so a missing reference is an error
	// of Read rather than of the first body read (the status line is not
	// sent yet at this point).
	first, err := st.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, dataErr("read", err)
	}
	rd := &reader{st: st, cancel: cancel}
	if first != nil {
		rd.buf = first.Data
	} else {
		rd.eof = true
	}
	return rd, nil
}

type reader struct {
	st     grpc.ServerStreamingClient[dedupb.ReadResponse]
	cancel context.CancelFunc
	buf    []byte
	eof    bool
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		m, err := r.st.Recv()
		if errors.Is(err, io.EOF) {
			r.eof = true
			continue
		}
		if err != nil {
			return 0, dataErr("read", err)
		}
		r.buf = m.Data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *reader) Close() error {
	r.cancel()
	return nil
}

// Release implements s3.DataStore.
func (d *Data) Release(ctx context.Context, ref []byte) error {
	vol, inner, err := unwrapRef(ref)
	if err != nil {
		return err
	}
	_, err = d.c.Release(ctx, &dedupb.RefRequest{Ref: inner, Volume: vol})
	return dataErr("release", err)
}

// Retain implements s3.Retainer.
func (d *Data) Retain(ctx context.Context, ref []byte) error {
	vol, inner, err := unwrapRef(ref)
	if err != nil {
		return err
	}
	_, err = d.c.Retain(ctx, &dedupb.RefRequest{Ref: inner, Volume: vol})
	return dataErr("retain", err)
}
