package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"shoal/services/dedup/client"
	"shoal/services/nbd/wire"
	"shoal/shared/dht"
	"shoal/shared/rpc"
	"shoal/shared/sizedcache"
)

// Manager opens volumes for the NBD server: it implements wire.Exports.
// Connections to one volume share one open Volume (NBD multi-conn), so a
// flush on any of them covers the writes of all.
type Manager struct {
	reg  *Registry
	data Data
	cfg  Config
	log  *slog.Logger
	// id names this server in leases.
	id string

	mu   sync.Mutex
	open map[string]*Volume
}

var (
	_ wire.Exports   = (*Manager)(nil)
	_ wire.Describer = (*Manager)(nil)
)

// NewManager returns a manager serving the registry's volumes.
func NewManager(reg *Registry, data Data, cfg Config, log *slog.Logger) *Manager {
	id := cfg.ID
	if id == "" {
		id = NewID()
	}
	return &Manager{reg: reg, data: data, cfg: cfg.withDefaults(), log: log, id: id, open: map[string]*Volume{}}
}

// NewID returns a fresh server ID: the host name and a random suffix.
func NewID() string {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// ID is the name this server takes leases under.
func (m *Manager) ID() string { return m.id }

// List implements wire.Exports.
func (m *Manager) List(ctx context.Context) ([]wire.ExportInfo, error) {
	vols, err := m.reg.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]wire.ExportInfo, len(vols))
	for i, v := range vols {
		out[i] = wire.ExportInfo{Name: v.Name, Description: "shoal volume, " + v.Policy, Size: v.Size}
	}
	return out, nil
}

// Describe implements wire.Describer: NBD_OPT_INFO (nbdinfo, a client
// probing before it connects) is answered from the head, without taking
// the lease.
func (m *Manager) Describe(ctx context.Context, name string) (wire.ExportInfo, error) {
	if err := ValidateName(name); err != nil {
		return wire.ExportInfo{}, fmt.Errorf("%w: %w", wire.ErrUnknownExport, err)
	}
	h, _, err := m.reg.get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("%w: %w", wire.ErrUnknownExport, err)
	}
	if err != nil {
		return wire.ExportInfo{}, err
	}
	cs, _ := chunkSize(h.Policy)
	return wire.ExportInfo{Name: name, Description: "shoal volume, " + h.Policy, Size: h.Size, PreferredBlockSize: uint32(min(cs, 64<<10))}, nil
}

// Open implements wire.Exports: it takes the volume's write lease, or
// shares the one this server already holds.
func (m *Manager) Open(ctx context.Context, name string) (wire.Backend, wire.ExportInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		v := m.open[name]
		if v != nil && v.closed {
			// Its last connection just went: wait for its final commit and
			// the lease to be given back, then open it afresh.
			m.mu.Unlock()
			select {
			case <-v.released:
			case <-ctx.Done():
				m.mu.Lock()
				return nil, wire.ExportInfo{}, ctx.Err()
			}
			m.mu.Lock()
			continue
		}
		if v == nil {
			var err error
			if v, err = m.openVolume(ctx, name); err != nil {
				if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
					err = fmt.Errorf("%w: %w", wire.ErrUnknownExport, err)
				}
				// A first open writes the volume's stream of zeros: on a
				// full cluster the client is told so.
				return nil, wire.ExportInfo{}, noSpace(err)
			}
			m.open[name] = v
		}
		v.conns++
		info := wire.ExportInfo{Name: name, Description: "shoal volume, " + v.policy, Size: v.size, PreferredBlockSize: uint32(min(v.cs, 64<<10))}
		return &conn{v: v}, info, nil
	}
}

