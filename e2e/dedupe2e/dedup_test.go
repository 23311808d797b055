// Package dedupe2e runs the dedup tier as a gRPC service on in-process
// clusters (embedded NATS, real gRPC, real silos) and checks it end to end
// through its Go client: round trips, deduplication measured on the nodes,
// erasure coding with nodes down and shards corrupted on disk, encryption
// at rest, space reclamation (including a write racing the collector), and
// hostile references.
package dedupe2e

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/e2e/framework"
	bpb "shoal/proto/blockstorepb"
	"shoal/services/dedup"
	"shoal/services/dedup/client"
	"shoal/shared/block"
	sdedup "shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
	"shoal/shared/dht"
)

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// stream yields n pseudo-random bytes (AES-CTR keystream, so generating
// 256 MiB costs little even under -race); equal seeds give equal bytes.
func stream(seed byte, n int64) io.Reader {
	key := bytes.Repeat([]byte{seed}, 16)
	b, _ := aes.NewCipher(key)
	return io.LimitReader(cipher.StreamReader{S: cipher.NewCTR(b, make([]byte, 16)), R: zeros{}}, n)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func randBytes(seed byte, n int) []byte {
	b, _ := io.ReadAll(stream(seed, int64(n)))
	return b
}

func start(t *testing.T, nodes int) (*framework.Cluster, *framework.Dedup) {
	c := framework.Start(t, framework.Options{Nodes: nodes, MaxBlockSize: block.MaxSealed})
	return c, c.StartDedup(dedup.Config{})
}

func write(t *testing.T, ctx context.Context, cl *client.Client, pol, vol string, data []byte) []byte {
	t.Helper()
	ref, size, etag, err := cl.Write(ctx, pol, vol, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("write %q: %v", pol, err)
	}
	p, err := policy.Parse(pol)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := sdedup.Digest(p.Chunking, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(data)) || etag != hex.EncodeToString(sum[:]) {
		t.Fatalf("write %q: size %d etag %s, want %d %x", pol, size, etag, len(data), sum)
	}
	return ref
}

func read(t *testing.T, ctx context.Context, cl *client.Client, ref []byte, vol string, off, n int64) []byte {
	t.Helper()
	rc, err := cl.Read(ctx, ref, vol, off, n)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func TestRoundTripPolicies(t *testing.T) {
	_, d := start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	// Random bytes with a compressible run in the middle.
	data := append(randBytes(1, 3<<20), make([]byte, 1<<20)...)
	data = append(data, randBytes(2, 2<<20+12345)...)
	for _, tc := range []struct{ policy, volume string }{
		{"", ""},
		{"chunk=fixed:4m,compress=none", ""},
		{"chunk=fixed:64k,compress=zstd:1,encrypt=on", "vol-a"},
		{"chunk=cdc:4k/16k/64k,redundancy=rep:2/1", ""},
		{"chunk=fixed:256k,compress=none,redundancy=ec:2+1", ""},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			ref := write(t, ctx, d.Client, tc.policy, tc.volume, data)
			if got := read(t, ctx, d.Client, ref, tc.volume, 0, -1); !bytes.Equal(got, data) {
				t.Fatalf("whole read differs (%d bytes)", len(got))
			}
			for _, r := range [][2]int64{{0, 1}, {4<<20 - 7, 100}, {int64(len(data)) - 10, 10}, {5 << 20, 1 << 20}, {int64(len(data)), 5}} {
				want := data[r[0]:min(r[0]+r[1], int64(len(data)))]
				if got := read(t, ctx, d.Client, ref, tc.volume, r[0], r[1]); !bytes.Equal(got, want) {
					t.Fatalf("range %v: got %d bytes, want %d", r, len(got), len(want))
				}
			}
			st, err := d.Client.Stat(ctx, ref, tc.volume)
			if err != nil || st.Size != int64(len(data)) || st.Chunks == 0 {
				t.Fatalf("stat: %+v %v", st, err)
			}
			if strings.Contains(tc.policy, "zstd") && st.CompressionRatio() <= 1.05 {
				t.Fatalf("zstd did not compress the zero run: %+v", st)
			}
		})
	}
	// An empty stream is a valid stream.
	ref := write(t, ctx, d.Client, "", "", nil)
	if got := read(t, ctx, d.Client, ref, "", 0, -1); len(got) != 0 {
		t.Fatalf("empty stream read %d bytes", len(got))
	}
}

