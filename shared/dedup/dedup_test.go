package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"shoal/shared/block"
	"shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/memstore"
	"shoal/shared/dedup/policy"
)

func TestRoundTripEveryPolicy(t *testing.T) {
	size := 700 << 10
	if testing.Short() {
		size = 300 << 10
	}
	var policies []string
	for _, chunk := range []string{"fixed:4k", "fixed:64k", "cdc:1k/8k/32k", "cdc:16k/64k/256k"} {
		for _, comp := range []string{"none", "zstd:3"} {
			for _, enc := range []string{"off", "on"} {
				for _, red := range []string{"rep", "ec:4+2"} {
					policies = append(policies, fmt.Sprintf("chunk=%s,compress=%s,encrypt=%s,redundancy=%s", chunk, comp, enc, red))
				}
			}
		}
	}
	for i, ps := range policies {
		t.Run(ps, func(t *testing.T) {
			p := mustPolicy(t, ps)
			store := memstore.New()
			r := newReader(t, store, dedup.ReaderConfig{VolumeKey: keyFor(p), ReadaheadBytes: 1})
			for _, data := range [][]byte{nil, {0x7f}, mixedData(uint64(i), size)} {
				ref := write(t, store, p, keyFor(p), data)
				got, err := readRange(t, r, ref, 0, -1)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%d bytes: read back %d bytes, %v", len(data), len(got), err)
				}
				st, err := r.Stat(context.Background(), ref)
				if err != nil || st.Size != int64(len(data)) {
					t.Fatalf("stat %+v, %v", st, err)
				}
				rnd := rand.New(rand.NewPCG(uint64(i), 3))
				for range 12 {
					if len(data) == 0 {
						break
					}
					off := rnd.Int64N(int64(len(data)))
					n := rnd.Int64N(int64(len(data))-off) + 1
					if rnd.IntN(4) == 0 {
						n = rnd.Int64N(100) + 1 // small reads inside a chunk
					}
					got, err := readRange(t, r, ref, off, n)
					end := min(off+n, int64(len(data)))
					if err != nil || !bytes.Equal(got, data[off:end]) {
						t.Fatalf("range %d+%d: %d bytes, %v", off, n, len(got), err)
					}
				}
			}
		})
	}
}

func TestReadEdges(t *testing.T) {
	p := mustPolicy(t, "chunk=fixed:4k,compress=none")
	store := memstore.New()
	data := randData(1, 3*4096)
	ref := write(t, store, p, nil, data)
	r := newReader(t, store, dedup.ReaderConfig{})
	for _, c := range []struct{ off, n, want int64 }{
		{0, 0, 0}, {12288, 10, 0}, {4095, 2, 2}, {4096, 4096, 4096}, {8000, -1, 12288 - 8000}, {100, 1 << 40, 12188},
	} {
		got, err := readRange(t, r, ref, c.off, c.n)
		if err != nil || int64(len(got)) != c.want || !bytes.Equal(got, data[c.off:c.off+c.want]) {
			t.Errorf("read %d+%d: %d bytes, %v", c.off, c.n, len(got), err)
		}
	}
	if _, err := r.Read(context.Background(), ref, 12289, 1); !errors.Is(err, dedup.ErrRange) {
		t.Errorf("read past end: %v", err)
	}
	if _, err := r.Read(context.Background(), ref, -1, 1); !errors.Is(err, dedup.ErrRange) {
		t.Errorf("negative offset: %v", err)
	}
	// Reading only the middle chunk fetches the root and that chunk.
	before := store.Counts().Gets
	if _, err := readRange(t, r, ref, 5000, 100); err != nil {
		t.Fatal(err)
	}
	if got := store.Counts().Gets - before; got != 1 { // root is cached
		t.Errorf("a one-chunk read did %d gets", got)
	}
}

