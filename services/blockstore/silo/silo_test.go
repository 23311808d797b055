package silo

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"shoal/shared/block"
)

func blockData(i, size int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), uint64(size)))
	b := make([]byte, size)
	for j := 0; j+8 <= len(b); j += 8 {
		binary.LittleEndian.PutUint64(b[j:], r.Uint64())
	}
	return b
}

func openT(t *testing.T, dir string, opts Options) *Silo {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPutGetDelete(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SegmentThreshold: 1024})
	defer s.Close()
	for _, size := range []int{0, 1, 100, 1023, 1024, 70_000, 1 << 20} {
		data := blockData(size, size)
		a := block.Sum(data)
		existed, err := s.Put(a, block.KindImmutable, data)
		if err != nil || existed {
			t.Fatalf("put %d: %v %v", size, existed, err)
		}
		if existed, _ := s.Put(a, block.KindImmutable, data); !existed {
			t.Fatalf("second put of %d did not report existing", size)
		}
		got, kind, err := s.Get(a)
		if err != nil || !bytes.Equal(got, data) || kind != block.KindImmutable {
			t.Fatalf("get %d: len %d kind %v err %v", size, len(got), kind, err)
		}
		info, err := s.Stat(a)
		if err != nil || info.Size != size {
			t.Fatalf("stat %d: %+v %v", size, info, err)
		}
	}
	used, _, n := s.Usage()
	if n != 7 || used != 0+1+100+1023+1024+70_000+1<<20 {
		t.Fatalf("usage: %d bytes %d blocks", used, n)
	}
	a := block.Sum(blockData(100, 100))
	if ok, err := s.Delete(a); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if _, _, err := s.Get(a); !errors.Is(err, block.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if ok, _ := s.Delete(a); ok {
		t.Fatal("second delete reported present")
	}
	var seen int
	if err := s.Range(nil, func(block.Address, Info) bool { seen++; return true }); err != nil || seen != 6 {
		t.Fatalf("range saw %d: %v", seen, err)
	}
}

func TestReopenKeepsBlocks(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentThreshold: 4096, SegmentSize: 1 << 20})
	var addrs []block.Address
	for i := range 50 {
		d := blockData(i, 1000*i)
		a := block.Sum(d)
		addrs = append(addrs, a)
		if _, err := s.Put(a, block.KindImmutable, d); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openT(t, dir, Options{SegmentThreshold: 4096, SegmentSize: 1 << 20})
	defer s.Close()
	for i, a := range addrs {
		got, _, err := s.Get(a)
		if err != nil || !bytes.Equal(got, blockData(i, 1000*i)) {
			t.Fatalf("block %d after reopen: %v", i, err)
		}
	}
	if _, _, n := s.Usage(); n != 50 {
		t.Fatalf("%d blocks after reopen", n)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "segments", "*.seg"))
	if len(segs) < 2 {
		t.Fatalf("expected segment rotation, have %d segments", len(segs))
	}
}

func TestCorruptionDetectedAndQuarantined(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentThreshold: 1024})
	defer s.Close()
	d := blockData(1, 64<<10)
	a := block.Sum(d)
	if _, err := s.Put(a, block.KindImmutable, d); err != nil {
		t.Fatal(err)
	}
	seg := segmentPath(filepath.Join(dir, "segments"), 1)
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^d[100]}, 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, _, err := s.Get(a); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt read: %v", err)
	}
	if ok, _ := s.Has(a); ok {
		t.Fatal("corrupt block still indexed")
	}
	if existed, err := s.Put(a, block.KindImmutable, d); existed || err != nil {
		t.Fatalf("repair put: %v %v", existed, err)
	}
	if got, _, err := s.Get(a); err != nil || !bytes.Equal(got, d) {
		t.Fatalf("after repair: %v", err)
	}
}

func TestCapacity(t *testing.T) {
	s := openT(t, t.TempDir(), Options{Capacity: 10_000})
	defer s.Close()
	d := blockData(1, 6000)
	if _, err := s.Put(block.Sum(d), block.KindImmutable, d); err != nil {
		t.Fatal(err)
	}
	d2 := blockData(2, 6000)
	if _, err := s.Put(block.Sum(d2), block.KindImmutable, d2); !errors.Is(err, ErrFull) {
		t.Fatalf("over capacity: %v", err)
	}
}

