package fs

import (
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.opentelemetry.io/otel/attribute"

	"shoal/shared/block"
	"shoal/shared/dht"
)

// fresh is how long a node trusts its cached inode for lookups and
// attributes; opens, directory listings and negative lookups always
// revalidate (close-to-open).
const fresh = 250 * time.Millisecond

// maxAttempts bounds compare-and-set retries of one change.
const maxAttempts = 64

// node is one inode of the mounted volume.
type node struct {
	fusefs.Inode
	fsys *FS
	addr block.Address

	mu      sync.Mutex
	ino     *Inode // the cached inode, nil until loaded
	ver     uint64 // its version
	fetched time.Time

	// Files: open handles of this mount, the spool of a file being
	// written (nil: the content is the inode's), whether it holds
	// uncommitted writes and when the last one happened.
	opens     int
	spool     *spool
	dirty     bool
	lastWrite int64
	// unlinked: removed from its directory while open here; deleted at
	// the last release.
	unlinked bool
	// pending are attribute changes made while the file held unflushed
	// writes (tar's fchown, fchmod, futimens before close): they go with
	// the data in the commit's one compare-and-set.
	pending []func(*Inode)
	// lastRead is where the last read ended (sequential detection).
	lastRead atomic.Int64
}

var (
	_ fusefs.NodeLookuper    = (*node)(nil)
	_ fusefs.NodeGetattrer   = (*node)(nil)
	_ fusefs.NodeSetattrer   = (*node)(nil)
	_ fusefs.NodeCreater     = (*node)(nil)
	_ fusefs.NodeMkdirer     = (*node)(nil)
	_ fusefs.NodeUnlinker    = (*node)(nil)
	_ fusefs.NodeRmdirer     = (*node)(nil)
	_ fusefs.NodeRenamer     = (*node)(nil)
	_ fusefs.NodeSymlinker   = (*node)(nil)
	_ fusefs.NodeReadlinker  = (*node)(nil)
	_ fusefs.NodeReaddirer   = (*node)(nil)
	_ fusefs.NodeOpener      = (*node)(nil)
	_ fusefs.NodeReader      = (*node)(nil)
	_ fusefs.NodeWriter      = (*node)(nil)
	_ fusefs.NodeFlusher     = (*node)(nil)
	_ fusefs.NodeFsyncer     = (*node)(nil)
	_ fusefs.NodeReleaser    = (*node)(nil)
	_ fusefs.NodeStatfser    = (*node)(nil)
	_ fusefs.NodeLinker      = (*node)(nil)
	_ fusefs.NodeOnForgetter = (*node)(nil)
)

// handle is an open file; the state is the node's, shared by handles.
type handle struct{}

// loadLocked returns the inode, from the cache if it is younger than
// maxAge, else revalidated (only the version travels if unchanged).
func (n *node) loadLocked(ctx context.Context, maxAge time.Duration) (*Inode, error) {
	if n.ino != nil && time.Since(n.fetched) < maxAge {
		return n.ino, nil
	}
	m, err := n.fsys.dht.GetMutableIfChanged(ctx, n.addr, n.ver)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if m == nil {
		n.fetched = now
		return n.ino, nil
	}
	if m.Tombstone {
		return nil, syscall.ENOENT
	}
	ino, err := DecodeInode(m.Payload)
	if err != nil {
		return nil, err
	}
	n.ino, n.ver, n.fetched = ino, m.Version, now
	return ino, nil
}

func (n *node) load(ctx context.Context, maxAge time.Duration) (*Inode, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.loadLocked(ctx, maxAge)
}

// updateLocked applies fn to a copy of the inode and writes it by
// compare-and-set; on a conflict it takes the current version and applies
// fn again (fn must re-check its preconditions each time).
func (n *node) updateLocked(ctx context.Context, fn func(*Inode) error) (*Inode, error) {
	if n.ino == nil {
		if _, err := n.loadLocked(ctx, 0); err != nil {
			return nil, err
		}
	}
	for range maxAttempts {
		next := n.ino.clone()
		if err := fn(next); errors.Is(err, errAlreadyDone) {
			return n.ino, nil
		} else if err != nil {
			return nil, err
		}
		b, err := next.Encode()
		if err != nil {
			return nil, err
		}
		v, err := n.fsys.dht.CompareAndSet(ctx, n.fsys.key, n.addr, n.ver, b)
		var ce *dht.ConflictError
		if errors.As(err, &ce) {
			if ce.Current.Tombstone {
				return nil, syscall.ENOENT
			}
			cur, derr := DecodeInode(ce.Current.Payload)
			if derr != nil {
				return nil, derr
			}
			n.ino, n.ver, n.fetched = cur, ce.Current.Version, time.Now()
			continue
		}
		if err != nil {
			// The outcome may be unknown: read the inode again next time.
			n.fetched = time.Time{}
			return nil, err
		}
		n.fsys.announce(n.addr, v)
		n.ino, n.ver, n.fetched = next, v, time.Now()
		return next, nil
	}
	return nil, errors.New("fs: too many conflicting updates")
}

