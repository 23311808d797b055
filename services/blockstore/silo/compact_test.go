package silo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"shoal/shared/block"
)

// compactOpts make 1 MiB segments and leave compaction to the test.
var compactOpts = Options{SegmentThreshold: 1024, SegmentSize: 1 << 20, CompactEvery: -1}

func putBlocks(t *testing.T, s *Silo, n, size int) ([]block.Address, [][]byte) {
	t.Helper()
	addrs, datas := make([]block.Address, n), make([][]byte, n)
	for i := range n {
		datas[i] = blockData(i, size)
		addrs[i] = block.Sum(datas[i])
		if _, err := s.Put(addrs[i], block.KindImmutable, datas[i]); err != nil {
			t.Fatal(err)
		}
	}
	return addrs, datas
}

func segFiles(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "segments"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += info.Size()
	}
	return n
}

// Deleted blocks' bytes go back to the disk: mostly-dead segments are
// rewritten and removed, the live blocks in them still read (also after a
// reopen), and the deleted ones stay deleted.
func TestCompactReclaimsDeadSegments(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, compactOpts)
	addrs, datas := putBlocks(t, s, 48, 100<<10)
	for i, a := range addrs {
		if i%4 != 0 {
			if ok, err := s.Delete(a); !ok || err != nil {
				t.Fatalf("delete %d: %v %v", i, ok, err)
			}
		}
	}
	used, _, blocks := s.Usage()
	before, onDisk := s.DiskBytes(), segFiles(t, dir)
	if before != onDisk {
		t.Fatalf("DiskBytes %d, files hold %d", before, onDisk)
	}
	st, err := s.Compact(0.5)
	if err != nil {
		t.Fatal(err)
	}
	after := s.DiskBytes()
	t.Logf("compacted: %+v; segment bytes %d -> %d", st, before, after)
	if st.Segments < 3 || st.Moved == 0 || st.Freed <= 0 {
		t.Fatalf("compaction %+v: want at least 3 segments removed", st)
	}
	if got := segFiles(t, dir); got != after || after > before-st.Freed+st.MovedBytes {
		t.Fatalf("segment files hold %d bytes, DiskBytes %d, before %d, freed %d, moved %d", got, after, before, st.Freed, st.MovedBytes)
	}
	if after > before/2 {
		t.Fatalf("segment bytes %d -> %d with three quarters deleted", before, after)
	}
	if u, _, b := s.Usage(); u != used || b != blocks {
		t.Fatalf("usage %d bytes %d blocks, was %d %d", u, b, used, blocks)
	}
	check := func(s *Silo) {
		t.Helper()
		for i, a := range addrs {
			got, _, err := s.Get(a)
			if i%4 == 0 {
				if err != nil || !bytes.Equal(got, datas[i]) {
					t.Fatalf("live block %d after compaction: %v", i, err)
				}
			} else if !errors.Is(err, block.ErrNotFound) {
				t.Fatalf("deleted block %d after compaction: %v", i, err)
			}
		}
	}
	check(s)
	if again, err := s.Compact(0.5); err != nil || again.Segments != 0 {
		t.Fatalf("second pass: %+v %v", again, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, compactOpts)
	defer s.Close()
	check(s)
	if u, _, b := s.Usage(); u != used || b != blocks {
		t.Fatalf("after reopen: usage %d bytes %d blocks, was %d %d", u, b, used, blocks)
	}
}