// A write the disk refuses for want of space is ErrFull, like a capacity
// limit (the e2e test TestS3DiskFullIs507 fills a real tmpfs); other I/O
// errors are not.
func TestDiskFullIsErrFull(t *testing.T) {
	err := diskFull(fmt.Errorf("silo: segment write: %w", &os.PathError{Op: "write", Path: "seg", Err: syscall.ENOSPC}))
	if !errors.Is(err, ErrFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("ENOSPC: %v", err)
	}
	if err := diskFull(fmt.Errorf("silo: segment write: %w", syscall.EIO)); errors.Is(err, ErrFull) {
		t.Fatalf("EIO became %v", err)
	}
	if diskFull(nil) != nil {
		t.Fatal("nil became an error")
	}
}

func TestConcurrentWriters(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SegmentThreshold: 8 << 10, SegmentSize: 4 << 20})
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				size := 4096
				if i%3 == 0 {
					size = 100_000
				}
				d := blockData(w*1000+i, size)
				if _, err := s.Put(block.Sum(d), block.KindImmutable, d); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := range 16 {
		for i := range 40 {
			size := 4096
			if i%3 == 0 {
				size = 100_000
			}
			d := blockData(w*1000+i, size)
			got, _, err := s.Get(block.Sum(d))
			if err != nil || !bytes.Equal(got, d) {
				t.Fatalf("writer %d block %d: %v", w, i, err)
			}
		}
	}
}

// TestCrashKeepsAcknowledged kills a writer process with SIGKILL mid-burst
// and checks that every block it acknowledged is intact after reopening.
func TestCrashKeepsAcknowledged(t *testing.T) {
	if dir := os.Getenv("SILO_CRASH_CHILD"); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	var acked []int
	killChild(t, "TestCrashKeepsAcknowledged", "SILO_CRASH_CHILD", dir, func(line string) bool {
		if i, err := strconv.Atoi(line); err == nil {
			acked = append(acked, i)
		}
		return len(acked) < 300
	})
	if len(acked) < 300 {
		t.Fatalf("child acknowledged only %d blocks", len(acked))
	}
	s := openT(t, dir, Options{SegmentThreshold: 8 << 10})
	defer s.Close()
	for _, i := range acked {
		d := blockData(i, crashSize(i))
		got, _, err := s.Get(block.Sum(d))
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("acknowledged block %d lost after kill -9: %v", i, err)
		}
	}
}