func (m *Manager) openVolume(ctx context.Context, name string) (*Volume, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	h, ver, err := m.reg.get(ctx, name)
	if err != nil {
		return nil, err
	}
	cs, err := chunkSize(h.Policy)
	if err != nil {
		return nil, err
	}
	if who := h.leasedBy(time.Now()); who != "" && who != m.id {
		return nil, fmt.Errorf("%w: volume %s is held by %s until %s", ErrBusy, name, who, h.Expires.Format(time.RFC3339))
	}
	v := &Volume{m: m, name: name, dvol: dataVolume(name), cs: cs, size: h.Size, policy: h.Policy,
		dirty: map[int64][]byte{}, partial: map[int64]*partialExtent{}, clean: sizedcache.New[int64, []byte](int(m.cfg.CacheBytes)),
		stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1), released: make(chan struct{})}
	var made []byte
	if len(h.Ref) == 0 {
		// First use: the stream of zeros it starts as.
		if made, err = m.data.Patch(ctx, h.Policy, v.dvol, nil, h.Size, nil); err != nil {
			return nil, fmt.Errorf("nbd: creating %s's data: %w", name, err)
		}
		h.Ref = made
	}
	h.Epoch++
	h.Holder = m.id
	t0 := time.Now()
	h.Expires = t0.Add(m.cfg.LeaseTTL)
	nv, err := m.reg.cas(ctx, name, ver, h)
	if err != nil {
		var ce *dht.ConflictError
		lost := errors.As(err, &ce)
		// Only a write known not to have happened frees the new stream;
		// after an ambiguous one, the head may name it.
		if made != nil && lost {
			_ = m.data.Release(context.WithoutCancel(ctx), made, v.dvol)
		}
		if lost {
			return nil, fmt.Errorf("%w: volume %s changed while opening; retry", ErrBusy, name)
		}
		return nil, err
	}
	v.h, v.ver, v.leaseUntil = h, nv, t0.Add(m.cfg.LeaseTTL)
	m.log.Info("volume opened", "volume", name, "size", h.Size, "policy", h.Policy, "epoch", h.Epoch)
	go v.background()
	return v, nil
}

// Volume is one open volume. Reads and writes are served from the dirty
// extents, the extents being committed, a cache of clean extents, and
// otherwise the volume's stream in the dedup tier.
type Volume struct {
	m      *Manager
	name   string
	dvol   string
	cs     int64
	size   int64
	policy string

	// commitMu makes commits and lease renewals take turns: both
	// compare-and-set the head at the version the other left.
	commitMu sync.Mutex

	mu         sync.Mutex
	h          head
	ver        uint64
	leaseUntil time.Time
	// dirty holds extents written since the last commit began; a nil
	// slice is an extent of zeros. committing holds those the commit in
	// progress sends. Buffers in dirty are modified in place; buffers in
	// committing never are.
	dirty      map[int64][]byte
	committing map[int64][]byte
	// partial holds extents written only in part, in whole sectors,
	// whose rest is still only in the stream.
	partial    map[int64]*partialExtent
	dirtyBytes int64
	// swaps counts commits begun and ended: a base read from the stream
	// while it did not change is still the extent's base.
	swaps uint64
	clean *sizedcache.Cache[int64, []byte]
	lost  error // set once the lease is lost: every request fails
	conns int
	// closed: the last connection went; released is closed once its
	// final commit is done and the lease given back.
	closed   bool
	released chan struct{}

	stop, done chan struct{}
	kick       chan struct{} // asks background for a commit now
}

// conn is one connection's handle on a shared Volume.
type conn struct {
	v    *Volume
	once sync.Once
}

func (c *conn) Size() int64 { return c.v.size }
func (c *conn) ReadAt(ctx context.Context, p []byte, off int64) error {
	return c.v.ReadAt(ctx, p, off)
}
func (c *conn) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return noSpace(c.v.WriteAt(ctx, p, off, fua))
}
func (c *conn) Trim(ctx context.Context, off, n int64) error {
	return noSpace(c.v.zero(ctx, off, n, false))
}
func (c *conn) WriteZeroes(ctx context.Context, off, n int64, fua bool) error {
	return noSpace(c.v.zero(ctx, off, n, fua))
}
func (c *conn) Flush(ctx context.Context) error { return noSpace(c.v.Flush(ctx)) }

