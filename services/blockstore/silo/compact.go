package silo

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"time"

	"github.com/cockroachdb/pebble"
)

// Segment compaction. Deleting a block drops its index entry; its bytes
// stay in the segment file they were appended to. Compact copies the live
// blocks of mostly-dead segments to the end of the current segment,
// repoints their entries, and removes the old files, so space freed by
// space reclamation returns to the disk.
//
// Safety:
//   - A move is a compare-and-swap on the index entry: it rewrites the
//     entry only if it still holds the bytes the copy was made from,
//     holding touchMu exclusively from that check to the commit. Deletes
//     (Delete, DeleteIfUntouched, a quarantine) hold touchMu, so a block
//     deleted meanwhile is not brought back, and a block stored again
//     meanwhile keeps its new entry.
//   - The copies are fsync'd (appendSegment) before the entries pointing
//     at them are committed (pebble.Sync); the old file is removed only
//     after a scan of the index finds nothing pointing into it. A crash
//     at any point leaves every entry pointing at durable bytes; copies
//     not yet indexed are dead bytes for a later compaction.
//   - Reads hold the segment shared while they read it; retiring takes it
//     exclusively, and a read that finds its segment retired (or gone)
//     looks its entry up again, now pointing at the copy.
//   - Touch times are separate keys and are not touched: space
//     reclamation sees a moved block exactly as before.

// CompactStats reports what a Compact did.
type CompactStats struct {
	Segments   int   // segment files removed
	Moved      int   // live blocks copied out of them
	MovedBytes int64 // their bytes
	Freed      int64 // bytes of segment files removed
}

// compactBatch bounds the bytes copied per segment write and index commit.
const compactBatch = 8 << 20

// minCompactSize: smaller sealed segments are not worth a pass.
const minCompactSize = 1 << 20

// Compact rewrites every segment of at least 1 MiB that is at least minDead
// dead (0 < minDead <= 1: the fraction of its bytes no entry points at)
// and removes it.
func (s *Silo) Compact(minDead float64) (CompactStats, error) {
	var st CompactStats
	if s.closed.Load() {
		return st, ErrClosed
	}
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if s.closed.Load() { // Close ran between the check and the lock
		return st, ErrClosed
	}
	victims, err := s.victims(minDead)
	if err != nil || len(victims) == 0 {
		return st, err
	}
	moves, err := s.liveIn(victims)
	if err != nil {
		return st, err
	}
	start := time.Now()
	for id, ms := range moves {
		for len(ms) > 0 {
			n, size := 0, 0
			for n < len(ms) && (n == 0 || size+ms[n].e.size <= compactBatch) {
				size += ms[n].e.size
				n++
			}
			moved, bytes, err := s.move(victims[id], ms[:n])
			if err != nil {
				return st, err
			}
			st.Moved += moved
			st.MovedBytes += bytes
			ms = ms[n:]
			if !s.pace(start, st.MovedBytes) {
				return st, ErrClosed
			}
		}
	}
	// Only segments nothing points into any more go; one that a move
	// skipped (a read error) stays for the next pass, and so does one with
	// writes still to commit their entries (checked before the scan: no
	// new write reserves space in a segment that is not the current one).
	s.segMu.Lock()
	for id, seg := range victims {
		if seg.pending > 0 {
			delete(victims, id)
		}
	}
	s.segMu.Unlock()
	left, err := s.liveIn(victims)
	if err != nil {
		return st, err
	}
	for id, seg := range victims {
		if len(left[id]) > 0 {
			continue
		}
		size, err := s.retire(seg)
		if err != nil {
			return st, err
		}
		st.Segments++
		st.Freed += size
	}
	return st, nil
}

// pace holds a compaction to CompactRate: having copied done bytes since
// start, it waits until that many bytes are due. It reports false if the
// silo is closing meanwhile.
func (s *Silo) pace(start time.Time, done int64) bool {
	if s.opts.CompactRate <= 0 {
		return true
	}
	due := start.Add(time.Duration(float64(done) / float64(s.opts.CompactRate) * float64(time.Second)))
	wait := time.Until(due)
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop: // nil without a compaction loop: Close then waits
		return false
	}
}

