// Package dedup is the dedup tier as a gRPC service (proto/dedupb): it
// turns byte streams from the frontends into manifests of deduplicated,
// compressed, optionally encrypted and erasure-coded immutable blocks (the
// work is shared/dedup's), reads byte ranges back, keeps the set of live
// root references, and reclaims the space of blocks no live root reaches
// (see Collect). It is stateless: every replica serves every request, and
// what must survive (the root set) lives in the cluster as mutable blocks.
// It is not a frontend; services/dedup/client is how frontends call it.
package dedup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	dpb "shoal/proto/dedupb"
	"shoal/shared/block"
	"shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
	"shoal/shared/dht"
	"shoal/shared/paxos"
	"shoal/shared/rpc"
)

// The tier talks to the cluster only through dedup.BlockStore.
var _ dedup.BlockStore = (*dht.Client)(nil)

// Service is one dedup server.
type Service struct {
	dpb.UnimplementedDedupServer

	cfg   Config
	log   *slog.Logger
	dht   *dht.Client
	keys  *keys
	roots *rootSet
	// journal takes Writes' root adds (journal.go).
	journal *journal

	// sealed is shared by the writers: ~160k chunks (10 GiB of 64 KiB
	// chunks) re-written without compressing them again.
	sealed  *dedup.SealCache
	mu      sync.Mutex
	writers map[string]*dedup.Writer
	readers map[string]*dedup.Reader

	// Damage counts erasure-coding shards found bad while reading, and
	// Repaired those rebuilt (for tests and metrics).
	Damage, Repaired atomic.Int64

	srv  *grpc.Server
	lis  net.Listener
	done chan struct{}
	wg   sync.WaitGroup
}

// New creates a dedup server on a DHT client. The client must accept
// sealed maximum-size chunks (MaxBlockSize >= block.MaxSealed).
func New(cfg Config, dc *dht.Client, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if dc == nil {
		return nil, errors.New("dedup: nil dht client")
	}
	if m := dc.Config().MaxBlockSize; m < block.MaxSealed {
		return nil, fmt.Errorf("dedup: dht client max block size %d < %d: sealed 4 MiB chunks would not fit", m, block.MaxSealed)
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.JournalRetireAfter == 0 {
		cfg.JournalRetireAfter = defaultJournalRetireAfter
	}
	if cfg.JournalFoldEvery == 0 {
		cfg.JournalFoldEvery = defaultJournalFoldEvery
	}
	k, err := loadKeys(cfg)
	if err != nil {
		return nil, err
	}
	roots := newRootSet(dc, k.sign, log)
	return &Service{cfg: cfg, log: log, dht: dc, keys: k, roots: roots, journal: newJournal(roots), sealed: dedup.NewSealCache(16 << 20),
		writers: map[string]*dedup.Writer{}, readers: map[string]*dedup.Reader{}, done: make(chan struct{})}, nil
}

// Addr is the gRPC address (valid after Start).
func (s *Service) Addr() string {
	if s.lis != nil {
		return s.lis.Addr().String()
	}
	return s.cfg.Listen
}

// Start listens and serves.
func (s *Service) Start(context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("dedup: listen: %w", err)
	}
	s.lis = lis
	s.srv = grpc.NewServer(rpc.ServerOptions()...)
	dpb.RegisterDedupServer(s.srv, s)
	healthpb.RegisterHealthServer(s.srv, health.NewServer())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("grpc serve", "err", err)
		}
	}()
	if s.cfg.CollectInterval > 0 {
		s.wg.Add(1)
		go s.collectLoop()
	}
	s.wg.Add(1)
	go s.journalLoop()
	s.log.Info("dedup up", "addr", s.Addr())
	return nil
}

// Stop stops serving; calls in progress are cancelled.
func (s *Service) Stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	close(s.done)
	if s.srv != nil {
		s.srv.Stop()
	}
	s.wg.Wait()
	// Fold the root journal into the shards and unregister it, so no
	// other process has to retire it. If that fails (the storage nodes
	// are gone), another process retires it once it is silent.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.journal.close(ctx); err != nil {
		s.log.Warn("dedup: root journal left to be retired", "err", err)
	}
	return nil
}

// journalLoop tends the root journals (journal.go) every fifth of the
// retirement delay.
func (s *Service) journalLoop() {
	s.every(s.cfg.JournalRetireAfter/5, func(ctx context.Context) {
		s.journal.tend(ctx, s.cfg.JournalRetireAfter, s.cfg.JournalFoldEvery)
	})
}

