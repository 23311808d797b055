package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/proto/dedupb"
	"shoal/services/s3"
	"shoal/services/s3/s3err"
	"shoal/shared/combine"
	"shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
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
	// small carries reads of small objects in shared ReadBatch calls.
	small *combine.Queues[int, *smallRead]
	// unbatched is set once the dedup tier turns out to predate
	// ReadBatch: small reads then use the stream like the rest.
	unbatched atomic.Bool
	// Batches and BatchedReads count ReadBatch calls and the reads they
	// carried (for tests and metrics).
	Batches, BatchedReads atomic.Int64
	// direct, when set, reads unencrypted streams from the storage nodes
	// (see ReadDirect); DirectReads counts them.
	direct      *dedup.Reader
	DirectReads atomic.Int64
}

// ReadDirect makes d read unencrypted streams itself, with the dedup
// tier's own reader (shared/dedup) on store, a DHT client of this
// process: the bytes of a GET then cross one hop (node → S3 server)
// instead of two (node → dedup tier → S3 server). The reader verifies
// every block against its address, rebuilds erasure-coded chunks from
// any k shards and re-puts damaged shards, as the tier does. Encrypted
// streams still go through the tier: it holds the volume keys. Call it
// before serving.
func (d *Data) ReadDirect(store dedup.BlockStore, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r, err := dedup.NewReader(store, dedup.ReaderConfig{Repair: true, OnDamage: func(dm dedup.Damage) {
		log.Warn("erasure-coded shard damaged", "stripe", dm.Stripe.String(), "rank", dm.Rank, "err", dm.Err, "repaired", dm.Repaired, "repair_err", dm.RepairErr)
	}})
	if err != nil {
		return err
	}
	d.direct = r
	return nil
}

// A small object's GET used to open a Read stream of its own: a stream's
// setup, headers, trailers and tracing on both sides of the hop were most
// of the dedup tier's share of a 4 KiB GET. Reads up to smallReadMax go in
// ReadBatch calls instead: one call in flight per lane, and the reads that
// arrive meanwhile go in the next.
const (
	smallReadMax   = 64 << 10
	smallReadLanes = 2
	smallBatchMax  = 128 // within the dedup tier's 256
	smallTimeout   = 60 * time.Second
)

// smallRead is one read in a batch. The batch's call runs in the trace of
// the request that started its committer, and its combine.round span links
// the others (see shared/combine).
type smallRead struct {
	req  *dedupb.ReadRequest
	data []byte
	err  error
}

// NewData returns a DataStore using the dedup service behind conn (see
// shared/rpc.Dial).
func NewData(conn grpc.ClientConnInterface) *Data {
	d := &Data{c: dedupb.NewDedupClient(conn)}
	d.small = combine.New(smallBatchMax, smallTimeout, d.readBatch)
	return d
}

// readBatch is one ReadBatch call carrying batch.
func (d *Data) readBatch(ctx context.Context, _ int, batch []*smallRead) {
	req := &dedupb.ReadBatchRequest{Reads: make([]*dedupb.ReadRequest, len(batch))}
	for i, r := range batch {
		req.Reads[i] = r.req
	}
	d.Batches.Add(1)
	d.BatchedReads.Add(int64(len(batch)))
	resp, err := d.c.ReadBatch(ctx, req)
	if err == nil && len(resp.Results) != len(batch) {
		err = fmt.Errorf("s3 cluster: read batch: %d results for %d reads", len(resp.Results), len(batch))
	}
	for i, r := range batch {
		switch {
		case err != nil:
			r.err = err
		case resp.Results[i].Code != 0:
			r.err = status.Error(codes.Code(resp.Results[i].Code), resp.Results[i].Message)
		default:
			r.data = resp.Results[i].Data
		}
	}
}

// nextLane spreads batches over the lanes.
var nextLane atomic.Uint32

// readSmall reads a small range through a batch; ok=false means the dedup
// tier has no ReadBatch and the caller should stream.
func (d *Data) readSmall(ctx context.Context, vol string, inner []byte, off, n int64) (io.ReadCloser, bool, error) {
	if d.unbatched.Load() {
		return nil, false, nil
	}
	r := &smallRead{req: &dedupb.ReadRequest{Ref: inner, Volume: vol, Offset: off, Length: n}}
	if err := d.small.Do(ctx, int(nextLane.Add(1)%smallReadLanes), r); err != nil {
		return nil, true, dataErr("read", err)
	}
	if status.Code(r.err) == codes.Unimplemented {
		d.unbatched.Store(true)
		return nil, false, nil
	}
	if r.err != nil {
		return nil, true, dataErr("read", r.err)
	}
	return io.NopCloser(bytes.NewReader(r.data)), true, nil
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
	case codes.ResourceExhausted:
		// The nodes are full: retrying does not help, so not a 503.
		return s3err.Wrap(s3err.StorageFull, fmt.Errorf("s3 cluster: %s: %w", op, err))
	case codes.Unavailable:
		// Retryable: clients back off on 503 SlowDown/ServiceUnavailable.
		return s3err.Wrap(s3err.ServiceUnavailable, fmt.Errorf("s3 cluster: %s: %w", op, err))
	case codes.Aborted:
		// The tier's writers kept colliding (its live-reference set).
		return s3err.Wrap(s3err.SlowDown, fmt.Errorf("s3 cluster: %s: %w", op, err))
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
	if d.direct != nil {
		if mref, err := manifest.ParseRef(inner); err == nil && !mref.Policy.Encrypt {
			if rc, err := d.readDirect(ctx, mref, off, n); err == nil {
				return rc, nil
			}
			// The tier answers failures: it tells lost data from a node
			// this process cannot reach, as every GET used to be told.
		}
	}
	if n >= 0 && n <= smallReadMax {
		if rc, ok, err := d.readSmall(ctx, vol, inner, off, n); ok {
			return rc, err
		}
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

// readDirect reads [off, off+n) of an unencrypted stream from the nodes.
// Its first bytes are read before it returns, as the tier's first message
// is, so a missing or unreadable block fails Read (and the tier is asked)
// rather than cutting a body short after a 200. A later failure can only
// cut the body short, as one from the tier's stream does.
func (d *Data) readDirect(ctx context.Context, ref manifest.Ref, off, n int64) (io.ReadCloser, error) {
	rc, err := d.direct.ReadFirst(ctx, ref, off, n, smallReadMax, func(err error) error {
		return fmt.Errorf("s3 cluster: read: %w", err)
	})
	if err == nil {
		d.DirectReads.Add(1)
	}
	return rc, err
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