// TestDedupSameDataTwice writes the same 256 MiB twice and checks, on the
// storage nodes themselves, that the second copy costs (almost) nothing. It
// writes one replica (rep:1/1, a policy's own R/W) to keep the test's disk
// traffic at 256 MiB; replication is covered elsewhere.
func TestDedupSameDataTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB")
	}
	c, d := start(t, 3)
	ctx := ctxT(t, 4*time.Minute)
	const size = 256 << 20
	pol := "chunk=cdc:256k/1m/4m,compress=none,redundancy=rep:1/1"
	p0 := c.PhysicalBytes()
	ref1, n1, _, err := d.Client.Write(ctx, pol, "", stream(7, size))
	if err != nil || n1 != size {
		t.Fatal(n1, err)
	}
	framework.Eventually(t, 30*time.Second, "one copy on the nodes", func() bool { return c.PhysicalBytes()-p0 >= size })
	p1 := c.PhysicalBytes()
	ref2, n2, _, err := d.Client.Write(ctx, pol, "", stream(7, size))
	if err != nil || n2 != size {
		t.Fatal(n2, err)
	}
	p2 := c.PhysicalBytes()
	first, second := p1-p0, p2-p1
	t.Logf("first write stored %d bytes on the nodes (%.2f× logical), second %d", first, float64(first)/size, second)
	if !bytes.Equal(ref1, ref2) {
		t.Fatal("same data and policy gave different references")
	}
	if first < size || first > size*101/100 {
		t.Fatalf("first write stored %d bytes, want ~1× %d (R=1)", first, size)
	}
	if second > size/100 {
		t.Fatalf("second write of the same data stored %d more bytes", second)
	}
	u, err := d.Client.Usage(ctx)
	if err != nil || u.Logical != 2*size {
		t.Fatalf("usage %+v %v: want logical %d (two uses)", u, err, 2*size)
	}
}

// TestErasureCoding: 4+2 on six nodes reads with any two nodes stopped, and a
// shard corrupted on disk is detected and rebuilt.
func TestErasureCoding(t *testing.T) {
	c, d := start(t, 6)
	ctx := ctxT(t, 2*time.Minute)
	data := randBytes(3, 3<<20+777)
	ref := write(t, ctx, d.Client, "chunk=fixed:256k,compress=none,redundancy=ec:4+2", "", data)
	for _, pair := range [][2]int{{0, 1}, {2, 5}, {3, 4}} {
		c.StopNode(pair[0])
		c.StopNode(pair[1])
		if got := read(t, ctx, d.Client, ref, "", 0, -1); !bytes.Equal(got, data) {
			t.Fatalf("with nodes %v stopped: read differs", pair)
		}
		c.StartNode(pair[0])
		c.StartNode(pair[1])
		// The tier's connections to the restarted nodes recover from their
		// dial backoff: wait until every node answers it again.
		framework.Eventually(t, 30*time.Second, "all six nodes reachable again", func() bool {
			return reachable(ctx, d) == 6
		})
	}
	// Shard 0 of the first stripe starts with the stream's first bytes
	// (no compression, no encryption): find it on disk and flip a byte.
	shard := data[:64<<10]
	idx := -1
	for i := range c.Nodes {
		segs, _ := filepath.Glob(filepath.Join(c.NodeDir(i), "silo", "segments", "*.seg"))
		for _, p := range segs {
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if off := bytes.Index(raw, shard[:4096]); off >= 0 {
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt([]byte{^raw[off+5000]}, int64(off+5000)); err != nil {
					t.Fatal(err)
				}
				f.Close()
				idx = i
			}
		}
	}
	if idx < 0 {
		t.Fatal("shard not found on any node")
	}
	before := d.Service.Damage.Load()
	if got := read(t, ctx, d.Client, ref, "", 0, 256<<10); !bytes.Equal(got, data[:256<<10]) {
		t.Fatal("read over a corrupt shard differs")
	}
	if d.Service.Damage.Load() == before {
		t.Fatal("corrupt shard not detected")
	}
	framework.Eventually(t, 10*time.Second, "corrupt shard rebuilt on its node", func() bool {
		got, _, err := c.Nodes[idx].Silo().Get(block.Sum(shard))
		return err == nil && bytes.Equal(got, shard)
	})
}