// A deep tree: small fixed chunks and enough of them to need several levels,
// read at random offsets so the tree is navigated, not scanned.
func TestDeepTree(t *testing.T) {
	n := 40 << 20
	if testing.Short() {
		n = 12 << 20
	}
	p := mustPolicy(t, "chunk=fixed:4k,compress=none")
	store := memstore.New()
	data := randData(5, n)
	ref := write(t, store, p, nil, data)
	if ref.Depth < 1 {
		t.Fatalf("depth %d for %d chunks", ref.Depth, n/4096)
	}
	r := newReader(t, store, dedup.ReaderConfig{})
	rnd := rand.New(rand.NewPCG(5, 5))
	for range 50 {
		off := rnd.Int64N(int64(n))
		got, err := readRange(t, r, ref, off, 10000)
		end := min(off+10000, int64(n))
		if err != nil || !bytes.Equal(got, data[off:end]) {
			t.Fatalf("range at %d: %v", off, err)
		}
	}
	st, err := r.Stat(context.Background(), ref)
	if err != nil || st.Chunks != int64(n/4096) {
		t.Fatalf("stat %+v, %v", st, err)
	}
}

func TestDedupSameDataTwice(t *testing.T) {
	p := mustPolicy(t, "chunk=cdc:16k/64k/256k,compress=zstd:3")
	store := memstore.New()
	data := mixedData(7, 8<<20)
	ref1 := write(t, store, p, nil, data)
	first := store.Counts()
	ref2 := write(t, store, p, nil, data)
	second := store.Counts()
	if ref1 != ref2 {
		t.Fatal("same data, same policy, different reference")
	}
	// Only manifest nodes may be sent again.
	if sent := second.PutBytes - first.PutBytes; sent > int64(len(data))/100 {
		t.Fatalf("second write sent %d bytes for %d", sent, len(data))
	}
	if second.NewBytes != first.NewBytes {
		t.Fatalf("second write stored %d new bytes", second.NewBytes-first.NewBytes)
	}
	r := newReader(t, store, dedup.ReaderConfig{})
	st, err := r.Stat(context.Background(), ref2)
	if err != nil {
		t.Fatal(err)
	}
	// The store holds about one compressed copy.
	if st.Unique == 0 || st.Unique > st.Physical || first.NewBytes > st.Unique+int64(len(data))/50 {
		t.Fatalf("stat %+v, store %+v", st, first)
	}
	if st.CompressionRatio() <= 1.2 {
		t.Fatalf("compression ratio %.2f on half text", st.CompressionRatio())
	}

	// Within one stream: the same 1 MiB repeated 8 times is stored once.
	block1 := randData(8, 1<<20)
	rep := bytes.Repeat(block1, 8)
	store2 := memstore.New()
	ref := write(t, store2, mustPolicy(t, "chunk=fixed:64k,compress=none"), nil, rep)
	c := store2.Counts()
	if c.NewBytes > 1<<20+64<<10 {
		t.Fatalf("8 copies stored %d new bytes", c.NewBytes)
	}
	st, _ = newReader(t, store2, dedup.ReaderConfig{}).Stat(context.Background(), ref)
	if d := st.DedupRatio(); d < 7.5 || d > 8.5 {
		t.Fatalf("dedup ratio %.2f for 8 copies (%+v)", d, st)
	}
}

func TestInsertionKeepsChunksUnderCDC(t *testing.T) {
	data := randData(9, 16<<20)
	shifted := append([]byte{0xee}, data...)
	// shared is the fraction of the shifted stream's bytes that did not
	// have to be stored again.
	shared := func(ps string) float64 {
		store := memstore.New()
		p := mustPolicy(t, ps)
		write(t, store, p, nil, data)
		before := store.Counts().NewBytes
		write(t, store, p, nil, shifted)
		return 1 - float64(store.Counts().NewBytes-before)/float64(len(shifted))
	}
	if s := shared("chunk=cdc:16k/64k/256k,compress=none"); s < 0.9 {
		t.Fatalf("CDC shares %.1f%% after a 1-byte insert", 100*s)
	}
	// The control: fixed chunking loses everything, so the measure works.
	if s := shared("chunk=fixed:64k,compress=none"); s > 0.01 {
		t.Fatalf("fixed chunking shares %.1f%%", 100*s)
	}
}