func (n *node) update(ctx context.Context, fn func(*Inode) error) (*Inode, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.updateLocked(ctx, fn)
}

// fillLocked sets attributes from the cached inode and the local spool.
func (n *node) fillLocked(out *fuse.Attr) {
	i := n.ino
	if len(n.pending) > 0 {
		i = i.clone()
		for _, fn := range n.pending {
			fn(i)
		}
	}
	out.Ino = n.StableAttr().Ino
	out.Mode = kindMode(i.Kind) | i.Mode
	out.Uid, out.Gid = i.UID, i.GID
	size, mtime := i.Size, i.Mtime
	out.Nlink = 1
	switch i.Kind {
	case KindDir:
		out.Nlink = 2
		for _, e := range i.Entries {
			if e.Kind == KindDir {
				out.Nlink++
			}
		}
		size = 4096
	case KindSymlink:
		size = int64(len(i.Target))
	case KindFile:
		if n.spool != nil {
			size = n.spool.size
		}
		if n.dirty {
			mtime = n.lastWrite
		}
	}
	out.Size = uint64(size)
	out.Blocks = uint64(size+511) / 512
	out.Blksize = 4096
	at, mt, ct := time.Unix(0, i.Atime), time.Unix(0, mtime), time.Unix(0, i.Ctime)
	out.SetTimes(&at, &mt, &ct)
}

func (n *node) fill(out *fuse.Attr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.fillLocked(out)
}

func checkNewName(name string) syscall.Errno {
	if len(name) > MaxNameLen {
		return syscall.ENAMETOOLONG
	}
	if checkName(name) != nil {
		return syscall.EINVAL
	}
	return 0
}

// childNode returns the node of an entry: the one go-fuse knows under
// name if it is that inode, else a detached node for it.
func (n *node) childNode(name string, addr block.Address) *node {
	if ch := n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok && cn.addr == addr {
			return cn
		}
	}
	return &node{fsys: n.fsys, addr: addr}
}

// Lookup finds a name, from the cached directory if it is fresh; a name
// not there is looked for again in the current version.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (_ *fusefs.Inode, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "lookup", attribute.String("fs.name", name))
	defer end(sp, &errno)
	if len(name) > MaxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	d, err := n.load(ctx, fresh)
	if err != nil {
		return nil, n.fsys.errno("lookup", err)
	}
	if d.Kind != KindDir {
		return nil, syscall.ENOTDIR
	}
	e, ok := d.Entries[name]
	if !ok {
		if d, err = n.load(ctx, 0); err != nil {
			return nil, n.fsys.errno("lookup", err)
		}
		if e, ok = d.Entries[name]; !ok {
			return nil, syscall.ENOENT
		}
	}
	// NewInode of a node already known returns its inode.
	ch := n.NewInode(ctx, n.fsys.liveNode(e.Addr), fusefs.StableAttr{Mode: kindMode(e.Kind), Ino: inoOf(e.Addr)})
	cn := ch.Operations().(*node)
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if _, err := cn.loadLocked(ctx, fresh); err != nil {
		return nil, n.fsys.errno("lookup", err)
	}
	cn.fillLocked(&out.Attr)
	return ch, 0
}

// Getattr implements fusefs.NodeGetattrer.
func (n *node) Getattr(ctx context.Context, _ fusefs.FileHandle, out *fuse.AttrOut) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "getattr")
	defer end(sp, &errno)
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.loadLocked(ctx, fresh); err != nil {
		return n.fsys.errno("getattr", err)
	}
	n.fillLocked(&out.Attr)
	return 0
}

