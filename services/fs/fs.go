package fs

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"shoal/services/dedup/client"
	"shoal/shared/block"
	"shoal/shared/dedup/policy"
	"shoal/shared/dht"
	"shoal/shared/rpc"
	"shoal/shared/sizedcache"
)

const instrumentation = "shoal/fs"

// Config tunes a mount.
type Config struct {
	// CacheBytes bounds the cache of file data read from the dedup tier
	// (default 64 MiB).
	CacheBytes int
	// Timeout is how long the kernel may trust attributes and names it
	// was given before asking again (default 1 s); it bounds how long a
	// change made by another mount can stay unseen for files this mount
	// had already looked at.
	Timeout time.Duration
	// SpoolDir holds the spool files of files being written (default
	// the OS temp directory). Spools are unlinked at creation.
	SpoolDir string
	// Log receives warnings (cluster failures behind EIO).
	Log *slog.Logger
	// NATS, if set, carries invalidations between the mounts of a volume
	// (inval.go); without it, other mounts' changes are seen at open and
	// after Timeout.
	NATS *nats.Conn
}

func (c Config) withDefaults() Config {
	if c.CacheBytes <= 0 {
		c.CacheBytes = 64 << 20
	}
	if c.Timeout <= 0 {
		c.Timeout = time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// pageSize is the unit of reads from the dedup tier and of the data
// cache: a miss fetches a whole page, which is also the read-ahead.
const pageSize = 1 << 20

type pageKey struct {
	ref string
	idx int64
}

// FS is one mounted volume.
type FS struct {
	dht    *dht.Client
	key    ed25519.PrivateKey
	data   Data
	name   string
	policy string
	// inline: small files may be kept in their inode (not when the policy
	// encrypts: inodes are not sealed).
	inline bool
	dvol   string
	root   block.Address
	cfg    Config
	log    *slog.Logger
	pages  *sizedcache.Cache[pageKey, []byte]
	tracer trace.Tracer

	mu       sync.Mutex
	inflight map[pageKey]*fetch
	// The dedup tier's logical bytes, for statfs, and when they were read.
	used   int64
	usedAt time.Time
	// nodes indexes the inodes the kernel holds, for invalidations; id
	// tells this mount's announcements from others'.
	nodes map[block.Address]*node
	id    uint64
}

// Open returns the file system of volume name, ready to mount.
func (r *Registry) Open(ctx context.Context, name string, data Data, cfg Config) (*FS, error) {
	in, err := r.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// Inline data lives in the inode block as it is: an encrypting volume
	// sends every file, however small, through the dedup tier to be sealed.
	inline := true
	if in.Policy != "" {
		p, err := policy.Parse(in.Policy)
		if err != nil {
			return nil, fmt.Errorf("fs: volume %s policy: %w", name, err)
		}
		inline = !p.Encrypt
	}
	return &FS{
		inline: inline,
		dht:    r.dht, key: r.key, data: data, name: name, policy: in.Policy, dvol: DataVolume(name),
		root: in.Root, cfg: cfg, log: cfg.Log,
		pages:    sizedcache.New[pageKey, []byte](cfg.CacheBytes),
		inflight: map[pageKey]*fetch{},
		nodes:    map[block.Address]*node{},
		id:       newMountID(),
		tracer:   otel.Tracer(instrumentation),
	}, nil
}

// Root is the root directory's node, for fusefs.Mount or a test harness.
func (f *FS) Root() fusefs.InodeEmbedder {
	n := &node{fsys: f, addr: f.root}
	f.register(n)
	return n
}

// Mount mounts the volume at dir and serves it until unmounted
// (server.Unmount, fusermount3 -u). The returned server is ready.
func (f *FS) Mount(dir string) (*fuse.Server, error) { return f.MountWith(dir, nil) }

// MountWith is Mount with the FUSE options adjusted first (the volume
// plugin mounts without fusermount and for every user: DirectMount,
// AllowOther).
func (f *FS) MountWith(dir string, adjust func(*fusefs.Options)) (*fuse.Server, error) {
	zero := time.Duration(0)
	opts := &fusefs.Options{
		EntryTimeout: &f.cfg.Timeout,
		AttrTimeout:  &f.cfg.Timeout,
		// No negative caching: a name another mount created is found
		// at the next lookup.
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName:        "shoal:" + f.name,
			Name:          "shoal",
			MaxWrite:      1 << 20,
			DisableXAttrs: true,
			// The kernel checks permissions against the mode bits.
			Options: []string{"default_permissions"},
			// O_TRUNC in Open rather than a separate truncate first.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
		},
	}
	if adjust != nil {
		adjust(opts)
	}
	srv, err := fuse.NewServer(fusefs.NewNodeFS(f.Root(), opts), dir, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := waitMount(srv); err != nil {
		return nil, err
	}
	if f.cfg.NATS == nil {
		return srv, nil
	}
	sub, err := f.subscribe()
	if err != nil {
		f.log.Warn("fs: no invalidations from other mounts", "volume", f.name, "err", err)
		return srv, nil
	}
	go func() {
		srv.Wait()
		_ = sub.Unsubscribe()
	}()
	return srv, nil
}

// mountWaiter is the part of a fuse.Server that waitMount uses.
type mountWaiter interface {
	WaitMount() error
	Unmount() error
}

// waitMount waits until the kernel serves the mount. go-fuse's WaitMount
// ends with a raw open(2) of a file in the new mount (its poll hack),
// which a signal (the Go runtime preempts goroutines with SIGURG) can
// interrupt: it then fails with EINTR, and fs.Mount returned that error
// with the volume mounted and served, so the mount outlived its failed
// Mount. EINTR is retried here (once the mount is up, WaitMount only
// repeats the open); any other failure unmounts what may be mounted.
func waitMount(srv mountWaiter) error {
	for {
		err := srv.WaitMount()
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			_ = srv.Unmount()
		}
		return err
	}
}

// inoOf is the inode number of an address (the root is 1).
func inoOf(a block.Address) uint64 {
	ino := binary.LittleEndian.Uint64(a[:8])
	if ino < 2 {
		ino += 2
	}
	return ino
}

func kindMode(k Kind) uint32 {
	switch k {
	case KindDir:
		return syscall.S_IFDIR
	case KindSymlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}

// span starts the root span of one FUSE operation.
func (f *FS) span(ctx context.Context, op string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs = append(attrs, attribute.String("fs.volume", f.name))
	return f.tracer.Start(ctx, "fs."+op, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// end records an operation's outcome on its span and ends it.
func end(sp trace.Span, errno *syscall.Errno) {
	if *errno != 0 {
		sp.SetAttributes(attribute.String("fs.errno", errnoName(*errno)))
		if *errno == syscall.EIO {
			sp.SetStatus(codes.Error, "EIO")
		}
	}
	sp.End()
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EEXIST:
		return "EEXIST"
	case syscall.ENOTEMPTY:
		return "ENOTEMPTY"
	case syscall.EIO:
		return "EIO"
	}
	return fmt.Sprintf("errno %d", int(e))
}

// errAlreadyDone from an update function means the change is already in
// the inode (an earlier, uncertain attempt was decided): nothing to write.
var errAlreadyDone = errors.New("fs: change already applied")

// errno maps an error to the errno a FUSE operation returns; failures of
// the cluster are EIO, logged.
func (f *FS) errno(op string, err error) syscall.Errno {
	var en syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &en):
		return en
	case errors.Is(err, block.ErrNotFound), errors.Is(err, client.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, errTooLarge), errors.Is(err, rpc.ErrFull):
		// rpc.ErrFull: data refused by the dedup tier (client.ErrFull), or
		// an inode by acceptors, for want of room.
		return syscall.ENOSPC
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	f.log.Warn("fs: operation failed", "volume", f.name, "op", op, "err", err)
	return syscall.EIO
}

// detached is a context for work that must finish once started (a commit
// of file data), whatever happens to the FUSE request.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
}

// readAhead is how many pages past a sequential read are fetched in the
// background.
const readAhead = 4

// fetch is a page being read from the dedup tier; readers of the same page
// wait for it rather than fetching it again.
type fetch struct {
	done chan struct{}
	page []byte
	err  error
}

// readRef reads [off, off+len(dest)) of the stream ref (size bytes long)
// through the page cache. seq says the reader is sequential: the next
// pages are fetched ahead.
func (f *FS) readRef(ctx context.Context, ref []byte, size int64, dest []byte, off int64, seq bool) error {
	for len(dest) > 0 {
		idx := off / pageSize
		if seq {
			for j := int64(1); j <= readAhead && (idx+j)*pageSize < size; j++ {
				f.startFetch(ref, size, idx+j)
			}
		}
		page, err := f.page(ctx, ref, size, idx)
		if err != nil {
			return err
		}
		po := off - idx*pageSize
		if po >= int64(len(page)) {
			return fmt.Errorf("fs: short page %d of a %d-byte stream", idx, size)
		}
		n := copy(dest, page[po:])
		dest, off = dest[n:], off+int64(n)
	}
	return nil
}

func (f *FS) page(ctx context.Context, ref []byte, size, idx int64) ([]byte, error) {
	if p, ok := f.pages.Get(pageKey{string(ref), idx}); ok {
		return p, nil
	}
	fe := f.startFetch(ref, size, idx)
	if fe == nil { // cached meanwhile
		return f.page(ctx, ref, size, idx)
	}
	select {
	case <-fe.done:
		return fe.page, fe.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startFetch starts reading a page unless it is cached (nil) or already
// on its way (that fetch).
func (f *FS) startFetch(ref []byte, size, idx int64) *fetch {
	k := pageKey{string(ref), idx}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fe := f.inflight[k]; fe != nil {
		return fe
	}
	if _, ok := f.pages.Get(k); ok {
		return nil
	}
	fe := &fetch{done: make(chan struct{})}
	f.inflight[k] = fe
	go func() {
		fe.page, fe.err = f.fetchPage(ref, size, idx)
		if fe.err == nil {
			f.pages.Put(k, fe.page, len(fe.page))
		}
		f.mu.Lock()
		delete(f.inflight, k)
		f.mu.Unlock()
		close(fe.done)
	}()
	return fe
}

func (f *FS) fetchPage(ref []byte, size, idx int64) ([]byte, error) {
	// Shared by every reader of the page: not bound to one request.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := idx * pageSize
	n := min(pageSize, size-start)
	r, err := f.data.Read(ctx, ref, f.dvol, start, n)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, fmt.Errorf("fs: reading page %d: %w", idx, err)
	}
	return p, nil
}

// destroy deletes an unlinked inode and releases its data.
func (f *FS) destroy(ctx context.Context, addr block.Address) {
	ctx, cancel := detached(ctx)
	defer cancel()
	m, err := f.dht.GetMutable(ctx, addr)
	if err != nil || m.Tombstone {
		if err != nil && !errors.Is(err, block.ErrNotFound) {
			f.log.Warn("fs: reading an unlinked inode", "addr", addr, "err", err)
		}
		return
	}
	if ino, err := DecodeInode(m.Payload); err == nil && len(ino.Ref) > 0 {
		if err := f.data.Release(ctx, ino.Ref, f.dvol); err != nil {
			f.log.Warn("fs: releasing an unlinked file's data", "addr", addr, "err", err)
			return // keep the inode: its data stays accounted for
		}
	}
	if err := f.dht.DeleteMutable(ctx, f.key, addr); err != nil && !errors.Is(err, block.ErrNotFound) {
		f.log.Warn("fs: deleting an unlinked inode", "addr", addr, "err", err)
	}
}

// usager is the optional space report of the data tier (*client.Client).
type usager interface {
	Usage(ctx context.Context) (client.Usage, error)
}

// statfs reports a nominal 1 PiB capacity (the cluster grows by adding
// nodes), less the logical bytes the dedup tier accounts for cluster-wide
// (read at most every 5 s).
func (f *FS) statfs(ctx context.Context, out *fuse.StatfsOut) {
	const bs = 4096
	const capacity = 1 << 50
	f.mu.Lock()
	used, at := f.used, f.usedAt
	f.mu.Unlock()
	if u, ok := f.data.(usager); ok && time.Since(at) > 5*time.Second {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if us, err := u.Usage(ctx); err == nil {
			used = min(max(us.Logical, 0), capacity)
			f.mu.Lock()
			f.used, f.usedAt = used, time.Now()
			f.mu.Unlock()
		}
		cancel()
	}
	out.Bsize, out.Frsize, out.NameLen = bs, bs, MaxNameLen
	out.Blocks = capacity / bs
	out.Bfree = uint64(capacity-used) / bs
	out.Bavail = out.Bfree
	out.Files, out.Ffree = 1<<40, 1<<40
}