func TestErasureAnyTwoShardsLost(t *testing.T) {
	p := mustPolicy(t, "chunk=fixed:64k,compress=none,redundancy=ec:4+2")
	data := randData(10, 1<<20+777)
	for a := range 6 {
		for b := a + 1; b < 6; b++ {
			store := memstore.New()
			ref := write(t, store, p, nil, data)
			if store.DropRank(a) == 0 || store.DropRank(b) == 0 {
				t.Fatal("no shards to drop")
			}
			r := newReader(t, store, dedup.ReaderConfig{})
			got, err := readRange(t, r, ref, 0, -1)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("ranks %d,%d lost: %v", a, b, err)
			}
			if a == 0 && b == 1 {
				store.DropRank(5)
				if _, err := readRange(t, r, ref, 0, -1); !errors.Is(err, dedup.ErrCorrupt) {
					t.Fatalf("three shards lost, got %v", err)
				}
			}
		}
	}
}

func TestCorruptShardDetectedAndRebuilt(t *testing.T) {
	p := mustPolicy(t, "chunk=cdc:4k/16k/64k,compress=zstd:3,encrypt=on,redundancy=ec:4+2")
	store := memstore.New()
	data := mixedData(11, 1<<20)
	ref := write(t, store, p, testKey, data)
	stripes := store.CorruptRank(1)
	if stripes == 0 {
		t.Fatal("nothing corrupted")
	}
	var damage []dedup.Damage
	r := newReader(t, store, dedup.ReaderConfig{VolumeKey: testKey, Repair: true, OnDamage: func(d dedup.Damage) { damage = append(damage, d) }})
	got, err := readRange(t, r, ref, 0, -1)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with a corrupt shard per stripe: %v", err)
	}
	if len(damage) != stripes {
		t.Fatalf("%d damaged shards reported, %d corrupted", len(damage), stripes)
	}
	for _, d := range damage {
		if d.Rank != 1 || !d.Repaired || !errors.Is(d.Err, dedup.ErrCorrupt) {
			t.Fatalf("damage %+v", d)
		}
	}
	// Repaired in place: a scrub now finds nothing.
	rep, err := r.Verify(context.Background(), ref)
	if err != nil || rep.Damaged != 0 || len(rep.Lost) != 0 || rep.Chunks != int64(stripes) {
		t.Fatalf("after repair: %+v, %v", rep, err)
	}
	// Parity damage is invisible to reads but not to a scrub.
	store.CorruptRank(5)
	store.DropRank(4)
	rep, err = r.Verify(context.Background(), ref)
	if err != nil || rep.Damaged != int64(2*stripes) || rep.Repaired != rep.Damaged {
		t.Fatalf("scrub of parity damage: %+v, %v", rep, err)
	}
	rep, err = r.Verify(context.Background(), ref)
	if err != nil || rep.Damaged != 0 {
		t.Fatalf("after scrub repair: %+v, %v", rep, err)
	}
	// Without Repair, damage is reported but left alone.
	store.CorruptRank(0)
	damage = nil
	ro := newReader(t, store, dedup.ReaderConfig{VolumeKey: testKey, OnDamage: func(d dedup.Damage) { damage = append(damage, d) }})
	if _, err := readRange(t, ro, ref, 0, -1); err != nil {
		t.Fatal(err)
	}
	if len(damage) != stripes || damage[0].Repaired {
		t.Fatalf("read-only damage report: %d, %+v", len(damage), damage[0])
	}
}