// Setattr changes mode, owner, times and (files) size.
func (n *node) Setattr(ctx context.Context, _ fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "setattr")
	defer end(sp, &errno)
	n.mu.Lock()
	defer n.mu.Unlock()
	ino, err := n.loadLocked(ctx, fresh) // a stale one fails its compare-and-set
	if err != nil {
		return n.fsys.errno("setattr", err)
	}
	now := time.Now().UnixNano()
	if size, ok := in.GetSize(); ok {
		if ino.Kind != KindFile {
			return syscall.EISDIR
		}
		if size > 1<<50 {
			return syscall.EFBIG
		}
		if err := n.spoolLocked(ctx, int64(size)); err != nil {
			return n.fsys.errno("setattr", err)
		}
		if err := n.spool.Truncate(int64(size)); err != nil {
			return n.fsys.errno("setattr", err)
		}
		n.dirty, n.lastWrite = true, now
		if n.opens == 0 { // truncate(2) of a file not open here
			err := n.commitLocked(ctx)
			n.spool.Close()
			n.spool, n.dirty, n.pending = nil, false, nil
			if err != nil {
				return n.fsys.errno("setattr", err)
			}
		}
	}
	mode, setMode := in.GetMode()
	uid, setUID := in.GetUID()
	gid, setGID := in.GetGID()
	atime, setA := in.GetATime()
	mtime, setM := in.GetMTime()
	if setM && n.dirty {
		n.lastWrite = mtime.UnixNano() // the commit keeps it
	}
	if setMode || setUID || setGID || setA || setM {
		change := func(i *Inode) error {
			if setMode {
				i.Mode = mode & 0o7777
			}
			if setUID {
				i.UID = uid
			}
			if setGID {
				i.GID = gid
			}
			if setA {
				i.Atime = atime.UnixNano()
			}
			if setM {
				i.Mtime = mtime.UnixNano()
			}
			i.Ctime = now
			return nil
		}
		if n.dirty {
			n.pending = append(n.pending, func(i *Inode) { _ = change(i) })
		} else if _, err := n.updateLocked(ctx, change); err != nil {
			return n.fsys.errno("setattr", err)
		}
	}
	n.fillLocked(&out.Attr)
	return 0
}

// newChild creates ino as a new inode and links it under name.
func (n *node) newChild(ctx context.Context, name string, ino *Inode, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if e := checkNewName(name); e != 0 {
		return nil, e
	}
	if caller, ok := fuse.FromContext(ctx); ok {
		ino.UID, ino.GID = caller.Uid, caller.Gid
	}
	now := time.Now().UnixNano()
	ino.Atime, ino.Mtime, ino.Ctime = now, now, now
	b, err := ino.Encode()
	if err != nil {
		return nil, n.fsys.errno("create", err)
	}
	addr, err := n.fsys.dht.CreateMutable(ctx, n.fsys.key, b, nil)
	if err != nil {
		return nil, n.fsys.errno("create", err)
	}
	_, err = n.update(ctx, func(d *Inode) error {
		if d.Kind != KindDir {
			return syscall.ENOTDIR
		}
		if d.Flags&flagRemoved != 0 {
			return syscall.ENOENT
		}
		if e, ok := d.Entries[name]; ok {
			if e.Addr == addr {
				return errAlreadyDone
			}
			return syscall.EEXIST
		}
		d.Entries[name] = Entry{Addr: addr, Kind: ino.Kind}
		d.Mtime, d.Ctime = now, now
		return nil
	})
	if err != nil {
		dctx, cancel := detached(ctx)
		_ = n.fsys.dht.DeleteMutable(dctx, n.fsys.key, addr)
		cancel()
		return nil, n.fsys.errno("create", err)
	}
	cn := &node{fsys: n.fsys, addr: addr, ino: ino, ver: 1, fetched: time.Now()}
	ch := n.NewInode(ctx, cn, fusefs.StableAttr{Mode: kindMode(ino.Kind), Ino: inoOf(addr)})
	cn = ch.Operations().(*node)
	cn.fill(&out.Attr)
	n.fsys.register(cn)
	return ch, 0
}