// reachable counts the nodes in the tier's view that answer through the
// tier's own connections.
func reachable(ctx context.Context, d *framework.Dedup) int {
	n := 0
	for _, node := range d.DHT.View().Nodes {
		bs, err := d.DHT.NodeClient(node)
		if err != nil {
			continue
		}
		if _, err := bs.NodeStats(ctx, &bpb.NodeStatsRequest{}); err == nil {
			n++
		}
	}
	return n
}

// TestEncryptionAtRest: nothing on the nodes' disks contains the plaintext of
// an encrypted stream; the same bytes written unencrypted are found (so the
// scan itself works).
func TestEncryptionAtRest(t *testing.T) {
	c, d := start(t, 3)
	ctx := ctxT(t, time.Minute)
	var b bytes.Buffer
	for i := 0; b.Len() < 1<<20; i++ {
		b.WriteString("SHOAL-PLAINTEXT-MARKER-" + strings.Repeat("x", i%97) + "\n")
	}
	data := b.Bytes()
	marker := []byte("SHOAL-PLAINTEXT-MARKER-xxxxxxxxxx")
	scan := func() bool {
		found := false
		_ = filepath.Walk(c.Dir(), func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() || found {
				return nil
			}
			raw, err := os.ReadFile(p)
			if err == nil && bytes.Contains(raw, marker) {
				found = true
			}
			return nil
		})
		return found
	}
	for _, pol := range []string{"chunk=fixed:64k,compress=none,encrypt=on", "compress=none,encrypt=on", "encrypt=on,redundancy=ec:2+1"} {
		ref := write(t, ctx, d.Client, pol, "secret-vol", data)
		if got := read(t, ctx, d.Client, ref, "secret-vol", 0, -1); !bytes.Equal(got, data) {
			t.Fatal("encrypted round trip differs")
		}
		// Another volume's key does not open it.
		if _, err := d.Client.Stat(ctx, ref, "other-vol"); !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("read under the wrong volume: %v", err)
		}
	}
	if scan() {
		t.Fatal("plaintext found on disk after encrypted writes")
	}
	write(t, ctx, d.Client, "chunk=fixed:64k,compress=none", "", data)
	framework.Eventually(t, 10*time.Second, "unencrypted plaintext visible on disk (control)", scan)
}