// noSpace makes a commit that failed because the storage nodes are full
// (the data, or the head's Paxos round) an ENOSPC for the client, as a
// full disk's write would be, not EIO.
func noSpace(err error) error {
	if errors.Is(err, rpc.ErrFull) && !errors.Is(err, wire.ErrNoSpace) { // client.ErrFull too
		return fmt.Errorf("%w: %w", wire.ErrNoSpace, err)
	}
	return err
}
func (c *conn) Close() error {
	var err error
	c.once.Do(func() { err = c.v.release() })
	return err
}

// release drops one connection; the last one commits and gives the lease
// back.
func (v *Volume) release() error {
	m := v.m
	m.mu.Lock()
	v.conns--
	last := v.conns == 0
	if last {
		v.closed = true
	}
	m.mu.Unlock()
	if !last {
		return nil
	}
	defer func() {
		m.mu.Lock()
		if m.open[v.name] == v {
			delete(m.open, v.name)
		}
		m.mu.Unlock()
		close(v.released)
	}()
	close(v.stop)
	<-v.done
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := v.Flush(ctx)
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	v.mu.Lock()
	h, ver, lost := v.h, v.ver, v.lost
	v.mu.Unlock()
	if lost == nil {
		h.Holder, h.Expires = "", time.Time{}
		if _, _, cerr := v.casHead(ctx, ver, h); cerr != nil {
			err = errors.Join(err, fmt.Errorf("nbd: giving back %s's lease: %w", v.name, cerr))
		}
	}
	m.log.Info("volume closed", "volume", v.name, "err", err)
	return err
}

// background renews the lease and commits dirty extents that waited a
// flush interval.
func (v *Volume) background() {
	defer close(v.done)
	cfg := v.m.cfg
	renew := time.NewTicker(cfg.LeaseTTL / 3)
	defer renew.Stop()
	flush := time.NewTicker(cfg.FlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-renew.C:
			ctx, cancel := context.WithTimeout(context.Background(), cfg.LeaseTTL/3)
			if err := v.renew(ctx); err != nil {
				v.m.log.Warn("lease renewal failed", "volume", v.name, "err", err)
			}
			cancel()
		case <-flush.C:
			v.commitNow("timer")
		case <-v.kick:
			v.commitNow("dirty")
		}
	}
}

func (v *Volume) commitNow(why string) {
	ctx, cancel := context.WithTimeout(context.Background(), v.m.cfg.LeaseTTL)
	defer cancel()
	if err := v.Flush(ctx); err != nil {
		v.m.log.Warn("background commit failed", "volume", v.name, "why", why, "err", err)
	}
}

func (v *Volume) renew(ctx context.Context) error {
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	v.mu.Lock()
	h, ver, lost := v.h, v.ver, v.lost
	v.mu.Unlock()
	if lost != nil {
		return lost
	}
	t0 := time.Now()
	h.Expires = t0.Add(v.m.cfg.LeaseTTL)
	nv, _, err := v.casHead(ctx, ver, h)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.h, v.ver, v.leaseUntil = h, nv, t0.Add(v.m.cfg.LeaseTTL)
	return nil
}

// errNotApplied: a head write did not happen, and the lease is still ours.
var errNotApplied = errors.New("nbd: head not updated")

