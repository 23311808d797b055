package dedupe2e

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"shoal/e2e/framework"
	"shoal/services/dedup"
	"shoal/shared/block"
)

// TestRootJournal: Writes' roots go to the writing process's journal;
// collections count them there, releases that reach the root set before
// the fold cancel them, and stopping the process folds its journal into
// the root set, where another process finds every root.
func TestRootJournal(t *testing.T) {
	c, a := start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	p0 := c.PhysicalBytes()
	const n = 20
	var (
		refs  [][]byte
		datas [][]byte
	)
	for i := range n {
		data := randBytes(byte(100+i), 64<<10+i)
		refs = append(refs, write(t, ctx, a.Client, "chunk=fixed:64k", "", data))
		datas = append(datas, data)
	}
	logical := func(from, to int) int64 {
		var s int64
		for _, d := range datas[from:to] {
			s += int64(len(d))
		}
		return s
	}
	u, err := a.Client.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Journals != 1 || u.JournalEntries != n || u.Logical != logical(0, n) {
		t.Fatalf("after %d writes: %+v; want 1 journal of %d entries and %d logical bytes", n, u, n, logical(0, n))
	}
	// Journaled roots keep their data through a collection.
	if _, err := a.Client.Collect(ctx, 0, false); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got := read(t, ctx, a.Client, refs[i], "", 0, -1); !bytes.Equal(got, datas[i]) {
			t.Fatalf("stream %d lost by a collection of journaled roots", i)
		}
	}
	// Releasing the first half before any fold: the root set records the
	// releases, which cancel the journal's adds.
	for i := range n / 2 {
		if err := a.Client.Release(ctx, refs[i], ""); err != nil {
			t.Fatal(err)
		}
	}
	if u, err := a.Client.Usage(ctx); err != nil || u.Logical != logical(n/2, n) {
		t.Fatalf("after releasing half: %+v, %v; want %d logical bytes", u, err, logical(n/2, n))
	}

	// Stopping folds the journal and drops it; a second process finds
	// the roots in the root set alone.
	if err := a.Service.Stop(); err != nil {
		t.Fatal(err)
	}
	b := c.StartDedup(dedup.Config{})
	u, err = b.Client.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Journals != 0 || u.JournalEntries != 0 || u.Logical != logical(n/2, n) {
		t.Fatalf("after the first process stopped: %+v; want no journal and %d logical bytes", u, logical(n/2, n))
	}
	framework.Eventually(t, 30*time.Second, "released streams reclaimed", func() bool {
		if _, err := b.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		return c.PhysicalBytes()-p0 < 3*logical(n/2, n)+3*logical(0, n/2)/2
	})
	for i := n / 2; i < n; i++ {
		if got := read(t, ctx, b.Client, refs[i], "", 0, -1); !bytes.Equal(got, datas[i]) {
			t.Fatalf("stream %d lost after the fold", i)
		}
	}
	// The rest, released through the second process, go too.
	for i := n / 2; i < n; i++ {
		if err := b.Client.Release(ctx, refs[i], ""); err != nil {
			t.Fatal(err)
		}
	}
	framework.Eventually(t, 30*time.Second, "every stream reclaimed", func() bool {
		if _, err := b.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		return c.PhysicalBytes()-p0 < logical(0, n)/4
	})
}