// every runs fn each interval until the service stops, with a context the
// stop cancels.
func (s *Service) every(interval time.Duration, fn func(ctx context.Context)) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.done:
			case <-ctx.Done():
			}
			cancel()
		}()
		fn(ctx)
		cancel()
	}
}

func (s *Service) collectLoop() {
	s.every(s.cfg.CollectInterval, func(ctx context.Context) {
		res, err := s.collect(ctx, s.cfg.CollectGrace, false)
		if err != nil {
			s.log.Warn("periodic collection", "err", err)
		} else {
			s.log.Info("periodic collection", "marked", res.Marked, "swept", res.Swept, "freed", res.FreedBytes)
		}
	})
}

// errInvalid marks requests refused as malformed.
var errInvalid = errors.New("dedup: invalid argument")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

// statusTable maps errors to gRPC codes; services/dedup/client maps them
// back to its sentinels. First match wins.
var statusTable = []struct {
	err  error
	code codes.Code
}{
	{errInvalid, codes.InvalidArgument},
	{manifest.ErrTruncated, codes.InvalidArgument},
	{manifest.ErrVersion, codes.InvalidArgument},
	{manifest.ErrCorrupt, codes.InvalidArgument},
	{policy.ErrSyntax, codes.InvalidArgument},
	{policy.ErrInvalid, codes.InvalidArgument},
	{policy.ErrTruncated, codes.InvalidArgument},
	{dedup.ErrConfig, codes.InvalidArgument},
	{dedup.ErrKey, codes.InvalidArgument},
	{dedup.ErrPatch, codes.InvalidArgument},
	{dedup.ErrOffer, codes.InvalidArgument},
	{dedup.ErrRange, codes.OutOfRange},
	{dedup.ErrCorrupt, codes.DataLoss},
	{block.ErrNotFound, codes.NotFound},
	// Full before quorum errors: a put that found nodes full fails for
	// want of room, which retrying will not make.
	{rpc.ErrFull, codes.ResourceExhausted},
	// An uncertain outcome first: it wraps what made it uncertain.
	{paxos.ErrIndeterminate, codes.Unavailable},
	{paxos.ErrContended, codes.Aborted},
	{paxos.ErrNoQuorum, codes.Unavailable},
	{dht.ErrQuorum, codes.Unavailable},
	{dht.ErrNoNodes, codes.Unavailable},
	{dht.ErrNoView, codes.Unavailable},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

func toStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range statusTable {
		if errors.Is(err, e.err) {
			return status.Error(e.code, err.Error())
		}
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

const maxCached = 64

// volumeKey returns the key for a policy and volume (nil when the policy
// does not encrypt).
func (s *Service) volumeKey(p policy.Policy, volume string) ([]byte, error) {
	if !p.Encrypt {
		return nil, nil
	}
	if volume == "" {
		return nil, invalid("encrypt=on needs a volume")
	}
	return s.keys.volumeKey(volume), nil
}

func (s *Service) writer(p policy.Policy, volume string) (*dedup.Writer, error) {
	key, err := s.volumeKey(p, volume)
	if err != nil {
		return nil, err
	}
	id := p.String()
	if key != nil {
		id += "\x00" + volume
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.writers[id]; w != nil {
		return w, nil
	}
	var store dedup.BlockStore = s.dht
	if r := p.Redundancy; r.Mode == policy.Replicate && r.Replicas > 0 {
		store = replicated{s.dht, r.Replicas, r.WriteQuorum}
	}
	w, err := dedup.NewWriter(store, dedup.WriterConfig{Policy: p, VolumeKey: key, MaxInFlight: s.cfg.MaxInFlight, Sealed: s.sealed})
	if err != nil {
		return nil, err
	}
	if len(s.writers) >= maxCached {
		clear(s.writers)
	}
	s.writers[id] = w
	return w, nil
}

// firstWriter is the writer a write stream's first message names (its
// policy, "" for the default, and volume), given that message as Recv
// returned it.
func (s *Service) firstWriter(first interface {
	GetPolicy() string
	GetVolume() string
}, err error) (*dedup.Writer, error) {
	if errors.Is(err, io.EOF) {
		return nil, invalid("empty write stream: the first message carries the policy")
	}
	if err != nil {
		return nil, err
	}
	p := policy.Default()
	if pol := first.GetPolicy(); pol != "" {
		if p, err = policy.Parse(pol); err != nil {
			return nil, err
		}
	}
	return s.writer(p, first.GetVolume())
}

// reader returns the reader for refs of policy p in volume.
func (s *Service) reader(p policy.Policy, volume string) (*dedup.Reader, error) {
	key, err := s.volumeKey(p, volume)
	if err != nil {
		return nil, err
	}
	id := ""
	if key != nil {
		id = "v:" + volume
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.readers[id]; r != nil {
		return r, nil
	}
	r, err := dedup.NewReader(s.dht, dedup.ReaderConfig{VolumeKey: key, ReadaheadBytes: s.cfg.ReadaheadBytes, Repair: true, OnDamage: s.onDamage})
	if err != nil {
		return nil, err
	}
	if len(s.readers) >= maxCached {
		clear(s.readers)
	}
	s.readers[id] = r
	return r, nil
}

func (s *Service) onDamage(d dedup.Damage) {
	s.Damage.Add(1)
	if d.Repaired {
		s.Repaired.Add(1)
	}
	s.log.Warn("erasure-coded shard damaged", "stripe", d.Stripe.String(), "rank", d.Rank, "err", d.Err, "repaired", d.Repaired, "repair_err", d.RepairErr)
}

// replicated is the cluster under a policy's own rep:R/W.
type replicated struct {
	*dht.Client
	r, w int
}

func (x replicated) Put(ctx context.Context, data []byte) (block.Address, error) {
	return x.PutReplicated(ctx, data, x.r, x.w)
}

// PutAt must use the policy's R/W too, not the embedded client's.
func (x replicated) PutAt(ctx context.Context, addr block.Address, data []byte) error {
	return x.PutReplicatedAt(ctx, addr, data, x.r, x.w)
}

func (x replicated) Has(ctx context.Context, addrs []block.Address) ([]bool, error) {
	return x.HasReplicated(ctx, addrs, x.r, x.w)
}

// streamReader reads a Write call's bytes straight off the gRPC stream, so
// the library's byte budget is the only buffer: when it is full the writer
// stops reading, the stream's flow-control window fills and the client's
// Send blocks (backpressure end to end). Every message is decoded into the
// same buffer (rpc.Reused), which goes back to a pool when the Write ends.
type streamReader struct {
	stream dpb.Dedup_WriteServer
	cur    []byte
	eof    bool
	msg    dpb.WriteRequest // the last message's fields but data
	next   rpc.Reused
}

// recv receives the next message: its data in r.cur, the rest in r.msg.
func (r *streamReader) recv() error {
	if err := r.stream.RecvMsg(&r.next); err != nil {
		return err
	}
	r.cur = r.next.Bytes
	return nil
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		err := r.recv()
		if errors.Is(err, io.EOF) {
			r.eof = true
			continue
		}
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Write stores a stream and registers its reference as a live root (one
// retain), so a write publishes its reference before it returns: the rule
// space reclamation's safety rests on.
func (s *Service) Write(stream dpb.Dedup_WriteServer) error {
	ctx := stream.Context()
	r := &streamReader{stream: stream}
	r.next = rpc.ReuseField(&r.msg, "data")
	// WritePublish has stopped reading when it returns.
	defer r.next.Release()
	w, err := s.firstWriter(&r.msg, r.recv())
	if err != nil {
		return toStatus(err)
	}
	ref, bin, err := s.publishWrite(ctx, r.msg.Volume, func(publish func(context.Context, manifest.Ref) error) (manifest.Ref, bool, error) {
		return w.WritePublish(ctx, r, publish)
	})
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&dpb.WriteResponse{Ref: bin, Size: ref.Size, Etag: ref.ETagHex()})
}

// publishWrite runs write, which stores a stream and calls publish once
// every manifest node is stored: publish registers the reference as a live
// root while the write's last chunks are still being stored (see
// dedup.Writer.WritePublish). It returns the reference in binary form.
func (s *Service) publishWrite(ctx context.Context, volume string, write func(publish func(context.Context, manifest.Ref) error) (manifest.Ref, bool, error)) (manifest.Ref, []byte, error) {
	var (
		bin    []byte
		rootOf string // the root's volume
	)
	publish := func(ctx context.Context, ref manifest.Ref) error {
		b, err := ref.MarshalBinary()
		if err != nil {
			return err
		}
		vol := rootVolume(ref, volume)
		if err := s.journal.add(ctx, vol, b, 1); err != nil {
			return fmt.Errorf("dedup: registering the reference: %w", err)
		}
		bin, rootOf = b, vol
		return nil
	}
	ref, published, err := write(publish)
	if err != nil {
		if published {
			// The write failed after its reference became a root: take the
			// root back, or its blocks would never be reclaimed.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			if rerr := s.roots.add(rctx, rootOf, bin, -1); rerr != nil {
				s.log.Warn("dedup: a failed write's root was not released", "err", rerr)
			}
			cancel()
		}
		return manifest.Ref{}, nil, err
	}
	return ref, bin, nil
}

// maxPatchBytes bounds the data one Patch carries: it is held in memory
// until the patch is applied. Block-device frontends flush well below it.
const maxPatchBytes = 256 << 20

// Patch applies whole-chunk extents to a stream (or makes a new stream of
// zeros) and registers the result as a live root, as Write does.
func (s *Service) Patch(stream dpb.Dedup_PatchServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return toStatus(invalid("empty patch stream: the first message carries the policy"))
	}
	if err != nil {
		return toStatus(err)
	}
	var (
		ref     manifest.Ref
		r       *dedup.Reader
		created bool
	)
	if len(first.Base) > 0 {
		if ref, r, _, err = s.open(ctx, first.Base, first.Volume); err != nil {
			return toStatus(err)
		}
	} else {
		p := policy.Default()
		if first.Policy != "" {
			if p, err = policy.Parse(first.Policy); err != nil {
				return toStatus(err)
			}
		}
		ref.Policy, created = p, true
	}
	w, err := s.writer(ref.Policy, first.Volume)
	if err != nil {
		return toStatus(err)
	}
	if created {
		if ref, err = w.Zeros(ctx, first.Size); err != nil {
			return toStatus(err)
		}
		if r, err = s.reader(ref.Policy, first.Volume); err != nil {
			return toStatus(err)
		}
	}
	var (
		ext  []dedup.Extent
		held int64
	)
	for m := first; ; {
		switch {
		case len(m.Data) > 0:
			// A client sends a large extent in pieces that need not be
			// whole chunks: contiguous data is one extent.
			if n := len(ext); n > 0 && ext[n-1].Data != nil && ext[n-1].Off+int64(len(ext[n-1].Data)) == m.Offset {
				ext[n-1].Data = append(ext[n-1].Data, m.Data...)
			} else {
				ext = append(ext, dedup.Extent{Off: m.Offset, Data: m.Data})
			}
			held += int64(len(m.Data))
		case m.ZeroLength != 0:
			ext = append(ext, dedup.Extent{Off: m.Offset, Length: m.ZeroLength})
		}
		if held > maxPatchBytes {
			return toStatus(invalid("a patch carries at most %d bytes of data", maxPatchBytes))
		}
		if m, err = stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return toStatus(err)
		}
	}
	if ref, err = w.Patch(ctx, r, ref, ext); err != nil {
		return toStatus(err)
	}
	bin, err := ref.MarshalBinary()
	if err != nil {
		return toStatus(err)
	}
	if err := s.roots.add(ctx, rootVolume(ref, first.Volume), bin, 1); err != nil {
		return toStatus(fmt.Errorf("dedup: registering the reference: %w", err))
	}
	var etag string
	if ref.ETag != ([16]byte{}) {
		etag = ref.ETagHex()
	}
	return stream.SendAndClose(&dpb.WriteResponse{Ref: bin, Size: ref.Size, Etag: etag})
}

// open parses a reference from the network and checks that its root is a
// manifest node matching it: a forged or mistyped reference (or one read
// under the wrong volume) is an invalid argument, not corrupt data.
func (s *Service) open(ctx context.Context, b []byte, volume string) (manifest.Ref, *dedup.Reader, dedup.Stat, error) {
	ref, err := manifest.ParseRef(b)
	if err != nil {
		return ref, nil, dedup.Stat{}, fmt.Errorf("%w: reference: %w", errInvalid, err)
	}
	r, err := s.reader(ref.Policy, volume)
	if err != nil {
		return ref, nil, dedup.Stat{}, err
	}
	st, err := r.Stat(ctx, ref)
	if errors.Is(err, dedup.ErrCorrupt) || errors.Is(err, dedup.ErrKey) {
		// The root was fetched and verified against its address, so it is
		// the block that was written: it is the reference that is wrong.
		return ref, nil, st, fmt.Errorf("%w: reference does not match the stored manifest (wrong volume?): %w", errInvalid, err)
	}
	return ref, r, st, err
}

// rootVolume is the volume a root is registered under: its own for an
// encrypted reference (marking needs the volume's key), none otherwise, so
// Retain and Release of a plain reference pair up whatever volume the
// caller names.
func rootVolume(ref manifest.Ref, volume string) string {
	if ref.Policy.Encrypt {
		return volume
	}
	return ""
}

const readChunk = 1 << 20

// Read streams a byte range. Errors about the request (bad reference, range)
// come before any data.
func (s *Service) Read(req *dpb.ReadRequest, stream dpb.Dedup_ReadServer) error {
	ctx := stream.Context()
	ref, r, _, err := s.open(ctx, req.Ref, req.Volume)
	if err != nil {
		return toStatus(err)
	}
	rc, err := r.Read(ctx, ref, req.Offset, req.Length)
	if err != nil {
		return toStatus(err)
	}
	defer rc.Close()
	// Sized to what the read can return: a small object's read must not
	// allocate (and zero) a full readChunk.
	buf := make([]byte, max(1, min(int64(readChunk), readSpan(ref, req))))
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if serr := stream.Send(&dpb.ReadResponse{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return toStatus(err)
		}
	}
}

// readSpan is the bytes a read of ref returns at most: to the end, or
// fewer when the request names a length.
func readSpan(ref manifest.Ref, req *dpb.ReadRequest) int64 {
	want := ref.Size - req.Offset
	if req.Length >= 0 && req.Length < want {
		want = req.Length
	}
	return want
}

// Batched reads: what one ReadBatch may carry. The items are small objects'
// whole bodies; larger reads go through the Read stream.
const (
	maxBatchReads    = 256
	maxBatchReadSize = 256 << 10
	// maxBatchBytes keeps a batch's reply well within a gRPC message.
	maxBatchBytes = 16 << 20
)

// ReadBatch serves many small reads in one call, concurrently; each has
// its own outcome, as its own Read call would have had.
func (s *Service) ReadBatch(ctx context.Context, req *dpb.ReadBatchRequest) (*dpb.ReadBatchResponse, error) {
	if len(req.Reads) > maxBatchReads {
		return nil, toStatus(invalid("a read batch carries at most %d reads, not %d", maxBatchReads, len(req.Reads)))
	}
	var total int64
	for _, rr := range req.Reads {
		total += max(0, min(rr.Length, maxBatchReadSize))
	}
	if total > maxBatchBytes {
		return nil, toStatus(invalid("a read batch asks for %d bytes, more than %d", total, maxBatchBytes))
	}
	out := &dpb.ReadBatchResponse{Results: make([]*dpb.ReadResult, len(req.Reads))}
	var wg sync.WaitGroup
	for i, rr := range req.Reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, err := s.readSmall(ctx, rr)
			res := &dpb.ReadResult{Data: data}
			if err != nil {
				st := status.Convert(toStatus(err))
				res.Code, res.Message = int32(st.Code()), st.Message()
			}
			out.Results[i] = res
		}()
	}
	wg.Wait()
	return out, nil
}