// Create makes and opens a new file.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (_ *fusefs.Inode, _ fusefs.FileHandle, _ uint32, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "create", attribute.String("fs.name", name))
	defer end(sp, &errno)
	ch, errno := n.newChild(ctx, name, &Inode{Kind: KindFile, Mode: mode & 0o7777, Nlink: 1}, out)
	if errno == syscall.EEXIST && flags&syscall.O_EXCL == 0 {
		// Another mount created it since the kernel's lookup: open
		// theirs, as open(2) without O_EXCL does.
		if ch, errno = n.Lookup(ctx, name, out); errno != 0 {
			return nil, nil, 0, errno
		}
		fh, _, errno := ch.Operations().(*node).Open(ctx, flags)
		if errno != 0 {
			return nil, nil, 0, errno
		}
		return ch, fh, 0, 0
	}
	if errno != 0 {
		return nil, nil, 0, errno
	}
	cn := ch.Operations().(*node)
	cn.mu.Lock()
	cn.opens++
	cn.mu.Unlock()
	return ch, &handle{}, 0, 0
}

// Mkdir makes a directory.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (_ *fusefs.Inode, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "mkdir", attribute.String("fs.name", name))
	defer end(sp, &errno)
	return n.newChild(ctx, name, &Inode{Kind: KindDir, Mode: mode & 0o7777, Nlink: 2, Entries: map[string]Entry{}}, out)
}

// Symlink makes a symbolic link.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (_ *fusefs.Inode, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "symlink", attribute.String("fs.name", name))
	defer end(sp, &errno)
	if target == "" || len(target) > maxTargetLen {
		return nil, syscall.ENAMETOOLONG
	}
	return n.newChild(ctx, name, &Inode{Kind: KindSymlink, Mode: 0o777, Nlink: 1, Size: int64(len(target)), Target: target}, out)
}

// Link refuses hard links (v1: an inode has one name).
func (n *node) Link(ctx context.Context, _ fusefs.InodeEmbedder, name string, _ *fuse.EntryOut) (_ *fusefs.Inode, errno syscall.Errno) {
	_, sp := n.fsys.span(ctx, "link", attribute.String("fs.name", name))
	defer end(sp, &errno)
	return nil, syscall.EPERM
}

// Readlink returns a symlink's target.
func (n *node) Readlink(ctx context.Context) (_ []byte, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "readlink")
	defer end(sp, &errno)
	i, err := n.load(ctx, fresh)
	if err != nil {
		return nil, n.fsys.errno("readlink", err)
	}
	if i.Kind != KindSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(i.Target), 0
}

// Readdir lists the current version of the directory, sorted by name.
func (n *node) Readdir(ctx context.Context) (_ fusefs.DirStream, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "readdir")
	defer end(sp, &errno)
	d, err := n.load(ctx, 0)
	if err != nil {
		return nil, n.fsys.errno("readdir", err)
	}
	if d.Kind != KindDir {
		return nil, syscall.ENOTDIR
	}
	list := make([]fuse.DirEntry, 0, len(d.Entries)+2)
	list = append(list, fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: n.StableAttr().Ino})
	parentIno := n.StableAttr().Ino
	if _, p := n.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	list = append(list, fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parentIno})
	for _, name := range slices.Sorted(maps.Keys(d.Entries)) {
		e := d.Entries[name]
		list = append(list, fuse.DirEntry{Name: name, Mode: kindMode(e.Kind), Ino: inoOf(e.Addr)})
	}
	return fusefs.NewListDirStream(list), 0
}

// dropLocked is what becomes of an inode a directory no longer names: a
// file open here is deleted at its last release, anything else now.
func (n *node) drop(ctx context.Context, name string, e Entry) {
	cn := n.childNode(name, e.Addr)
	cn.mu.Lock()
	if cn.opens > 0 {
		cn.unlinked = true
		cn.mu.Unlock()
		return
	}
	cn.mu.Unlock()
	n.fsys.destroy(ctx, e.Addr)
}

// Unlink removes a file or symlink; its inode and data go once no
// handle of this mount has it open (handles of other mounts then fail).
func (n *node) Unlink(ctx context.Context, name string) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "unlink", attribute.String("fs.name", name))
	defer end(sp, &errno)
	var gone Entry
	_, err := n.update(ctx, func(d *Inode) error {
		e, ok := d.Entries[name]
		if !ok {
			return syscall.ENOENT
		}
		if e.Kind == KindDir {
			return syscall.EISDIR
		}
		gone = e
		delete(d.Entries, name)
		now := time.Now().UnixNano()
		d.Mtime, d.Ctime = now, now
		return nil
	})
	if err != nil {
		return n.fsys.errno("unlink", err)
	}
	n.drop(ctx, name, gone)
	return 0
}