// TestRootJournalFoldsFullHeads: with more Writes than a journal head
// holds, the writer moves on to the next head and the heads it has left
// are folded while it keeps writing, without losing or doubling a root.
func TestRootJournalFoldsFullHeads(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3, MaxBlockSize: block.MaxSealed})
	d := c.StartDedup(dedup.Config{JournalRetireAfter: time.Second, JournalFoldEvery: time.Millisecond})
	ctx := ctxT(t, 2*time.Minute)
	const n = 700 // a head holds ~256 entries
	refs := make([][]byte, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ref, _, _, err := d.Client.Write(ctx, "chunk=fixed:4k", "", bytes.NewReader(fmt.Appendf(nil, "stream %d", i)))
			if err != nil {
				t.Error(err)
			}
			refs[i] = ref
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var logical int64
	for i := range n {
		logical += int64(len(fmt.Sprintf("stream %d", i)))
	}
	framework.Eventually(t, 30*time.Second, "the full heads folded", func() bool {
		u, err := d.Client.Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if u.Logical != logical {
			t.Fatalf("logical bytes %d, want %d (journal entries %d)", u.Logical, logical, u.JournalEntries)
		}
		return u.JournalEntries < n-headEntriesAtLeast
	})
	if _, err := d.Client.Collect(ctx, 0, false); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got := read(t, ctx, d.Client, refs[i], "", 0, -1); string(got) != fmt.Sprintf("stream %d", i) {
			t.Fatalf("stream %d: %q after the fold and a collection", i, got)
		}
	}
	for i := range n {
		if err := d.Client.Release(ctx, refs[i], ""); err != nil {
			t.Fatal(err)
		}
	}
	if u, err := d.Client.Usage(ctx); err != nil || u.Logical != 0 {
		t.Fatalf("after releasing every stream: %+v, %v", u, err)
	}
}

// headEntriesAtLeast is the fewest entries a full head holds.
const headEntriesAtLeast = 256

// TestJournalFoldsRacingCollector: Writes, releases of most of them, folds
// of full journal heads and collections all run at once, for longer than
// the collections' grace period; every stream still referenced reads back
// whole, and the counts come out exact.
func TestJournalFoldsRacingCollector(t *testing.T) {
	c := framework.Start(t, framework.Options{Nodes: 3, MaxBlockSize: block.MaxSealed})
	d := c.StartDedup(dedup.Config{JournalRetireAfter: time.Second, JournalFoldEvery: time.Millisecond})
	ctx := ctxT(t, 3*time.Minute)
	const (
		n     = 1200
		grace = 2 * time.Second
	)
	body := func(i int) []byte {
		return fmt.Appendf(nil, "racing stream %d %s", i, bytes.Repeat([]byte{byte(i)}, i%300))
	}
	var (
		mu      sync.Mutex
		kept    = map[int][]byte{}
		wg      sync.WaitGroup
		written = make(chan struct{})
		cycles  int
		swept   int64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(written)
		sem := make(chan struct{}, 16)
		var ww sync.WaitGroup
		for i := range n {
			sem <- struct{}{}
			ww.Add(1)
			go func() {
				defer func() { <-sem; ww.Done() }()
				ref, _, _, err := d.Client.Write(ctx, "chunk=fixed:4k", "", bytes.NewReader(body(i)))
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 != 0 {
					if err := d.Client.Release(ctx, ref, ""); err != nil {
						t.Error(err)
					}
					return
				}
				mu.Lock()
				kept[i] = ref
				mu.Unlock()
			}()
		}
		ww.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		for {
			res, err := d.Client.Collect(ctx, grace, false)
			if err != nil {
				t.Error(err)
				return
			}
			cycles++
			swept += res.Swept
			select {
			case <-written:
				// Go on until the first streams are well past the grace
				// period, so that a root a collection missed would cost
				// its blocks.
				if time.Since(start) > 3*grace && cycles >= 3 {
					return
				}
			default:
			}
		}
	}()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	u, err := d.Client.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d collections swept %d blocks; %d journal entries left unfolded of %d writes", cycles, swept, u.JournalEntries, n)
	if u.JournalEntries >= n {
		t.Fatalf("no journal head was folded during the run (%d entries)", u.JournalEntries)
	}
	if _, err := d.Client.Collect(ctx, 0, false); err != nil {
		t.Fatal(err)
	}
	var logical int64
	for i, ref := range kept {
		want := body(i)
		logical += int64(len(want))
		if got := read(t, ctx, d.Client, ref, "", 0, -1); !bytes.Equal(got, want) {
			t.Fatalf("stream %d: %q, want %q", i, got, want)
		}
	}
	if u, err := d.Client.Usage(ctx); err != nil || u.Logical != logical {
		t.Fatalf("usage %+v, %v; want %d logical bytes (%d streams kept)", u, err, logical, len(kept))
	}
}