// victims picks the segments worth compacting. The current one is sealed
// first if it qualifies: otherwise space freed in it would come back only
// after SegmentSize more bytes were written.
func (s *Silo) victims(minDead float64) (map[uint32]*segment, error) {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	out := map[uint32]*segment{}
	for id, seg := range s.segs {
		if seg.end < minCompactSize || float64(seg.end-seg.live)/float64(seg.end) < minDead {
			continue
		}
		if seg == s.cur {
			if err := s.rotateLocked(seg.id + 1); err != nil {
				return nil, err
			}
		}
		out[id] = seg
	}
	return out, nil
}

type move struct {
	key []byte
	raw []byte // the entry as read: the move's compare-and-swap value
	e   entry
}

// liveIn lists the index entries pointing into the given segments.
func (s *Silo) liveIn(segs map[uint32]*segment) (map[uint32][]move, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{keyBlock}, UpperBound: []byte{keyBlock + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[uint32][]move{}
	for it.First(); it.Valid(); it.Next() {
		v := it.Value()
		if len(v) == 0 || v[0] != 1 {
			continue // inline
		}
		e, err := decodeEntry(v) // a segment entry holds no slice of v
		if err != nil {
			continue // a corrupt entry is the reader's to quarantine
		}
		if _, ok := segs[e.seg]; ok {
			out[e.seg] = append(out[e.seg], move{key: append([]byte(nil), it.Key()...), raw: append([]byte(nil), v...), e: e})
		}
	}
	return out, it.Error()
}

// move copies ms (all in seg) to the current segment and repoints the
// entries that still hold what was copied.
func (s *Silo) move(seg *segment, ms []move) (int, int64, error) {
	var body []byte
	var keep []move
	for _, m := range ms {
		data := make([]byte, m.e.size)
		if _, err := seg.f.ReadAt(data, m.e.off); err != nil || crc32.Checksum(data, castagnoli) != m.e.crc {
			// Not copied: the block stays where it is (a read will find
			// and quarantine it), and so does the segment.
			continue
		}
		body = append(body, data...)
		keep = append(keep, m)
	}
	if len(keep) == 0 {
		return 0, 0, nil
	}
	segID, off, err := s.appendSegment(body)
	if err != nil {
		return 0, 0, fmt.Errorf("silo: compaction copy: %w", err)
	}
	defer s.indexed(segID)
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	b := s.db.NewBatch()
	moved, movedBytes := 0, int64(0)
	for _, m := range keep {
		val := segmentEntry(m.e.kind, m.e.crc, segID, off, m.e.size)
		off += int64(m.e.size)
		cur, closer, err := s.db.Get(m.key)
		if errors.Is(err, pebble.ErrNotFound) {
			continue // deleted meanwhile: its copy is dead bytes
		}
		if err != nil {
			return moved, movedBytes, err
		}
		same := bytes.Equal(cur, m.raw)
		closer.Close()
		if !same {
			continue // stored again meanwhile: the new entry stands
		}
		_ = b.Set(m.key, val, nil)
		moved++
		movedBytes += int64(m.e.size)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, 0, fmt.Errorf("silo: compaction index write: %w", err)
	}
	s.segMu.Lock()
	seg.live -= movedBytes
	if c := s.segs[segID]; c != nil {
		c.live += movedBytes
	}
	s.segMu.Unlock()
	return moved, movedBytes, nil
}

// retire removes a segment nothing points into: out of the map first (new
// lookups retry), then, once the reads in progress are done, its file.
func (s *Silo) retire(seg *segment) (int64, error) {
	s.segMu.Lock()
	delete(s.segs, seg.id)
	size := seg.end
	s.segMu.Unlock()
	seg.rw.Lock()
	seg.retired = true
	err := seg.close()
	seg.rw.Unlock()
	if err != nil {
		return 0, err
	}
	if err := os.Remove(segmentPath(s.segsDir, seg.id)); err != nil {
		return 0, fmt.Errorf("silo: remove compacted segment: %w", err)
	}
	return size, syncDir(s.segsDir)
}

// DiskBytes is the size of the silo's segment files: live blocks and the
// dead bytes a compaction has not reclaimed yet (inline blocks and the
// index are not counted).
func (s *Silo) DiskBytes() int64 {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	var n int64
	for _, seg := range s.segs {
		n += seg.end
	}
	return n
}

// compactLoop compacts every interval until the silo closes.
func (s *Silo) compactLoop(every time.Duration) {
	defer close(s.loopDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_, _ = s.Compact(s.opts.CompactDead)
		}
	}
}