// casHead writes h over version ver of the head. A failed or ambiguous
// compare-and-set (a timeout may hide a decision) is settled by reading the
// head: if it is h, the write happened; if the lease is still ours (same
// holder and epoch), it did not (errNotApplied; v.h and v.ver are brought up
// to date); else the lease is lost. An unreadable head leaves the outcome
// unknown. inUse reports whether the head read names stream h.Ref (then it
// must not be released whatever the outcome). commitMu held.
func (v *Volume) casHead(ctx context.Context, ver uint64, h head) (nv uint64, inUse bool, err error) {
	nv, err = v.m.reg.cas(ctx, v.name, ver, h)
	if err == nil {
		return nv, true, nil
	}
	cur, cv, gerr := v.m.reg.get(ctx, v.name)
	if gerr != nil {
		return 0, true, fmt.Errorf("nbd: updating %s's head: %w (outcome unknown: %v)", v.name, err, gerr)
	}
	inUse = bytes.Equal(cur.Ref, h.Ref)
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur.Holder != v.m.id || cur.Epoch != h.Epoch {
		v.lost = fmt.Errorf("%w: volume %s was taken over by %q (lease lost)", wire.ErrShutdown, v.name, cur.Holder)
		v.m.log.Error("lease lost", "volume", v.name, "holder", cur.Holder)
		return 0, inUse, v.lost
	}
	if inUse && cur.Expires.Equal(h.Expires) {
		return cv, true, nil
	}
	v.h, v.ver = cur, cv
	return 0, inUse, fmt.Errorf("%w: %w", errNotApplied, err)
}

// usable reports why the volume cannot serve a request. v.mu held.
func (v *Volume) usable() error {
	if v.lost != nil {
		return v.lost
	}
	if time.Now().After(v.leaseUntil) {
		// Renewals failed for a whole lease term: another server may own
		// the volume by now, so serving even reads could show stale data.
		return fmt.Errorf("%w: lease on %s expired (storage unreachable?)", wire.ErrShutdown, v.name)
	}
	return nil
}

func (v *Volume) check(off, n int64) error {
	if off < 0 || n < 0 || off > v.size-n {
		return fmt.Errorf("%w: [%d, +%d) outside a %d-byte volume", wire.ErrInvalid, off, n, v.size)
	}
	return nil
}

// lookup returns extent i's bytes if held whole in memory (nil, true for
// zeros), and whether it was found. v.mu held.
func (v *Volume) lookup(i int64) ([]byte, bool) {
	if d, ok := v.dirty[i]; ok {
		return d, true
	}
	if _, ok := v.partial[i]; ok {
		return nil, false // needs its base
	}
	if d, ok := v.committing[i]; ok {
		return d, true
	}
	if d, ok := v.clean.Get(i); ok {
		return d, true
	}
	return nil, false
}

// held reports whether anything of extent i is in memory. v.mu held.
func (v *Volume) held(i int64) bool {
	if _, ok := v.lookup(i); ok {
		return true
	}
	_, ok := v.partial[i]
	return ok
}

// base returns what the stream side holds for extent i, for completing a
// partial extent: the extent being committed, a clean copy, or (false) the
// stream must be read. v.mu held.
func (v *Volume) base(i int64) ([]byte, bool) {
	if d, ok := v.committing[i]; ok {
		return d, true
	}
	return v.clean.Get(i)
}

