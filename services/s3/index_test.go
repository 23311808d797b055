package s3_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"shoal/services/s3"
	"shoal/services/s3/s3test"
)

// refList is the reference listing: keys > marker with the prefix, rolled up
// at the delimiter, without the common prefix the marker lies in.
func refList(sorted []string, prefix, delim, marker string, maxKeys int) ([]string, bool) {
	var out []string
	for _, k := range sorted {
		if k <= marker || !strings.HasPrefix(k, prefix) {
			continue
		}
		item := k
		if delim != "" {
			if j := strings.Index(k[len(prefix):], delim); j >= 0 {
				item = k[:len(prefix)+j+len(delim)]
				if strings.HasPrefix(marker, item) {
					continue
				}
			}
		}
		if len(out) > 0 && out[len(out)-1] == item {
			continue
		}
		if len(out) == maxKeys {
			return out, true
		}
		out = append(out, item)
	}
	return out, false
}

func randKey(r *rand.Rand) string {
	const alpha = "ab/c.\u00e9z"
	runes := []rune(alpha)
	n := 1 + r.IntN(8)
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteRune(runes[r.IntN(len(runes))])
	}
	return b.String()
}

func TestListingMatchesReference(t *testing.T) {
	ctx := context.Background()
	meta := s3test.NewMeta()
	ix, err := s3.NewTestIndex(ctx, meta, 1024)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	set := map[string]bool{}
	for len(set) < 3000 {
		k := randKey(r)
		if set[k] {
			continue
		}
		set[k] = true
		if err := ix.Put(ctx, k, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	// Remove some keys again, so shards have holes.
	for k := range set {
		if r.IntN(10) == 0 {
			if err := ix.Remove(ctx, k); err != nil {
				t.Fatal(err)
			}
			delete(set, k)
		}
	}
	sorted := make([]string, 0, len(set))
	for k := range set {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	if n, _ := ix.Shards(ctx); n < 20 {
		t.Fatalf("only %d shards; splitting did not happen", n)
	}
	pick := func() string {
		if r.IntN(3) == 0 {
			return ""
		}
		k := sorted[r.IntN(len(sorted))]
		return k[:r.IntN(len(k)+1)]
	}
	for i := 0; i < 400; i++ {
		prefix, marker := pick(), pick()
		delim := []string{"", "/", ".", "ab"}[r.IntN(4)]
		maxKeys := []int{1, 2, 7, 100, 1000}[r.IntN(5)]
		got, _, gotTrunc, err := ix.List(ctx, prefix, delim, marker, maxKeys)
		if err != nil {
			t.Fatal(err)
		}
		want, wantTrunc := refList(sorted, prefix, delim, marker, maxKeys)
		if !slices.Equal(got, want) || gotTrunc != wantTrunc {
			t.Fatalf("prefix=%q delim=%q marker=%q max=%d:\n got %q %v\nwant %q %v", prefix, delim, marker, maxKeys, got, gotTrunc, want, wantTrunc)
		}
		// Paginating with the last item as marker yields the full listing.
		var all []string
		m := marker
		for {
			page, _, trunc, err := ix.List(ctx, prefix, delim, m, 13)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, page...)
			if !trunc {
				break
			}
			m = page[len(page)-1]
		}
		full, _ := refList(sorted, prefix, delim, marker, 1<<30)
		if !slices.Equal(all, full) {
			t.Fatalf("paginated prefix=%q delim=%q marker=%q:\n got %q\nwant %q", prefix, delim, marker, all, full)
		}
	}
	for _, k := range sorted[:100] {
		v, ok, err := ix.Get(ctx, k)
		if err != nil || !ok || string(v) != "v-"+k {
			t.Fatalf("get %q: %q %v %v", k, v, ok, err)
		}
	}
}

// Listing under a prefix reads only the shards it needs, not the bucket.
func TestListingReadsFewShards(t *testing.T) {
	ctx := context.Background()
	meta := s3test.NewMeta()
	ix, err := s3.NewTestIndex(ctx, meta, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5000; i++ {
		if err := ix.Put(ctx, fmt.Sprintf("d%02d/f%05d", i%50, i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	shards, _ := ix.Shards(ctx)
	before := meta.Gets.Load()
	keys, _, _, err := ix.List(ctx, "d17/", "", "", 10)
	if err != nil || len(keys) != 10 {
		t.Fatalf("list: %v %d", err, len(keys))
	}
	if reads := meta.Gets.Load() - before; reads > 4 {
		t.Fatalf("prefix listing read %d blocks of %d shards", reads, shards)
	}
	// Delimiter listing of 5 common prefixes jumps over their contents.
	before = meta.Gets.Load()
	_, prefixes, _, err := ix.List(ctx, "d1", "/", "", 1000)
	if err != nil || len(prefixes) != 10 {
		t.Fatalf("delimiter list: %v %d", err, len(prefixes))
	}
	if reads := meta.Gets.Load() - before; int(reads) > 2*len(prefixes)+2 || int(reads) >= shards/3 {
		t.Fatalf("delimiter listing read %d blocks of %d shards", reads, shards)
	}
}

// Writers with separate directory caches (as separate servers) split shards
// concurrently without losing entries.
func TestIndexConcurrentSplits(t *testing.T) {
	ctx := context.Background()
	meta := s3test.NewMeta()
	a, err := s3.NewTestIndex(ctx, meta, 1024)
	if err != nil {
		t.Fatal(err)
	}
	handles := []*s3.Index{a, a.Reopen(), a.Reopen(), a.Reopen()}
	const per = 1000
	putConcurrently(t, handles, per, func(i, w int) string { return fmt.Sprintf("k%05d-%d", i, w) }, []byte(strings.Repeat("v", 20)))
	keys, _, trunc, err := handles[3].List(ctx, "", "", "", 1<<30)
	if err != nil || trunc {
		t.Fatal(err, trunc)
	}
	if len(keys) != per*len(handles) || !sort.StringsAreSorted(keys) {
		t.Fatalf("%d keys, sorted=%v", len(keys), sort.StringsAreSorted(keys))
	}
	if meta.Conflicts.Load() == 0 {
		t.Log("no update conflicts happened; concurrency was not exercised this run")
	}
	if max := meta.MaxSize.Load(); max > 8<<10 {
		t.Fatalf("a block grew to %d bytes", max)
	}
}

// putConcurrently has each handle, as its own server, put per keys at once.
func putConcurrently(t *testing.T, handles []*s3.Index, per int, key func(i, w int) string, v []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(handles))
	for w, ix := range handles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := ix.Put(context.Background(), key(i, w), v); err != nil {
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
}

// busyMeta writes to the index each time a block is created, which is what
// a split does between reading a shard and cutting it: the bucket keeps
// taking PUTs while a shard splits.
type busyMeta struct {
	*s3test.Meta
	during func()
}

func (m *busyMeta) CreateMutable(ctx context.Context, initial []byte) ([32]byte, error) {
	a, err := m.Meta.CreateMutable(ctx, initial)
	if m.during != nil {
		m.during()
	}
	return a, err
}

// Splits finish while writes keep landing in the shard being split, in
// both its halves, and no write is lost: a split that needed the shard
// unchanged from its read to its cut never finished under sequential-key
// PUTs, and the last shard grew without bound.
func TestIndexSplitsUnderWrites(t *testing.T) {
	ctx := context.Background()
	meta := &busyMeta{Meta: s3test.NewMeta()}
	ix, err := s3.NewTestIndex(ctx, meta, 1024)
	if err != nil {
		t.Fatal(err)
	}
	other := ix.ReopenSplitting(1 << 30) // another server, one that leaves splitting to ix
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	low, high := 0, 0
	meta.during = func() {
		// Below every "k" key: the freeze lets it through at once.
		if err := other.Put(ctx, fmt.Sprintf("a%05d", low), []byte("low")); err != nil {
			errs <- err
		}
		low++
		// Above them: waits for the split to move its half.
		k := fmt.Sprintf("z%05d", high)
		high++
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := other.Put(ctx, k, []byte("high")); err != nil {
				errs <- err
			}
		}()
	}
	const n = 400
	for i := range n {
		if err := ix.Put(ctx, fmt.Sprintf("k%05d", i), []byte(strings.Repeat("v", 20))); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	keys, _, trunc, err := other.List(ctx, "", "", "", 1<<30)
	if err != nil || trunc {
		t.Fatal(err, trunc)
	}
	if len(keys) != n+low+high || !sort.StringsAreSorted(keys) {
		t.Fatalf("%d keys listed, want %d (sorted=%v)", len(keys), n+low+high, sort.StringsAreSorted(keys))
	}
	if low < 10 {
		t.Fatalf("only %d splits happened", low)
	}
	if max := meta.MaxSize.Load(); max > 4<<10 {
		t.Fatalf("a shard grew to %d bytes (split at 1 KiB)", max)
	}
}

// gatedMeta holds the first Update until released, counting rounds.
type gatedMeta struct {
	*s3test.Meta
	entered chan struct{}
	release chan struct{}
	rounds  atomic.Int64
	once    sync.Once
}

func (m *gatedMeta) Update(ctx context.Context, a [32]byte, fn func([]byte) ([]byte, error)) (uint64, error) {
	m.once.Do(func() {
		close(m.entered)
		<-m.release
	})
	m.rounds.Add(1)
	return m.Meta.Update(ctx, a, fn)
}

// Writes to one shard that queue behind a round in progress go together in
// the next round, each keeping its own outcome: the one whose function
// fails fails alone, and every other key lands.
func TestIndexCombinesWrites(t *testing.T) {
	ctx := context.Background()
	meta := &gatedMeta{Meta: s3test.NewMeta(), entered: make(chan struct{}), release: make(chan struct{})}
	ix, err := s3.NewTestIndex(ctx, meta, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- ix.Put(ctx, "k000", []byte("v")) }()
	<-meta.entered // the first round is in progress, holding the shard

	const n = 50
	errBad := errors.New("refused by its own function")
	errs := make(chan error, n)
	for i := 1; i <= n; i++ {
		go func() {
			k := fmt.Sprintf("k%03d", i)
			errs <- ix.Update(ctx, k, func([]byte, bool) ([]byte, bool, error) {
				if i == 7 {
					return nil, false, errBad
				}
				return []byte(k), true, nil
			})
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ix.QueuedWrites() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d writes queued", ix.QueuedWrites(), n)
		}
		runtime.Gosched()
	}
	close(meta.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	failed := 0
	for range n {
		if err := <-errs; err != nil {
			if !errors.Is(err, errBad) {
				t.Fatal(err)
			}
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d writes failed, want the one whose function refused", failed)
	}
	if r := meta.rounds.Load(); r != 2 {
		t.Fatalf("%d rounds for %d writes queued behind one, want 2", r, n)
	}
	keys, _, _, err := ix.List(ctx, "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != n || keys[0] != "k000" || slices.Contains(keys, "k007") {
		t.Fatalf("listed %d keys: %v", len(keys), keys)
	}
}
