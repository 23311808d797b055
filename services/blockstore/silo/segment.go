package silo

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// segment is an append-only file of large block bodies. Writers reserve a
// range, write it with pwrite (in parallel), then wait for a sync that covers
// their write: one fsync serves every writer that finished before it began.
type segment struct {
	id  uint32
	f   *os.File
	end int64 // next reservation offset; guarded by Silo.segMu
	// live is the bytes of blocks the index points at in this segment;
	// guarded by Silo.segMu. The rest (up to end) is dead: deleted
	// blocks, moved blocks, a crash's unindexed tail.
	live int64
	// pending counts writes that reserved space here and have not yet
	// committed (or given up on) their index entries; guarded by
	// Silo.segMu. A segment is retired only when none is left.
	pending int

	// rw lets reads use the file while a compaction retires it: reads
	// hold it shared, retiring takes it exclusively and closes the file.
	rw      sync.RWMutex
	retired bool

	mu      sync.Mutex
	cond    *sync.Cond
	written uint64 // writes completed (pwrite returned)
	synced  uint64 // writes covered by a finished fsync
	syncing bool
	err     error // sticky: a failed fsync poisons the segment
}

func segmentPath(dir string, id uint32) string {
	return filepath.Join(dir, fmt.Sprintf("%08d.seg", id))
}

func openSegment(dir string, id uint32) (*segment, error) {
	f, err := os.OpenFile(segmentPath(dir, id), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	// A crash may leave an unindexed tail; new writes go after it.
	seg := &segment{id: id, f: f, end: st.Size()}
	seg.cond = sync.NewCond(&seg.mu)
	return seg, nil
}

func (g *segment) reserve(n int64) int64 {
	off := g.end
	g.end += n
	return off
}

func (g *segment) write(data []byte, off int64) error {
	if _, err := g.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("silo: segment write: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.written++
	my := g.written
	for g.synced < my {
		if g.err != nil {
			return g.err
		}
		if g.syncing {
			g.cond.Wait()
			continue
		}
		g.syncing = true
		target := g.written
		g.mu.Unlock()
		err := g.f.Sync()
		g.mu.Lock()
		g.syncing = false
		if err != nil {
			g.err = fmt.Errorf("silo: segment fsync: %w", err)
		} else {
			g.synced = target
		}
		g.cond.Broadcast()
	}
	return nil
}

func (g *segment) close() error { return g.f.Close() }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