// TestReclaim: released streams' blocks go away, retained ones stay, and
// use counts pair Retain with Release.
func TestReclaim(t *testing.T) {
	c, d := start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	p0, disk0 := c.PhysicalBytes(), diskBytes(c)
	keepData := randBytes(4, 1<<20)
	keep := write(t, ctx, d.Client, "chunk=fixed:64k", "", keepData)
	a := randBytes(5, 3<<20)
	refA := write(t, ctx, d.Client, "chunk=fixed:64k", "", a)
	encB := randBytes(6, 1<<20)
	refB := write(t, ctx, d.Client, "encrypt=on,redundancy=ec:2+1", "vb", encB)
	framework.Eventually(t, 10*time.Second, "A and B on the nodes", func() bool {
		return c.PhysicalBytes()-p0 > 3*int64(len(keepData)+len(a))
	})
	// A second use of A: one release is not enough to free it.
	if err := d.Client.Retain(ctx, refA, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.Client.Release(ctx, refA, ""); err != nil {
		t.Fatal(err)
	}
	res, err := d.Client.Collect(ctx, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, ctx, d.Client, refA, "", 0, -1); !bytes.Equal(got, a) {
		t.Fatalf("A lost while still retained once (collect %+v)", res)
	}
	if got := read(t, ctx, d.Client, refB, "vb", 0, -1); !bytes.Equal(got, encB) {
		t.Fatal("encrypted B lost while retained")
	}
	for _, r := range []struct {
		ref []byte
		vol string
	}{{refA, ""}, {refB, "vb"}} {
		if err := d.Client.Release(ctx, r.ref, r.vol); err != nil {
			t.Fatal(err)
		}
	}
	// Releasing again is harmless.
	if err := d.Client.Release(ctx, refA, ""); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "A and B reclaimed", func() bool {
		if _, err := d.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		_, errA := d.Client.Read(ctx, refA, "", 0, -1)
		// The tier caches manifest nodes (immutable), so B's absence is
		// checked on the nodes: its root has no copy left.
		rb, _ := manifest.ParseRef(refB)
		holders, err := d.DHT.Holders(ctx, rb.Root)
		if err != nil {
			t.Fatal(err)
		}
		for _, ok := range holders {
			if ok {
				return false
			}
		}
		return errors.Is(errA, client.ErrNotFound) && c.PhysicalBytes()-p0 < 3*int64(len(keepData)+len(a))
	})
	if got := read(t, ctx, d.Client, keep, "", 0, -1); !bytes.Equal(got, keepData) {
		t.Fatal("retained stream lost by collection")
	}
	if err := d.Client.Release(ctx, keep, ""); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "physical bytes back to the empty baseline", func() bool {
		if _, err := d.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		return c.PhysicalBytes() == p0
	})
	// And the disk: the nodes' segment files shrink back once compacted
	// (the nodes do it on their own every minute); df reports them.
	full := diskBytes(c)
	if u, err := d.Client.Usage(ctx); err != nil || u.Segments != full {
		t.Fatalf("df: %+v %v, want %d segment bytes", u, err, full)
	}
	for _, n := range c.Nodes {
		if _, err := n.Silo().Compact(0.5); err != nil {
			t.Fatal(err)
		}
	}
	after := diskBytes(c)
	if full < disk0+3*int64(len(a)) || after > disk0+64<<10 {
		t.Fatalf("segment files hold %d bytes after compaction (%d before it, %d at the start)", after, full, disk0)
	}
	if u, err := d.Client.Usage(ctx); err != nil || u.Segments != after {
		t.Fatalf("df after compaction: %+v %v, want %d segment bytes", u, err, after)
	}
	t.Logf("segment bytes: %d at the start, %d with everything freed, %d after compaction", disk0, full, after)
}

// diskBytes is the bytes of the running nodes' segment files.
func diskBytes(c *framework.Cluster) int64 {
	var n int64
	for _, node := range c.Nodes {
		if node != nil {
			n += node.Silo().DiskBytes()
		}
	}
	return n
}

// TestWriteRacingCollector: writes that deduplicate against the blocks of a
// released (garbage, and old enough to sweep) stream run while collections
// run; every written stream must read back whole afterwards.
func TestWriteRacingCollector(t *testing.T) {
	_, d := start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	const grace = 2 * time.Second
	pol := "chunk=fixed:64k,compress=none"
	base := randBytes(8, 2<<20)
	ref0 := write(t, ctx, d.Client, pol, "", base)
	if err := d.Client.Release(ctx, ref0, ""); err != nil {
		t.Fatal(err)
	}
	// Wait until the garbage is old enough for a collection to sweep it.
	framework.Eventually(t, 30*time.Second, "released blocks older than the grace period", func() bool {
		res, err := d.Client.Collect(ctx, grace, true)
		if err != nil {
			t.Fatal(err)
		}
		return res.Swept >= 3*int64(len(base)/(64<<10))
	})
	type out struct {
		ref  []byte
		data []byte
	}
	var (
		mu      sync.Mutex
		written []out
		wg      sync.WaitGroup
		done    = make(chan struct{})
		swept   int64
		cycles  int
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 8 {
			data := append(append([]byte(nil), base...), randBytes(byte(20+i), 64<<10)...)
			ref, _, _, err := d.Client.Write(ctx, pol, "", bytes.NewReader(data))
			if err != nil {
				t.Error(err)
				break
			}
			mu.Lock()
			written = append(written, out{ref, data})
			mu.Unlock()
		}
		close(done)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			res, err := d.Client.Collect(ctx, grace, false)
			if err != nil {
				t.Error(err)
				return
			}
			swept += res.Swept
			cycles++
			select {
			case <-done:
				if cycles >= 2 {
					return
				}
			default:
			}
		}
	}()
	wg.Wait()
	t.Logf("%d collections swept %d blocks during %d writes", cycles, swept, len(written))
	if _, err := d.Client.Collect(ctx, 0, false); err != nil {
		t.Fatal(err)
	}
	for i, w := range written {
		if got := read(t, ctx, d.Client, w.ref, "", 0, -1); !bytes.Equal(got, w.data) {
			t.Fatalf("stream %d written during collections lost data", i)
		}
	}
}