// ReadAt reads p at off.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := v.check(off, int64(len(p))); err != nil {
		return err
	}
	cs := v.cs
	for len(p) > 0 {
		i := off / cs
		v.mu.Lock()
		if err := v.usable(); err != nil {
			v.mu.Unlock()
			return err
		}
		if pe := v.partial[i]; pe != nil {
			if b, ok := v.base(i); ok {
				v.promote(i, b)
			} else {
				swaps := v.swaps
				ref := v.h.Ref
				v.mu.Unlock()
				buf, err := v.fetch(ctx, ref, i, i+1)
				if err != nil {
					return err
				}
				v.mu.Lock()
				if v.swaps == swaps && v.partial[i] != nil {
					v.promote(i, buf)
				}
			}
			v.mu.Unlock()
			continue // read it from dirty now (or look again)
		}
		d, ok := v.lookup(i)
		if ok {
			n := copyExtent(p, d, off-i*cs, cs)
			v.mu.Unlock()
			p, off = p[n:], off+int64(n)
			continue
		}
		// A run of extents not in memory: one read from the stream.
		j := i + 1
		end := (off + int64(len(p)) + cs - 1) / cs
		for ; j < end && j-i < maxFetch; j++ {
			if v.held(j) {
				break
			}
		}
		ref, swaps := v.h.Ref, v.swaps
		v.mu.Unlock()
		buf, err := v.fetch(ctx, ref, i, j)
		if err != nil {
			return err
		}
		v.mu.Lock()
		if v.swaps == swaps {
			for k := i; k < j; k++ {
				if !v.held(k) {
					v.clean.Put(k, buf[(k-i)*cs:(k-i+1)*cs:(k-i+1)*cs], int(cs))
				}
			}
		}
		v.mu.Unlock()
		// What the stream held when the read began: a write racing this
		// read may or may not show, as NBD allows.
		n := copy(p, buf[off-i*cs:])
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// maxFetch bounds the extents one stream read fetches.
const maxFetch = 64

// copyExtent copies extent bytes d (nil: zeros) from offset at into p.
func copyExtent(p, d []byte, at, cs int64) int {
	n := min(int64(len(p)), cs-at)
	if d == nil {
		clear(p[:n])
	} else {
		copy(p[:n], d[at:])
	}
	return int(n)
}

// fetch reads extents [i, j) from the stream.
func (v *Volume) fetch(ctx context.Context, ref []byte, i, j int64) ([]byte, error) {
	cs := v.cs
	rc, err := v.m.data.Read(ctx, ref, v.dvol, i*cs, (j-i)*cs)
	if err != nil {
		return nil, fmt.Errorf("nbd: reading %s: %w", v.name, err)
	}
	defer rc.Close()
	buf := make([]byte, (j-i)*cs)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("nbd: reading %s: %w", v.name, err)
	}
	return buf, nil
}

// WriteAt writes p at off; with fua, it is committed before returning.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := v.check(off, int64(len(p))); err != nil {
		return err
	}
	if err := v.write(ctx, p, off, int64(len(p))); err != nil {
		return err
	}
	return v.after(ctx, fua)
}

// zero makes [off, off+n) read as zeros: whole extents become zero
// extents (their chunks can be reclaimed once committed), partial ones are
// written with zeros.
func (v *Volume) zero(ctx context.Context, off, n int64, fua bool) error {
	if err := v.check(off, n); err != nil {
		return err
	}
	if err := v.write(ctx, nil, off, n); err != nil {
		return err
	}
	return v.after(ctx, fua)
}

// after commits when asked to, or when the dirty extents reach their bound
// (which is how a fast writer gets pushed back). From a quarter of the
// bound on, a commit starts in the background, so a streaming writer
// overlaps its next writes with the commit of its last ones.
func (v *Volume) after(ctx context.Context, fua bool) error {
	v.mu.Lock()
	dirty := v.dirtyBytes
	v.mu.Unlock()
	if fua || dirty >= v.m.cfg.MaxDirty {
		return v.Flush(ctx)
	}
	if dirty >= v.m.cfg.MaxDirty/4 {
		select {
		case v.kick <- struct{}{}:
		default: // one is pending already
		}
	}
	return nil
}

// write stores p (nil: n zeros) at off in the dirty extents.
func (v *Volume) write(ctx context.Context, p []byte, off, n int64) error {
	cs := v.cs
	for n > 0 {
		i := off / cs
		at := off - i*cs
		k := min(n, cs-at)
		var src []byte
		if p != nil {
			src = p[:k]
		}
		if err := v.writeExtent(ctx, i, at, src, k); err != nil {
			return err
		}
		if p != nil {
			p = p[k:]
		}
		off, n = off+k, n-k
	}
	return nil
}

// sector is the granularity at which a partial extent tracks what was
// written to it.
const sector = 512

// partialExtent is an extent written in part, whose other sectors are still
// only in the stream: random small writes need no read first, the commit
// reads the bases of all of them together.
type partialExtent struct {
	data  []byte
	valid []uint64 // one bit per sector written
}

func (pe *partialExtent) mark(at, k int64) {
	for s := at / sector; s < (at+k)/sector; s++ {
		pe.valid[s/64] |= 1 << (s % 64)
	}
}