func TestEncryptionHidesPlaintext(t *testing.T) {
	pattern := []byte("SHOAL-KNOWN-PLAINTEXT-PATTERN-0123456789abcdefghijklmnopqrstuvwx")
	if len(pattern) != 64 {
		t.Fatal(len(pattern))
	}
	var data []byte
	for i := range 2000 {
		data = append(data, pattern...)
		data = append(data, randData(uint64(i), 200)...)
	}
	for _, comp := range []string{"none", "zstd:3"} {
		p := mustPolicy(t, "chunk=cdc:4k/16k/64k,encrypt=on,compress="+comp)
		store := memstore.New()
		keyA := bytes.Repeat([]byte{1}, 32)
		keyB := bytes.Repeat([]byte{2}, 32)
		refA := write(t, store, p, keyA, data)
		blocksA := store.Addresses()
		var leaked int
		store.Blocks(func(_ int, b []byte) {
			if bytes.Contains(b, pattern) || bytes.Contains(b, pattern[:32]) {
				leaked++
			}
		})
		if leaked > 0 {
			t.Fatalf("%s: %d stored blocks contain plaintext", comp, leaked)
		}
		// Convergent within a volume: the same data again stores nothing new.
		before := store.Counts().NewBytes
		if write(t, store, p, keyA, data) != refA || store.Counts().NewBytes != before {
			t.Fatalf("%s: not convergent under one key", comp)
		}
		// Another volume key shares no block and no ciphertext.
		write(t, store, p, keyB, data)
		var prefixesA = map[string]bool{}
		store.Blocks(func(_ int, b []byte) {
			if _, ok := blocksA[block.Sum(b)]; ok && len(b) >= 32 {
				prefixesA[string(b[:32])] = true
			}
		})
		store.Blocks(func(_ int, b []byte) {
			if _, ok := blocksA[block.Sum(b)]; !ok && len(b) >= 32 && prefixesA[string(b[:32])] {
				t.Fatalf("%s: volume B repeats a ciphertext of volume A", comp)
			}
		})
		if len(store.Addresses()) < 2*len(blocksA) {
			t.Fatalf("%s: volumes share blocks: %d then %d", comp, len(blocksA), len(store.Addresses()))
		}
		// The wrong key cannot read.
		wrong := newReader(t, store, dedup.ReaderConfig{VolumeKey: keyB})
		if _, err := readRange(t, wrong, refA, 0, -1); !errors.Is(err, dedup.ErrCorrupt) {
			t.Fatalf("%s: read with the wrong key: %v", comp, err)
		}
		nokey := newReader(t, store, dedup.ReaderConfig{})
		if _, err := nokey.Read(context.Background(), refA, 0, -1); !errors.Is(err, dedup.ErrKey) {
			t.Fatalf("%s: read with no key: %v", comp, err)
		}
	}
}

func TestForgedReferencesAndManifests(t *testing.T) {
	p := mustPolicy(t, "chunk=fixed:4k,compress=none")
	store := memstore.New()
	data := randData(12, 10<<20)
	ref := write(t, store, p, nil, data)
	r := newReader(t, store, dedup.ReaderConfig{})
	b, err := ref.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		if _, err := manifest.ParseRef(b[:i]); err == nil {
			t.Fatalf("ref truncated to %d bytes accepted", i)
		}
	}
	ctx := context.Background()
	expectRefused := func(name string, forged manifest.Ref) {
		t.Helper()
		_, err := readRange(t, r, forged, 0, -1)
		if err == nil {
			t.Fatalf("%s: read succeeded", name)
		}
		if _, err := r.Stat(ctx, forged); err == nil && name != "size" {
			t.Fatalf("%s: stat succeeded", name)
		}
	}
	f := ref
	f.Size++
	expectRefused("size", f)
	f = ref
	f.Depth++
	expectRefused("depth", f)
	f = ref
	f.Root[0] ^= 1
	expectRefused("root", f)

	// A stored node that is a valid block but a lie: the root claims a
	// different size than its children hold.
	root, err := store.Get(ctx, ref.Root)
	if err != nil {
		t.Fatal(err)
	}
	node, err := manifest.DecodeNode(root)
	if err != nil || node.Level == 0 {
		t.Fatalf("root: %v level %d", err, node.Level)
	}
	node.Children[0].Logical += 4096
	node.Stats.Logical += 4096
	forgedAddr, err := store.Put(ctx, node.Encode(nil))
	if err != nil {
		t.Fatal(err)
	}
	f = ref
	f.Root = forgedAddr
	f.Size += 4096
	if _, err := readRange(t, r, f, 0, -1); !errors.Is(err, dedup.ErrCorrupt) {
		t.Fatalf("forged child size: %v", err)
	}
	// Garbage stored under a real address is refused by the decoder.
	junk, _ := store.Put(ctx, []byte("not a manifest"))
	f = ref
	f.Root = junk
	if _, err := r.Stat(ctx, f); !errors.Is(err, dedup.ErrCorrupt) {
		t.Fatalf("junk root: %v", err)
	}
	// A corrupted chunk is caught by its hash.
	for a := range store.Addresses() {
		if a != ref.Root {
			store.Corrupt(a)
		}
	}
	if _, err := readRange(t, newReader(t, store, dedup.ReaderConfig{}), ref, 0, -1); !errors.Is(err, dedup.ErrCorrupt) {
		t.Fatalf("corrupt chunks: %v", err)
	}
}