// fenceDir marks an empty directory removed (or fails with ENOTEMPTY), so
// nothing can be created in it between the check and its unlinking.
func fenceDir(ctx context.Context, cn *node, on bool) error {
	_, err := cn.update(ctx, func(c *Inode) error {
		if c.Kind != KindDir {
			return syscall.ENOTDIR
		}
		if on && len(c.Entries) > 0 {
			return syscall.ENOTEMPTY
		}
		if on == (c.Flags&flagRemoved != 0) {
			return errAlreadyDone
		}
		c.Flags ^= flagRemoved
		return nil
	})
	return err
}

// Rmdir removes an empty directory.
func (n *node) Rmdir(ctx context.Context, name string) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "rmdir", attribute.String("fs.name", name))
	defer end(sp, &errno)
	d, err := n.load(ctx, 0)
	if err != nil {
		return n.fsys.errno("rmdir", err)
	}
	e, ok := d.Entries[name]
	if !ok {
		return syscall.ENOENT
	}
	if e.Kind != KindDir {
		return syscall.ENOTDIR
	}
	cn := n.childNode(name, e.Addr)
	if err := fenceDir(ctx, cn, true); err != nil {
		return n.fsys.errno("rmdir", err)
	}
	_, err = n.update(ctx, func(d *Inode) error {
		if cur, ok := d.Entries[name]; !ok || cur.Addr != e.Addr {
			return syscall.ENOENT
		}
		delete(d.Entries, name)
		now := time.Now().UnixNano()
		d.Mtime, d.Ctime = now, now
		return nil
	})
	if err != nil {
		_ = fenceDir(ctx, cn, false)
		return n.fsys.errno("rmdir", err)
	}
	n.fsys.destroy(ctx, e.Addr)
	return 0
}

// Linux rename(2) flags.
const (
	renameNoReplace = 1
	renameExchange  = 2
)

// Rename moves an entry. Within one directory it is one compare-and-set.
// Across directories the entry is added to the target, then removed from
// the source: between the two, another mount may see it in both (never in
// neither); a failure of the second step leaves it in both.
func (n *node) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "rename", attribute.String("fs.name", name), attribute.String("fs.new_name", newName))
	defer end(sp, &errno)
	if flags&^renameNoReplace != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE, RENAME_WHITEOUT: not supported
	}
	if e := checkNewName(newName); e != 0 {
		return e
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	sd, err := n.load(ctx, 0)
	if err != nil {
		return n.fsys.errno("rename", err)
	}
	src, ok := sd.Entries[name]
	if !ok {
		return syscall.ENOENT
	}
	td, err := np.load(ctx, 0)
	if err != nil {
		return n.fsys.errno("rename", err)
	}
	dst, exists := td.Entries[newName]
	var fenced *node
	if exists {
		switch {
		case dst.Addr == src.Addr:
			return 0
		case flags&renameNoReplace != 0:
			return syscall.EEXIST
		case src.Kind == KindDir && dst.Kind != KindDir:
			return syscall.ENOTDIR
		case src.Kind != KindDir && dst.Kind == KindDir:
			return syscall.EISDIR
		case dst.Kind == KindDir:
			fenced = np.childNode(newName, dst.Addr)
			if err := fenceDir(ctx, fenced, true); err != nil {
				return n.fsys.errno("rename", err)
			}
		}
	}
	var replaced *Entry
	link := func(d *Inode) error {
		replaced = nil
		if d.Flags&flagRemoved != 0 {
			return syscall.ENOENT
		}
		if t, ok := d.Entries[newName]; ok {
			switch {
			case t.Addr == src.Addr:
				return errAlreadyDone
			case flags&renameNoReplace != 0:
				return syscall.EEXIST
			case t.Kind == KindDir && (!exists || t.Addr != dst.Addr):
				return syscall.EBUSY // a directory appeared meanwhile
			}
			r := t
			replaced = &r
		}
		d.Entries[newName] = src
		now := time.Now().UnixNano()
		d.Mtime, d.Ctime = now, now
		return nil
	}
	unlink := func(d *Inode) error {
		if s, ok := d.Entries[name]; !ok || s.Addr != src.Addr {
			return errAlreadyDone // moved or removed meanwhile by another mount
		}
		delete(d.Entries, name)
		now := time.Now().UnixNano()
		d.Mtime, d.Ctime = now, now
		return nil
	}
	if np == n {
		_, err = n.update(ctx, func(d *Inode) error {
			if s, ok := d.Entries[name]; !ok || s.Addr != src.Addr {
				return syscall.ENOENT
			}
			if err := link(d); err != nil {
				return err
			}
			delete(d.Entries, name)
			return nil
		})
	} else {
		if _, err = np.update(ctx, link); err == nil {
			_, err = n.update(ctx, unlink)
		}
	}
	if err != nil {
		if fenced != nil {
			_ = fenceDir(ctx, fenced, false)
		}
		return n.fsys.errno("rename", err)
	}
	if replaced != nil {
		if replaced.Kind == KindDir {
			n.fsys.destroy(ctx, replaced.Addr)
		} else {
			np.drop(ctx, newName, *replaced)
		}
	}
	return 0
}