// killChild runs test again in a child process with env set to dir, hands
// each line the child prints to each until each returns false (or the
// child stops printing), then kills the child with SIGKILL.
func killChild(t *testing.T, test, env, dir string, each func(line string) bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() && each(sc.Text()) {
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

func crashSize(i int) int {
	if i%2 == 0 {
		return 50_000
	}
	return 3000
}

func crashChild(dir string) {
	s, err := Open(dir, Options{SegmentThreshold: 8 << 10})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 8 {
				d := blockData(i, crashSize(i))
				if _, err := s.Put(block.Sum(d), block.KindImmutable, d); err != nil {
					return
				}
				mu.Lock()
				fmt.Println(i)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	os.Exit(1)
}

func TestRecordsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	a := block.Sum([]byte("mutable"))
	if rec, err := s.LoadRecord(a); err != nil || rec != nil {
		t.Fatalf("absent record: %q %v", rec, err)
	}
	if err := s.StoreRecord(a, []byte("r1")); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreRecord(a, []byte("r2")); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncRecords(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if rec, err := s.LoadRecord(a); err != nil || string(rec) != "r2" {
		t.Fatalf("after reopen: %q %v", rec, err)
	}
	if err := s.SyncRecords(); err != nil {
		t.Fatalf("sync with nothing pending: %v", err)
	}
}

func TestPutMany(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentThreshold: 1024, Capacity: 400_000})
	old := blockData(99, 5000)
	if _, err := s.Put(block.Sum(old), block.KindImmutable, old); err != nil {
		t.Fatal(err)
	}
	var items []Item
	for i, size := range []int{0, 100, 1023, 1024, 4096, 70_000, 200_000} {
		d := blockData(i, size)
		items = append(items, Item{Addr: block.Sum(d), Kind: block.KindImmutable, Data: d})
	}
	tooBig := blockData(50, 150_000) // 5,000 + 276,243 stored before it: over 400,000
	items = append(items,
		Item{Addr: items[4].Addr, Kind: block.KindImmutable, Data: items[4].Data}, // repeat within the batch
		Item{Addr: block.Sum(old), Kind: block.KindImmutable, Data: old},          // already stored
		Item{Addr: block.Sum(tooBig), Kind: block.KindImmutable, Data: tooBig})
	res := s.PutMany(items)
	for i := range 8 {
		if res[i].Err != nil || res[i].Existed {
			t.Fatalf("item %d: %+v", i, res[i])
		}
	}
	if !res[8].Existed || res[8].Err != nil {
		t.Fatalf("already stored block: %+v", res[8])
	}
	if !errors.Is(res[9].Err, ErrFull) {
		t.Fatalf("block over capacity: %+v", res[9])
	}
	if _, _, n := s.Usage(); n != 8 {
		t.Fatalf("%d blocks counted, want 8", n)
	}
	s.Close()
	s = openT(t, dir, Options{SegmentThreshold: 1024})
	defer s.Close()
	for i, it := range items[:9] {
		got, _, err := s.Get(it.Addr)
		if err != nil || !bytes.Equal(got, it.Data) {
			t.Fatalf("item %d after reopen: %v", i, err)
		}
	}
	if ok, _ := s.Has(items[9].Addr); ok {
		t.Fatal("the block refused for capacity was stored")
	}
	if used, _, n := s.Usage(); n != 8 || used != 5000+276_243 {
		t.Fatalf("after reopen: %d bytes in %d blocks", used, n)
	}
}

// GetAlloc reads a segment-stored block into the caller's buffer, and an
// inline one as Get does.
func TestGetAlloc(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	for _, n := range []int{100, 300 << 10} {
		data := bytes.Repeat([]byte{byte(n)}, n)
		addr := block.Sum(data)
		if _, err := s.Put(addr, block.KindImmutable, data); err != nil {
			t.Fatal(err)
		}
		calls := 0
		got, _, err := s.GetAlloc(addr, func(size int) []byte { calls++; return make([]byte, size, size+7) })
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if inline := n < s.opts.SegmentThreshold; inline == (calls == 1) || !inline && cap(got) != n+7 {
			t.Fatalf("%d bytes (inline %v): alloc called %d times, cap %d", n, inline, calls, cap(got))
		}
	}
}

// Concurrent PutMany calls of the same blocks (a replica write and a read
// repair, two writers of equal data) store each block once: the counts of
// blocks and bytes match what a reopen counts from the index, and every
// call reports each block stored or existing, never failed.
func TestConcurrentPutsOfOneBlockCountOnce(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentThreshold: 1024})
	var items []Item
	var want int64
	for i := range 40 {
		d := blockData(1000+i, 100+i*300) // inline and segment sizes
		items = append(items, Item{Addr: block.Sum(d), Kind: block.KindImmutable, Data: d})
		want += int64(len(d))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each writer sends the blocks in its own order and batches.
			r := rand.New(rand.NewPCG(uint64(w), 1))
			batch := slices.Clone(items)
			r.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
			for len(batch) > 0 {
				n := min(len(batch), 1+r.IntN(8))
				for k, res := range s.PutMany(batch[:n]) {
					if res.Err != nil {
						errs <- fmt.Errorf("writer %d, block %d: %w", w, k, res.Err)
						return
					}
				}
				batch = batch[n:]
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	used, _, n := s.Usage()
	if n != uint64(len(items)) || used != uint64(want) {
		t.Fatalf("counted %d blocks of %d bytes, want %d of %d", n, used, len(items), want)
	}
	s.Close()
	s = openT(t, dir, Options{SegmentThreshold: 1024})
	defer s.Close()
	if used, _, n := s.Usage(); n != uint64(len(items)) || used != uint64(want) {
		t.Fatalf("after a reopen, %d blocks of %d bytes, want %d of %d", n, used, len(items), want)
	}
}