// TestBadReferences: hostile input is refused with InvalidArgument (or
// NotFound for a well-formed reference to nothing), and the server keeps
// serving.
func TestBadReferences(t *testing.T) {
	_, d := start(t, 3)
	ctx := ctxT(t, time.Minute)
	data := randBytes(9, 300<<10)
	good := write(t, ctx, d.Client, "", "", data)
	ref, err := manifest.ParseRef(good)
	if err != nil {
		t.Fatal(err)
	}
	forgedSize := ref
	forgedSize.Size++
	fs, _ := forgedSize.MarshalBinary()
	nowhere := ref
	nowhere.Inline = "" // a small stream's root travels inline; name a stored one
	nowhere.Root = block.Sum([]byte("no such manifest"))
	nw, _ := nowhere.MarshalBinary()
	versioned := append([]byte{9}, good[1:]...)
	invalid := map[string][]byte{
		"empty":       nil,
		"truncated":   good[:len(good)-3],
		"one byte":    good[:1],
		"trailing":    append(append([]byte(nil), good...), 0),
		"garbage":     bytes.Repeat([]byte{0xff}, 80),
		"version":     versioned,
		"forged size": fs,
	}
	isInvalid := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, client.ErrInvalid) || status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s: got %v, want InvalidArgument", what, err)
		}
	}
	for name, b := range invalid {
		_, err := d.Client.Read(ctx, b, "", 0, -1)
		isInvalid("read "+name, err)
		_, err = d.Client.Stat(ctx, b, "")
		isInvalid("stat "+name, err)
		isInvalid("retain "+name, d.Client.Retain(ctx, b, ""))
		// Release only parses: a well-formed reference that is not in the
		// root set is released as a no-op.
		if err := d.Client.Release(ctx, b, ""); name != "forged size" {
			isInvalid("release "+name, err)
		} else if err != nil {
			t.Fatalf("release of an unknown reference: %v", err)
		}
	}
	if _, err := d.Client.Read(ctx, nw, "", 0, -1); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("reference to a missing root: %v", err)
	}
	if err := d.Client.Retain(ctx, nw, ""); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("retain of a missing root: %v", err)
	}
	if _, err := d.Client.Read(ctx, good, "", int64(len(data))+1, 1); !errors.Is(err, client.ErrRange) {
		t.Fatalf("read past the end: %v", err)
	}
	for _, pol := range []string{"bogus", "chunk=fixed:1", "redundancy=ec:0+0", "encrypt=on"} {
		_, _, _, err := d.Client.Write(ctx, pol, "", bytes.NewReader(data))
		isInvalid("write policy "+pol, err)
	}
	if _, err := d.Client.Collect(ctx, -time.Second, true); err == nil {
		t.Fatal("negative grace accepted")
	}
	// A failing input stream aborts the write with its own error.
	boom := errors.New("client-side failure")
	_, _, _, err = d.Client.Write(ctx, "", "", io.MultiReader(bytes.NewReader(data), errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("failing reader: %v", err)
	}
	// Still serving.
	if got := read(t, ctx, d.Client, good, "", 0, -1); !bytes.Equal(got, data) {
		t.Fatal("server broken after bad input")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestCLIPutGet round-trips a file through `shoal put` and `shoal get -o`,
// into a new file, over an existing one (whose mode it keeps), and into a
// FIFO: a path that is not a regular file is written in place, not
// replaced by a renamed temporary file (which turned /dev/null into a
// plain file).
func TestCLIPutGet(t *testing.T) {
	c, d := start(t, 3)
	dir := t.TempDir()
	data := randBytes(7, 3<<20+11)
	in := filepath.Join(dir, "in")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := d.Service.Addr()
	out, stderr, code := framework.Run(t, nil, "put", "-dedup", addr, in)
	if code != 0 {
		t.Fatalf("shoal put: exit %d: %s", code, stderr)
	}
	ref := strings.TrimSpace(out)

	check := func(path string) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes, not the %d put", path, len(got), len(data))
		}
	}
	get := func(path string) {
		t.Helper()
		if _, stderr, code := framework.Run(t, nil, "get", "-dedup", addr, "-o", path, ref); code != 0 {
			t.Fatalf("shoal get -o %s: exit %d: %s", path, code, stderr)
		}
	}

	fresh := filepath.Join(dir, "fresh")
	get(fresh)
	check(fresh)

	// Read from the nodes directly, and with a placement that does not
	// answer (through the tier, as before).
	for _, place := range []string{strings.Join(c.PlacementAddrs(), ","), "127.0.0.1:1"} {
		path := filepath.Join(dir, "direct")
		if _, stderr, code := framework.Run(t, nil, "get", "-dedup", addr, "-placement", place, "-o", path, ref); code != 0 {
			t.Fatalf("shoal get -placement %s: exit %d: %s", place, code, stderr)
		}
		check(path)
	}

	old := filepath.Join(dir, "old")
	if err := os.WriteFile(old, []byte("previous contents"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(old, 0o640); err != nil {
		t.Fatal(err)
	}
	get(old)
	check(old)
	if fi, err := os.Stat(old); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("replaced file: %v, mode %v, want 0640", err, fi.Mode())
	}

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		f, err := os.Open(fifo) // blocks until the writer opens it
		if err != nil {
			got <- nil
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		got <- b
	}()
	get(fifo)
	select {
	case b := <-got:
		if !bytes.Equal(b, data) {
			t.Fatalf("fifo: read %d bytes, not the %d put", len(b), len(data))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("shoal get -o FIFO returned without writing to the FIFO")
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("fifo replaced: %v %v", err, fi.Mode())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".shoal-get-*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}

// TestReadWriteTo reads a stream through the client reader's WriteTo (what
// io.Copy uses), after a partial Read, and as a range.
func TestReadWriteTo(t *testing.T) {
	_, d := start(t, 3)
	ctx := ctxT(t, time.Minute)
	data := randBytes(9, 5<<20+3)
	ref := write(t, ctx, d.Client, "", "", data)
	for _, tc := range []struct{ off, n, first int64 }{{0, -1, 0}, {0, -1, 10}, {1<<20 + 5, 2 << 20, 7}} {
		rc, err := d.Client.Read(ctx, ref, "", tc.off, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		want := data[tc.off:]
		if tc.n >= 0 {
			want = want[:tc.n]
		}
		head := make([]byte, tc.first)
		if _, err := io.ReadFull(rc, head); err != nil {
			t.Fatal(err)
		}
		var rest bytes.Buffer
		n, err := rc.(io.WriterTo).WriteTo(&rest)
		rc.Close()
		if err != nil || n != int64(len(want))-tc.first {
			t.Fatalf("%+v: WriteTo wrote %d bytes: %v", tc, n, err)
		}
		if got := append(head, rest.Bytes()...); !bytes.Equal(got, want) {
			t.Fatalf("%+v: read differs", tc)
		}
	}
}

// shardCounter is the dht client with its shard puts counted.
type shardCounter struct {
	*dht.Client
	puts atomic.Int64
}

func (s *shardCounter) PutShard(ctx context.Context, stripe block.Address, rank int, data []byte) (block.Address, error) {
	s.puts.Add(1)
	return s.Client.PutShard(ctx, stripe, rank, data)
}

func (s *shardCounter) PutShardAt(ctx context.Context, stripe block.Address, rank int, addr block.Address, data []byte) error {
	s.puts.Add(1)
	return s.Client.PutShardAt(ctx, stripe, rank, addr, data)
}

// TestErasureCodedRewrite: on real nodes, re-writing erasure-coded data
// that is stored sends no shard (the nodes that the stripes place the
// shards on say they hold them), and a shard deleted from its node is the
// only one sent again.
func TestErasureCodedRewrite(t *testing.T) {
	c, d := start(t, 6)
	ctx := ctxT(t, 2*time.Minute)
	store := &shardCounter{Client: d.DHT}
	p, err := policy.Parse("chunk=fixed:256k,redundancy=ec:4+2")
	if err != nil {
		t.Fatal(err)
	}
	w, err := sdedup.NewWriter(store, sdedup.WriterConfig{Policy: p, Sealed: sdedup.NewSealCache(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(11, 2<<20)
	ref, err := w.Write(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	first := store.puts.Load()
	if first != 8*6 {
		t.Fatalf("first write sent %d shards, want 8 chunks × 6", first)
	}
	again, err := w.Write(ctx, bytes.NewReader(data))
	if err != nil || again != ref {
		t.Fatalf("re-write: %v (same reference: %v)", err, again == ref)
	}
	if n := store.puts.Load() - first; n != 0 {
		t.Fatalf("re-write of stored data sent %d shards", n)
	}

	// Delete one shard of the first chunk from whichever node holds it.
	r, err := sdedup.NewReader(store, sdedup.ReaderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// A shard is the one block of the stream held by exactly one node.
	var victim block.Address
	if err := r.Mark(ctx, []manifest.Ref{ref}, func(a block.Address) bool {
		holders := 0
		for i := range c.Nodes {
			if _, _, err := c.Nodes[i].Silo().Get(a); err == nil {
				holders++
			}
		}
		if holders == 1 && victim == (block.Address{}) {
			victim = a
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if victim == (block.Address{}) {
		t.Fatal("no shard found on the nodes")
	}
	deleted := 0
	for i := range c.Nodes {
		if ok, err := c.Nodes[i].Silo().Delete(victim); err != nil {
			t.Fatal(err)
		} else if ok {
			deleted++
		}
	}
	if deleted != 1 {
		t.Fatalf("block %s was on %d nodes, want one shard copy", victim, deleted)
	}
	before := store.puts.Load()
	if _, err := w.Write(ctx, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if n := store.puts.Load() - before; n != 1 {
		t.Fatalf("re-write after losing one shard sent %d shards, want 1", n)
	}
	bin, _ := ref.MarshalBinary()
	if got := read(t, ctx, d.Client, bin, "", 0, -1); !bytes.Equal(got, data) {
		t.Fatal("read differs")
	}
}

// TestLegacyRootShards: a root recorded by the first root-set format (256
// shards, "shoal/dedup/roots/%03d", written here byte for byte as that
// format did) keeps its data through collections and in df, and a
// Release through today's tier frees it.
func TestLegacyRootShards(t *testing.T) {
	c, d := start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	p0 := c.PhysicalBytes()
	data := randBytes(12, 2<<20)
	ref := write(t, ctx, d.Client, "chunk=fixed:64k", "", data)
	// Take the root out of today's shards, then record it, with one use,
	// in its legacy shard: as a cluster written before the change.
	if err := d.Client.Release(ctx, ref, ""); err != nil {
		t.Fatal(err)
	}
	hexKey, err := os.ReadFile(filepath.Join(c.Dir(), "dedup", "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	master, err := hex.DecodeString(strings.TrimSpace(string(hexKey)))
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, master)
	mac.Write([]byte("shoal/dedup/root-set signing key"))
	sign := ed25519.NewKeyFromSeed(mac.Sum(nil))
	key := append([]byte{0}, ref...) // uvarint len("") then the reference
	entry := []byte{1, 1}            // format 1, one entry
	entry = binary.AppendUvarint(entry, uint64(len(key)))
	entry = append(entry, key...)
	entry = binary.AppendUvarint(entry, 1) // one use
	h := sha256.Sum256(key)
	if err := d.DHT.CreateName(ctx, sign, fmt.Sprintf("shoal/dedup/roots/%03d", h[0]), entry); err != nil {
		t.Fatal(err)
	}

	// Collections keep it, and df counts it.
	for range 2 {
		if _, err := d.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if got := read(t, ctx, d.Client, ref, "", 0, -1); !bytes.Equal(got, data) {
		t.Fatal("data of a legacy root lost by a collection")
	}
	if u, err := d.Client.Usage(ctx); err != nil || u.Logical != int64(len(data)) {
		t.Fatalf("df: %+v, %v; want %d logical bytes", u, err, len(data))
	}

	// Released through today's tier, it goes.
	if err := d.Client.Release(ctx, ref, ""); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "legacy root's data reclaimed", func() bool {
		if _, err := d.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		return c.PhysicalBytes()-p0 < int64(len(data))
	})
}