// readSmall is one read of a batch: what Read would have streamed.
func (s *Service) readSmall(ctx context.Context, req *dpb.ReadRequest) ([]byte, error) {
	if req.Length < 0 || req.Length > maxBatchReadSize {
		return nil, invalid("a batched read needs an explicit length of at most %d bytes, not %d", maxBatchReadSize, req.Length)
	}
	ref, r, _, err := s.open(ctx, req.Ref, req.Volume)
	if err != nil {
		return nil, err
	}
	rc, err := r.Read(ctx, ref, req.Offset, req.Length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, max(0, readSpan(ref, req)))
	n, err := io.ReadFull(rc, buf)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return buf[:n], err
}

// Stat reports a stream's size and costs from its root.
func (s *Service) Stat(ctx context.Context, req *dpb.StatRequest) (*dpb.StatResponse, error) {
	ref, _, st, err := s.open(ctx, req.Ref, req.Volume)
	if err != nil {
		return nil, toStatus(err)
	}
	return &dpb.StatResponse{Size: st.Size, Chunks: st.Chunks, StoredBytes: st.Stored, PhysicalBytes: st.Physical,
		UniqueBytes: st.Unique, Policy: ref.Policy.String()}, nil
}

// Retain adds one use of a reference to the root set. The reference must
// open (a root that cannot be marked would stall every collection).
func (s *Service) Retain(ctx context.Context, req *dpb.RefRequest) (*dpb.RefResponse, error) {
	ref, _, _, err := s.open(ctx, req.Ref, req.Volume)
	if err != nil {
		return nil, toStatus(err)
	}
	bin, _ := ref.MarshalBinary()
	if err := s.roots.add(ctx, rootVolume(ref, req.Volume), bin, 1); err != nil {
		return nil, toStatus(err)
	}
	return &dpb.RefResponse{}, nil
}

// Release drops one use of a reference.
func (s *Service) Release(ctx context.Context, req *dpb.RefRequest) (*dpb.RefResponse, error) {
	ref, err := manifest.ParseRef(req.Ref)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: reference: %w", errInvalid, err))
	}
	bin, _ := ref.MarshalBinary()
	if err := s.roots.add(ctx, rootVolume(ref, req.Volume), bin, -1); err != nil {
		return nil, toStatus(err)
	}
	return &dpb.RefResponse{}, nil
}