// Open revalidates the inode (close-to-open: the kernel drops its cached
// pages at every open, and the inode read here is current).
// O_TRUNC comes here too (the mount asks for atomic O_TRUNC): the file
// is emptied in the spool and committed at close, one write instead of two.
func (n *node) Open(ctx context.Context, flags uint32) (_ fusefs.FileHandle, _ uint32, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "open")
	defer end(sp, &errno)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.spool == nil {
		i, err := n.loadLocked(ctx, 0)
		if err != nil {
			return nil, 0, n.fsys.errno("open", err)
		}
		if i.Kind != KindFile {
			return nil, 0, syscall.EISDIR
		}
	}
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := n.spoolLocked(ctx, 0); err != nil {
			return nil, 0, n.fsys.errno("open", err)
		}
		if err := n.spool.Truncate(0); err != nil {
			return nil, 0, n.fsys.errno("open", err)
		}
		n.dirty, n.lastWrite = true, time.Now().UnixNano()
	}
	n.opens++
	return &handle{}, 0, 0
}

// spoolLocked starts the spool of a file about to change, holding its
// current content up to keep bytes.
func (n *node) spoolLocked(ctx context.Context, keep int64) error {
	if n.spool != nil {
		return nil
	}
	i, err := n.loadLocked(ctx, fresh)
	if err != nil {
		return err
	}
	s := &spool{dir: n.fsys.cfg.SpoolDir}
	keep = min(keep, i.Size)
	switch {
	case keep <= 0:
	case len(i.Ref) == 0:
		_, err = s.WriteAt(i.Data[:keep], 0)
	default:
		var r io.ReadCloser
		if r, err = n.fsys.data.Read(ctx, i.Ref, n.fsys.dvol, 0, keep); err == nil {
			_, err = io.Copy(io.NewOffsetWriter(s, 0), r)
			_ = r.Close()
		}
		if err == nil && s.size != keep {
			err = errors.New("fs: short read of a file's data")
		}
	}
	if err != nil {
		s.Close()
		return err
	}
	n.spool = s
	return nil
}

// Read serves the spool of a file being written, else the inode's data
// (inline, or through the page cache).
func (n *node) Read(ctx context.Context, _ fusefs.FileHandle, dest []byte, off int64) (_ fuse.ReadResult, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "read", attribute.Int64("fs.offset", off), attribute.Int("fs.length", len(dest)))
	defer end(sp, &errno)
	n.mu.Lock()
	if n.spool != nil {
		defer n.mu.Unlock()
		m, err := n.spool.ReadAt(dest, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, n.fsys.errno("read", err)
		}
		return fuse.ReadResultData(dest[:m]), 0
	}
	i, err := n.loadLocked(ctx, time.Hour) // revalidated at open
	n.mu.Unlock()
	if err != nil {
		return nil, n.fsys.errno("read", err)
	}
	if off >= i.Size {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(int64(len(dest)), i.Size-off)]
	if len(i.Ref) == 0 {
		return fuse.ReadResultData(i.Data[off : off+int64(len(dest))]), 0
	}
	// Sequential: this read starts where the last one ended, or in the
	// same page (the kernel's parallel reads come a little out of order).
	last := n.lastRead.Swap(off + int64(len(dest)))
	seq := off == last || off/pageSize == last/pageSize
	if err := n.fsys.readRef(ctx, i.Ref, i.Size, dest, off, seq); err != nil {
		return nil, n.fsys.errno("read", err)
	}
	return fuse.ReadResultData(dest), 0
}