func TestReachable(t *testing.T) {
	for _, ps := range []string{"chunk=fixed:4k,compress=none", "chunk=cdc:4k/16k/64k,encrypt=on,redundancy=ec:4+2"} {
		p := mustPolicy(t, ps)
		store := memstore.New()
		key := keyFor(p)
		a := mixedData(13, 5<<20)
		b := append(append([]byte{}, a[:2<<20]...), mixedData(14, 1<<20)...)
		refA := write(t, store, p, key, a)
		refB := write(t, store, p, key, b)
		r := newReader(t, store, dedup.ReaderConfig{VolumeKey: key})
		all, err := r.Reachable(context.Background(), []manifest.Ref{refA, refB})
		if err != nil {
			t.Fatal(err)
		}
		held := store.Addresses()
		if len(all) != len(held) {
			t.Fatalf("%s: %d reachable, %d held", ps, len(all), len(held))
		}
		for a := range held {
			if _, ok := all[a]; !ok {
				t.Fatalf("%s: held block %s not reachable", ps, a)
			}
		}
		// Sweep what B alone does not need; B must still read.
		onlyB, err := r.Reachable(context.Background(), []manifest.Ref{refB})
		if err != nil {
			t.Fatal(err)
		}
		swept := 0
		for a := range held {
			if _, ok := onlyB[a]; !ok {
				if err := store.Delete(context.Background(), a); err != nil {
					t.Fatal(err)
				}
				swept++
			}
		}
		if swept == 0 {
			t.Fatalf("%s: nothing to sweep", ps)
		}
		got, err := readRange(t, r, refB, 0, -1)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s: B after sweep: %v", ps, err)
		}
		if _, err := readRange(t, newReader(t, store, dedup.ReaderConfig{VolumeKey: key}), refA, 0, -1); err == nil {
			t.Fatalf("%s: A still reads after its blocks were swept", ps)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	p := mustPolicy(t, "chunk=fixed:4k")
	if _, err := dedup.NewWriter(memstore.New(), dedup.WriterConfig{Policy: p, VolumeKey: testKey}); !errors.Is(err, dedup.ErrKey) {
		t.Fatalf("key on unencrypted policy: %v", err)
	}
	enc := mustPolicy(t, "chunk=fixed:4k,encrypt=on")
	if _, err := dedup.NewWriter(memstore.New(), dedup.WriterConfig{Policy: enc}); !errors.Is(err, dedup.ErrKey) {
		t.Fatalf("no key on encrypted policy: %v", err)
	}
	// A failing store fails the write; it does not hang.
	w, _ := dedup.NewWriter(failing{memstore.New()}, dedup.WriterConfig{Policy: p, MaxInFlight: 64 << 10})
	if _, err := w.Write(context.Background(), bytes.NewReader(randData(1, 4<<20))); !errors.Is(err, errBroken) {
		t.Fatalf("failing store: %v", err)
	}
	// So does a cancelled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w, _ = dedup.NewWriter(memstore.New(), dedup.WriterConfig{Policy: p})
	if _, err := w.Write(ctx, bytes.NewReader(randData(1, 4<<20))); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

var errBroken = errors.New("test: broken store")

type failing struct{ *memstore.Store }

func (f failing) Put(ctx context.Context, data []byte) (block.Address, error) {
	if len(data) > 1000 && data[0]%4 == 0 {
		return block.Address{}, errBroken
	}
	return f.Store.Put(ctx, data)
}

func TestStatRatios(t *testing.T) {
	if r := (dedup.Stat{Physical: 10}).DedupRatio(); !math.IsInf(r, 1) {
		t.Fatal(r)
	}
	if r := (dedup.Stat{}).CompressionRatio(); r != 1 {
		t.Fatal(r)
	}
}

// A one-chunk stream's root leaf travels in the reference: the stream is
// one block, it reads back, Stat works, and Reachable (the collector's
// mark) still reaches its chunk, so reclamation cannot take it.
func TestSmallStreamInlineRoot(t *testing.T) {
	for _, ps := range []string{"", "encrypt=on", "compress=none", "redundancy=ec:2+1"} {
		p := mustPolicy(t, ps)
		key := keyFor(p)
		store := memstore.New()
		data := mixedData(21, 3000) // one chunk
		ref := write(t, store, p, key, data)
		if ref.Inline == "" || !ref.Root.IsZero() {
			t.Fatalf("%q: a one-chunk stream got a stored root", ps)
		}
		held := store.Addresses()
		want := 1
		if p.Redundancy.Mode == policy.Erasure {
			want = p.Redundancy.Data + p.Redundancy.Parity
		}
		if len(held) != want {
			t.Fatalf("%q: %d blocks stored, want %d (no manifest node)", ps, len(held), want)
		}
		r := newReader(t, store, dedup.ReaderConfig{VolumeKey: key})
		if got, err := readRange(t, r, ref, 0, -1); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%q: read back: %v", ps, err)
		}
		if got, err := readRange(t, r, ref, 100, 50); err != nil || !bytes.Equal(got, data[100:150]) {
			t.Fatalf("%q: range: %v", ps, err)
		}
		if st, err := r.Stat(context.Background(), ref); err != nil || st.Size != int64(len(data)) || st.Chunks != 1 {
			t.Fatalf("%q: stat %+v, %v", ps, st, err)
		}
		all, err := r.Reachable(context.Background(), []manifest.Ref{ref})
		if err != nil {
			t.Fatal(err)
		}
		for a := range held {
			if _, ok := all[a]; !ok {
				t.Fatalf("%q: stored block %s not reachable from the ref", ps, a)
			}
		}
		// Survives its binary form, as frontends keep it.
		b, err := ref.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		back, err := manifest.ParseRef(b)
		if err != nil || back != ref {
			t.Fatalf("%q: ref round trip: %v", ps, err)
		}
		if p.Encrypt {
			// The inline node is sealed like a stored one: tampering shows.
			bad := ref
			raw := []byte(bad.Inline)
			raw[len(raw)/2] ^= 1
			bad.Inline = string(raw)
			if _, err := readRange(t, r, bad, 0, -1); !errors.Is(err, dedup.ErrCorrupt) {
				t.Fatalf("tampered inline root: %v", err)
			}
		}
	}
	// A stream of many chunks still stores its root.
	p := mustPolicy(t, "chunk=fixed:4k,compress=none")
	ref := write(t, memstore.New(), p, nil, mixedData(22, 1<<20))
	if ref.Inline != "" || ref.Root.IsZero() {
		t.Fatal("a 256-chunk stream got an inline root")
	}
}

// poisonStore is a memstore whose reads return copies of their own that
// Recycle overwrites, as a pool's next user would: a reader that gives
// back bytes it still reads from sees the poison.
type poisonStore struct {
	*memstore.Store
	recycled atomic.Int64
}

func (p *poisonStore) Get(ctx context.Context, a block.Address) ([]byte, error) {
	b, err := p.Store.Get(ctx, a)
	return bytes.Clone(b), err
}

func (p *poisonStore) GetShard(ctx context.Context, stripe block.Address, rank int, a block.Address) ([]byte, error) {
	b, err := p.Store.GetShard(ctx, stripe, rank, a)
	return bytes.Clone(b), err
}

func (p *poisonStore) Recycle(b []byte) {
	for i := range b {
		b[i] = 0xEE
	}
	p.recycled.Add(1)
}

// Chunks are read into buffers that a read gives back as it moves past
// them or closes (a stripe's join to the package's pool, a block's bytes
// and a stripe's shards to the store): readers running side by side,
// closing early, must each keep seeing their own bytes.
func TestPooledChunksStayTheirs(t *testing.T) {
	for _, ps := range []string{"chunk=cdc:16k/64k/256k,compress=none,redundancy=ec:4+2", "chunk=cdc:16k/64k/256k,compress=none", "chunk=cdc:16k/64k/256k,compress=zstd:1"} {
		t.Run(ps, func(t *testing.T) { readSideBySide(t, mustPolicy(t, ps)) })
	}
}

func readSideBySide(t *testing.T, p policy.Policy) {
	store := &poisonStore{Store: memstore.New()}
	datas := [][]byte{randData(21, 3<<20+5), mixedData(22, 2<<20+99), randData(23, 4<<20)}
	refs := make([]manifest.Ref, len(datas))
	for i, d := range datas {
		refs[i] = write(t, store, p, nil, d)
	}
	r := newReader(t, store, dedup.ReaderConfig{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 8 {
				i := rng.IntN(len(datas))
				d := datas[i]
				off := rng.Int64N(int64(len(d)))
				stop := off + rng.Int64N(int64(len(d))-off+1) // may close early
				rc, err := r.Read(context.Background(), refs[i], off, -1)
				if err != nil {
					errs <- err
					return
				}
				buf := make([]byte, 1+rng.IntN(100<<10))
				pos := off
				if rng.IntN(2) == 0 { // through WriteTo, as io.Copy reads
					cw := &checkWriter{want: d, pos: off, stop: stop}
					_, err := io.Copy(cw, rc)
					if cw.bad != nil {
						errs <- fmt.Errorf("stream %d: %w", i, cw.bad)
						return
					}
					if err != nil && !errors.Is(err, errStopWriting) {
						errs <- fmt.Errorf("stream %d at %d: %w", i, cw.pos, err)
						return
					}
					pos = stop
				}
				for pos < stop {
					n, err := rc.Read(buf[:min(int64(len(buf)), stop-pos)])
					if !bytes.Equal(buf[:n], d[pos:pos+int64(n)]) {
						errs <- fmt.Errorf("stream %d at %d: wrong bytes", i, pos)
						return
					}
					pos += int64(n)
					if err != nil {
						errs <- fmt.Errorf("stream %d at %d: %w", i, pos, err)
						return
					}
				}
				if err := rc.Close(); err != nil {
					errs <- err
					return
				}
				if _, err := rc.Read(buf); err == nil {
					errs <- fmt.Errorf("a read after Close succeeded")
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
	if store.recycled.Load() == 0 {
		t.Fatal("the reads gave nothing back to the store")
	}
}

var errStopWriting = errors.New("writer: stop")

// checkWriter compares what it is given with want from pos, while the
// bytes are the caller's (a buffer given back early would show here), and
// fails with errStopWriting once it has reached stop.
type checkWriter struct {
	want      []byte
	pos, stop int64
	bad       error
}

func (w *checkWriter) Write(p []byte) (int, error) {
	if w.pos >= w.stop {
		return 0, errStopWriting
	}
	if int64(len(p)) > int64(len(w.want))-w.pos || !bytes.Equal(p, w.want[w.pos:w.pos+int64(len(p))]) {
		w.bad = fmt.Errorf("wrong bytes written at %d", w.pos)
		return 0, w.bad
	}
	w.pos += int64(len(p))
	return len(p), nil
}

// io.Copy from a reader takes its WriteTo: the same bytes as Read, and a
// writer's error comes back as it is, not labelled a read error.
func TestWriteTo(t *testing.T) {
	store := memstore.New()
	d := mixedData(31, 5<<20+17)
	ref := write(t, store, mustPolicy(t, "chunk=cdc:16k/64k/256k"), nil, d)
	r := newReader(t, store, dedup.ReaderConfig{})
	for _, off := range []int64{0, 1, 100 << 10, int64(len(d)) - 1, int64(len(d))} {
		rc, err := r.ReadFirst(context.Background(), ref, off, -1, 64<<10, func(err error) error { return fmt.Errorf("labelled: %w", err) })
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		n, err := io.Copy(&buf, rc)
		if err != nil || n != int64(len(d))-off || !bytes.Equal(buf.Bytes(), d[off:]) {
			t.Fatalf("from %d: %d bytes, %v; equal %v", off, n, err, bytes.Equal(buf.Bytes(), d[off:]))
		}
		_ = rc.Close()
	}
	for _, stop := range []int64{10, 64 << 10, 3 << 20} {
		rc, err := r.ReadFirst(context.Background(), ref, 0, -1, 64<<10, func(err error) error { return fmt.Errorf("labelled: %w", err) })
		if err != nil {
			t.Fatal(err)
		}
		cw := &checkWriter{want: d, stop: stop}
		_, err = io.Copy(cw, rc)
		if err != errStopWriting || cw.bad != nil {
			t.Fatalf("writer stopping at %d: %v (%v), want the writer's own error", stop, err, cw.bad)
		}
		_ = rc.Close()
	}
}