// overlay copies pe's written sectors onto base.
func (pe *partialExtent) overlay(base []byte) {
	for s := range int64(len(pe.data)) / sector {
		if pe.valid[s/64]&(1<<(s%64)) != 0 {
			copy(base[s*sector:(s+1)*sector], pe.data[s*sector:])
		}
	}
}

// promote completes partial extent i over its base (nil: zeros) and makes
// it a whole dirty extent. v.mu held.
func (v *Volume) promote(i int64, base []byte) {
	pe := v.partial[i]
	nd := make([]byte, v.cs)
	copy(nd, base)
	pe.overlay(nd)
	delete(v.partial, i)
	v.dirty[i] = nd
}

// writeExtent writes src (nil: k zeros) at offset at of extent i.
func (v *Volume) writeExtent(ctx context.Context, i, at int64, src []byte, k int64) error {
	cs := v.cs
	aligned := at%sector == 0 && k%sector == 0
	for {
		v.mu.Lock()
		if err := v.usable(); err != nil {
			v.mu.Unlock()
			return err
		}
		if k == cs {
			// A whole extent: no need for what it held.
			var d []byte
			if src != nil {
				d = slices.Clone(src)
			}
			v.put(i, d)
			v.mu.Unlock()
			return nil
		}
		if d, ok := v.dirty[i]; ok {
			if d == nil {
				d = make([]byte, cs)
			}
			v.patchInto(d, at, src, k)
			v.put(i, d)
			v.mu.Unlock()
			return nil
		}
		pe := v.partial[i]
		if pe == nil {
			if d, ok := v.lookup(i); ok {
				nd := make([]byte, cs)
				copy(nd, d) // nil d leaves zeros
				v.patchInto(nd, at, src, k)
				v.put(i, nd)
				v.mu.Unlock()
				return nil
			}
			if aligned {
				pe = &partialExtent{data: make([]byte, cs), valid: make([]uint64, (cs/sector+63)/64)}
				v.partial[i] = pe
				v.dirtyBytes += cs
				v.clean.Drop(i)
			}
		}
		if pe != nil && aligned {
			v.patchInto(pe.data, at, src, k)
			pe.mark(at, k)
			v.mu.Unlock()
			return nil
		}
		// An unaligned write where only the stream has the rest: read,
		// modify, write.
		if b, ok := v.base(i); ok {
			v.promote(i, b)
			v.mu.Unlock()
			continue
		}
		ref, swaps := v.h.Ref, v.swaps
		v.mu.Unlock()
		buf, err := v.fetch(ctx, ref, i, i+1)
		if err != nil {
			return err
		}
		v.mu.Lock()
		if v.swaps == swaps {
			switch {
			case v.partial[i] != nil:
				v.promote(i, buf)
			case !v.held(i):
				v.put(i, buf)
			}
		}
		// The extent is whole in memory now, unless a commit moved
		// things meanwhile: look again.
		v.mu.Unlock()
	}
}

func (v *Volume) patchInto(d []byte, at int64, src []byte, k int64) {
	if src == nil {
		clear(d[at : at+k])
	} else {
		copy(d[at:], src)
	}
}

// put records extent i as whole and dirty. v.mu held.
func (v *Volume) put(i int64, d []byte) {
	_, isDirty := v.dirty[i]
	_, isPartial := v.partial[i]
	if !isDirty && !isPartial {
		v.dirtyBytes += v.cs
	}
	delete(v.partial, i)
	v.dirty[i] = d
	v.clean.Drop(i)
}