// A compaction keeps touch times (space reclamation's view) unchanged.
func TestCompactKeepsTouchTimes(t *testing.T) {
	s := openT(t, t.TempDir(), compactOpts)
	defer s.Close()
	addrs, _ := putBlocks(t, s, 24, 100<<10)
	touched := map[block.Address]int64{}
	for i, a := range addrs {
		if i%3 == 0 {
			info, err := s.Stat(a)
			if err != nil {
				t.Fatal(err)
			}
			touched[a] = info.Touched
		} else if _, err := s.Delete(a); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := s.Compact(0.5); err != nil || st.Moved == 0 {
		t.Fatalf("compaction %+v %v", st, err)
	}
	for a, want := range touched {
		if info, err := s.Stat(a); err != nil || info.Touched != want {
			t.Fatalf("touch time %v -> %+v %v", want, info, err)
		}
	}
}

// Reads and deletes running during a compaction: every read of a live
// block succeeds with its bytes, and a block deleted while its segment was
// being compacted stays deleted.
func TestCompactRacesReadsAndDeletes(t *testing.T) {
	s := openT(t, t.TempDir(), compactOpts)
	defer s.Close()
	addrs, datas := putBlocks(t, s, 64, 64<<10)
	// Half dead up front; of the rest, every third is deleted during the
	// compaction.
	live := map[int]bool{}
	for i, a := range addrs {
		if i%2 == 1 {
			if _, err := s.Delete(a); err != nil {
				t.Fatal(err)
			}
		} else {
			live[i] = true
		}
	}
	var lateDeletes []int
	for i := range live {
		if i%3 == 0 {
			lateDeletes = append(lateDeletes, i)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (2 * (n*4 + r)) % len(addrs) // even: live at the start
				if i%3 == 0 {
					continue // may be deleted by now
				}
				got, _, err := s.Get(addrs[i])
				if err != nil || !bytes.Equal(got, datas[i]) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, i := range lateDeletes {
			if _, err := s.Delete(addrs[i]); err != nil {
				errs <- err
				return
			}
		}
	}()
	for range 3 {
		if _, err := s.Compact(0.3); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("during compaction: %v", err)
	}
	if _, err := s.Compact(0.3); err != nil {
		t.Fatal(err)
	}
	for _, i := range lateDeletes {
		if _, _, err := s.Get(addrs[i]); !errors.Is(err, block.ErrNotFound) {
			t.Fatalf("block %d deleted during compaction came back: %v", i, err)
		}
	}
	for i := range live {
		if i%3 == 0 {
			continue
		}
		if got, _, err := s.Get(addrs[i]); err != nil || !bytes.Equal(got, datas[i]) {
			t.Fatalf("live block %d: %v", i, err)
		}
	}
}

// Space freed in the segment still being appended to comes back too: it
// is sealed and compacted rather than waiting for SegmentSize more bytes.
func TestCompactCurrentSegment(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentThreshold: 1024, CompactEvery: -1})
	addrs, datas := putBlocks(t, s, 20, 100<<10)
	for _, a := range addrs[2:] {
		if _, err := s.Delete(a); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Compact(0.5)
	if err != nil || st.Segments != 1 || st.Moved != 2 {
		t.Fatalf("compaction %+v %v: want the one segment rewritten, 2 blocks moved", st, err)
	}
	if got := segFiles(t, dir); got != 200<<10 || s.DiskBytes() != got {
		t.Fatalf("segment files hold %d bytes (DiskBytes %d), want the 2 live blocks' %d", got, s.DiskBytes(), 200<<10)
	}
	for i, a := range addrs[:2] {
		if got, _, err := s.Get(a); err != nil || !bytes.Equal(got, datas[i]) {
			t.Fatalf("block %d: %v", i, err)
		}
	}
	// New writes still work, into the new current segment.
	more, moreData := putBlocks(t, s, 1, 50<<10)
	if got, _, err := s.Get(more[0]); err != nil || !bytes.Equal(got, moreData[0]) {
		t.Fatalf("write after compaction: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A process killed with SIGKILL while it writes, deletes and compacts in
// rounds loses none of the blocks it acknowledged and kept, and the
// reopened silo compacts on.
func TestCompactCrash(t *testing.T) {
	if dir := os.Getenv("SILO_COMPACT_CHILD"); dir != "" {
		compactChild(dir)
		return
	}
	dir := t.TempDir()
	var kept []int
	compactions := 0
	killChild(t, "TestCompactCrash", "SILO_COMPACT_CHILD", dir, func(line string) bool {
		if line == "compacted" {
			compactions++
		} else if i, err := strconv.Atoi(line); err == nil {
			kept = append(kept, i)
		}
		return len(kept) < 200
	})
	if len(kept) < 200 || compactions < 3 {
		t.Fatalf("child kept %d blocks through %d compactions before the kill", len(kept), compactions)
	}
	check := func(s *Silo) {
		t.Helper()
		for _, i := range kept {
			d := blockData(i, 64<<10)
			if got, _, err := s.Get(block.Sum(d)); err != nil || !bytes.Equal(got, d) {
				t.Fatalf("kept block %d lost after kill -9 during compaction: %v", i, err)
			}
		}
	}
	s := openT(t, dir, compactOpts)
	defer s.Close()
	check(s)
	if _, err := s.Compact(0.3); err != nil {
		t.Fatal(err)
	}
	check(s)
}

func compactChild(dir string) {
	s, err := Open(dir, compactOpts)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for round := 0; ; round++ {
		for j := range 30 {
			i := round*30 + j
			d := blockData(i, 64<<10)
			a := block.Sum(d)
			if _, err := s.Put(a, block.KindImmutable, d); err != nil {
				os.Exit(1)
			}
			if j%3 == 0 {
				fmt.Println(i) // acknowledged, and kept
			} else if _, err := s.Delete(a); err != nil {
				os.Exit(1)
			}
		}
		if _, err := s.Compact(0.3); err != nil {
			os.Exit(1)
		}
		fmt.Println("compacted")
	}
}

// A compaction copies no faster than CompactRate.
func TestCompactRate(t *testing.T) {
	opts := compactOpts
	opts.CompactRate = 4 << 20
	s := openT(t, t.TempDir(), opts)
	defer s.Close()
	addrs, _ := putBlocks(t, s, 120, 100<<10)
	for i, a := range addrs {
		if i%4 != 0 {
			if _, err := s.Delete(a); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	st, err := s.Compact(0.5)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// Batches are a segment's live blocks here (under 1.2 MiB): the first
	// goes at once, each next one waits until the bytes before it are due.
	floor := time.Duration(float64(st.MovedBytes-1200<<10) / float64(opts.CompactRate) * float64(time.Second))
	if st.MovedBytes < 2<<20 || took < floor {
		t.Fatalf("moved %d bytes in %v, want at least 2 MiB, taking at least %v at %d B/s", st.MovedBytes, took, floor, opts.CompactRate)
	}
	t.Logf("moved %d bytes in %v (floor %v)", st.MovedBytes, took, floor)
}