// Write goes to the file's spool; the data reaches the cluster at the next
// flush (close) or fsync.
func (n *node) Write(ctx context.Context, _ fusefs.FileHandle, data []byte, off int64) (_ uint32, errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "write", attribute.Int64("fs.offset", off), attribute.Int("fs.length", len(data)))
	defer end(sp, &errno)
	if off < 0 || off+int64(len(data)) > 1<<50 {
		return 0, syscall.EFBIG
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	i, err := n.loadLocked(ctx, time.Hour)
	if err != nil {
		return 0, n.fsys.errno("write", err)
	}
	if err := n.spoolLocked(ctx, i.Size); err != nil {
		return 0, n.fsys.errno("write", err)
	}
	if _, err := n.spool.WriteAt(data, off); err != nil {
		return 0, n.fsys.errno("write", err)
	}
	n.dirty, n.lastWrite = true, time.Now().UnixNano()
	return uint32(len(data)), 0
}

// commitLocked sends a dirty spool to the cluster: inline if small, else
// as a new dedup stream, then moves the inode to it by compare-and-set.
// A conflict (another mount wrote the file meanwhile) is resolved by
// applying our content over theirs: the last close wins. The reference
// replaced is released.
func (n *node) commitLocked(ctx context.Context) error {
	if !n.dirty || n.spool == nil {
		n.dirty = false
		return nil
	}
	ctx, cancel := detached(ctx)
	defer cancel()
	size := n.spool.size
	var data, ref []byte
	if size <= InlineMax && n.fsys.inline {
		data = make([]byte, size)
		if _, err := n.spool.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	} else {
		var err error
		write := n.fsys.data.Write
		if o, ok := n.fsys.data.(offerer); ok && n.ino != nil && len(n.ino.Ref) > 0 {
			// A file that had data (appended to, edited, or truncated
			// and written again by an editor) is mostly what is stored:
			// offered, only its changed chunks travel. A new file's
			// data is new, and offering it would hash it twice.
			write = o.WriteOffered
		}
		ref, _, _, err = write(ctx, n.fsys.policy, n.fsys.dvol, io.NewSectionReader(n.spool, 0, size))
		if err != nil {
			return err
		}
	}
	mtime, now := n.lastWrite, time.Now().UnixNano()
	var replaced []byte
	_, err := n.updateLocked(ctx, func(i *Inode) error {
		replaced = i.Ref
		i.Size, i.Data, i.Ref = size, data, ref
		i.Mtime, i.Ctime = mtime, now
		for _, fn := range n.pending {
			fn(i)
		}
		i.Mtime = mtime // a write after an explicit mtime moved lastWrite
		return nil
	})
	if err != nil {
		if ref != nil && (errors.Is(err, block.ErrNotFound) || errors.Is(err, syscall.ENOENT)) {
			_ = n.fsys.data.Release(ctx, ref, n.fsys.dvol) // the file is gone
		}
		return err
	}
	n.dirty, n.pending = false, nil
	if len(replaced) > 0 {
		// Every stored reference holds one retain, even when a rewrite
		// produced the same reference.
		if err := n.fsys.data.Release(ctx, replaced, n.fsys.dvol); err != nil {
			n.fsys.log.Warn("fs: releasing a file's previous data", "addr", n.addr, "err", err)
		}
	}
	return nil
}

// Flush commits the file's writes (close(2) reports its error).
func (n *node) Flush(ctx context.Context, _ fusefs.FileHandle) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "flush")
	defer end(sp, &errno)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fsys.errno("flush", n.commitLocked(ctx))
}

// Fsync commits the file's writes.
func (n *node) Fsync(ctx context.Context, _ fusefs.FileHandle, _ uint32) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "fsync")
	defer end(sp, &errno)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fsys.errno("fsync", n.commitLocked(ctx))
}

// Release ends a handle; the last one drops the spool, and deletes a file
// unlinked while open.
func (n *node) Release(ctx context.Context, _ fusefs.FileHandle) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "release")
	defer end(sp, &errno)
	n.mu.Lock()
	err := n.commitLocked(ctx)
	if n.opens > 0 {
		n.opens--
	}
	last := n.opens == 0
	gone := last && n.unlinked
	if last {
		if n.spool != nil {
			n.spool.Close()
		}
		n.spool, n.dirty, n.pending = nil, false, nil
		n.unlinked = false
	}
	n.mu.Unlock()
	if gone {
		n.fsys.destroy(ctx, n.addr)
	}
	return n.fsys.errno("release", err)
}

// Statfs reports the volume's space.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) (errno syscall.Errno) {
	ctx, sp := n.fsys.span(ctx, "statfs")
	defer end(sp, &errno)
	n.fsys.statfs(ctx, out)
	return 0
}