// complete makes every partial extent written before the call whole,
// reading their bases from the stream in runs. commitMu held, so the
// stream does not change meanwhile.
func (v *Volume) complete(ctx context.Context) error {
	v.mu.Lock()
	var need []int64
	for i := range v.partial {
		if b, ok := v.base(i); ok {
			v.promote(i, b)
		} else {
			need = append(need, i)
		}
	}
	ref := v.h.Ref
	v.mu.Unlock()
	if len(need) == 0 {
		return nil
	}
	slices.Sort(need)
	type run struct{ i, j int64 }
	var runs []run
	for _, i := range need {
		if n := len(runs); n > 0 && runs[n-1].j == i && i-runs[n-1].i < maxFetch {
			runs[n-1].j++
		} else {
			runs = append(runs, run{i, i + 1})
		}
	}
	bufs := make([][]byte, len(runs))
	errs := make([]error, len(runs))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for r, rn := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			bufs[r], errs[r] = v.fetch(ctx, ref, rn.i, rn.j)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cs := v.cs
	for r, rn := range runs {
		for i := rn.i; i < rn.j; i++ {
			if v.partial[i] != nil {
				v.promote(i, bufs[r][(i-rn.i)*cs:(i-rn.i+1)*cs])
			}
		}
	}
	return nil
}

// Flush commits every write completed before it was called.
func (v *Volume) Flush(ctx context.Context) error {
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	if err := v.complete(ctx); err != nil {
		return err
	}
	v.mu.Lock()
	if err := v.usable(); err != nil {
		v.mu.Unlock()
		return err
	}
	if len(v.dirty) == 0 {
		v.mu.Unlock()
		return nil
	}
	// Partial extents begun since complete stay behind: they were written
	// after this flush was asked for.
	batch := v.dirty
	v.committing, v.dirty = batch, map[int64][]byte{}
	v.dirtyBytes = int64(len(v.partial)) * v.cs
	v.swaps++
	h, ver := v.h, v.ver
	v.mu.Unlock()

	ref, err := v.m.data.Patch(ctx, h.Policy, v.dvol, h.Ref, 0, extents(batch, v.cs))
	var nv uint64
	if err == nil {
		old := h.Ref
		h.Ref = ref
		var inUse bool
		nv, inUse, err = v.casHead(ctx, ver, h)
		rctx := context.WithoutCancel(ctx)
		switch {
		case err == nil:
			if rerr := v.m.data.Release(rctx, old, v.dvol); rerr != nil {
				// Only space is at stake: the old stream stays a root.
				v.m.log.Warn("releasing a volume's previous stream", "volume", v.name, "err", rerr)
			}
		case inUse && errors.Is(err, wire.ErrShutdown):
			// Committed, then taken over: the head names the new stream,
			// so the old one is ours to release.
			_ = v.m.data.Release(rctx, old, v.dvol)
		case !inUse && (errors.Is(err, errNotApplied) || errors.Is(err, wire.ErrShutdown)):
			// The new stream is nobody's: give its retain back.
			_ = v.m.data.Release(rctx, ref, v.dvol)
		default:
			// The head names, or may name, the new stream: keep its
			// retain (at worst its space leaks) rather than let it be
			// reclaimed.
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.swaps++
	if err != nil {
		// Not committed: the batch is dirty again, under anything
		// written since (a partial extent begun since lies over it).
		for i, d := range batch {
			if _, newer := v.dirty[i]; newer {
				continue
			}
			if v.partial[i] != nil {
				v.promote(i, d)
				continue
			}
			v.dirty[i] = d
			v.dirtyBytes += v.cs
		}
		v.committing = nil
		return err
	}
	v.h, v.ver = h, nv
	for i, d := range batch {
		if d != nil && !v.held(i) {
			v.clean.Put(i, d, int(v.cs))
		}
	}
	v.committing = nil
	return nil
}

// extents turns dirty extents into the patch's, merging runs.
func extents(batch map[int64][]byte, cs int64) []client.Extent {
	idx := make([]int64, 0, len(batch))
	for i := range batch {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var out []client.Extent
	for _, i := range idx {
		d := batch[i]
		if n := len(out); n > 0 {
			last := &out[n-1]
			if d == nil && last.Data == nil && last.Off+last.ZeroLength == i*cs {
				last.ZeroLength += cs
				continue
			}
		}
		if d == nil {
			out = append(out, client.Extent{Off: i * cs, ZeroLength: cs})
		} else {
			out = append(out, client.Extent{Off: i * cs, Data: d})
		}
	}
	return out
}
