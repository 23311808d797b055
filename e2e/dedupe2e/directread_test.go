package dedupe2e

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"shoal/services/dedup/client"
	"shoal/services/s3"
	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dht"
)

// The S3 tier's data store reading unencrypted objects from the nodes
// itself (ReadDirect), over real gRPC: every policy shape reads back
// exact, whole and in ranges, small and large; encrypted objects still
// come through the dedup tier; a missing manifest is not found; an
// erasure-coded object reads with a node stopped. (A GET with two of three
// storage processes killed answering 503 is multiprocess's
// TestS3OutageIs503, whose S3 server reads directly.)
func TestDirectReads(t *testing.T) {
	c, d := start(t, 4)
	ctx := ctxT(t, 3*time.Minute)
	data, get := s3Data(t, ctx, d)
	if err := data.ReadDirect(c.Client(dht.Config{MaxBlockSize: block.MaxSealed}), nil); err != nil {
		t.Fatal(err)
	}
	type object struct {
		name, vol, pol string
		body           []byte
		direct         bool
	}
	objs := []object{
		{"small", "b1", "", randBytes(50, 4<<10), true},
		{"empty", "b1", "", nil, true},
		{"large", "b1", "", randBytes(51, 9<<20+7), true},
		{"text", "b1", "", bytes.Repeat([]byte("compressible line of text\n"), 200000), true},
		{"ec", "b1", "redundancy=ec:2+1", randBytes(52, 5<<20+3), true},
		{"encrypted", "b2", "encrypt=on", randBytes(53, 300<<10), false},
	}
	refs := map[string][]byte{}
	for _, o := range objs {
		ref, size, err := data.Write(ctx, o.vol, o.pol, bytes.NewReader(o.body))
		if err != nil || size != int64(len(o.body)) {
			t.Fatalf("write %s: %d bytes, %v", o.name, size, err)
		}
		refs[o.name] = ref
	}
	for _, o := range objs {
		before := data.DirectReads.Load()
		got, err := get(refs[o.name], 0, int64(len(o.body)))
		if err != nil || !bytes.Equal(got, o.body) {
			t.Fatalf("%s: read %d bytes, %v", o.name, len(got), err)
		}
		if n := len(o.body); n > 10 {
			off, k := int64(n/3), int64(n/2)
			if got, err := get(refs[o.name], off, k); err != nil || !bytes.Equal(got, o.body[off:off+k]) {
				t.Fatalf("%s: range %d+%d: %d bytes, %v", o.name, off, k, len(got), err)
			}
		}
		if went := data.DirectReads.Load() - before; (went > 0) != o.direct {
			t.Fatalf("%s: %d direct reads, want direct=%v", o.name, went, o.direct)
		}
	}

	// A manifest that is not stored.
	if _, err := get(missingManifest(t, refs["large"]), 0, 10); !errors.Is(err, s3.ErrNotFound) {
		t.Fatalf("missing manifest: %v, want not found", err)
	}

	// Erasure-coded: any one of the four nodes away, still readable.
	c.StopNode(0)
	if got, err := get(refs["ec"], 0, -1); err != nil || !bytes.Equal(got, objs[4].body) {
		t.Fatalf("ec with a node stopped: %d bytes, %v", len(got), err)
	}
}

// The dedup client reading from the nodes itself (ReadDirect, what
// `shoal get`, mounts and NBD servers do): unencrypted streams read back
// exact and are counted as direct, encrypted ones come through the tier,
// a missing block is not found, and a client whose DHT cannot reach the
// nodes still reads, through the tier.
func TestClientDirectReads(t *testing.T) {
	c, d := start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	plain, enc := randBytes(60, 3<<20+5), randBytes(61, 200<<10)
	plainRef := write(t, ctx, d.Client, "", "", plain)
	encRef := write(t, ctx, d.Client, "encrypt=on", "v", enc)

	cl, err := client.Dial(d.Service.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	if err := cl.ReadDirect(c.Client(dht.Config{})); err != nil {
		t.Fatal(err)
	}
	if got := read(t, ctx, cl, plainRef, "", 0, -1); !bytes.Equal(got, plain) {
		t.Fatal("direct read: wrong bytes")
	}
	if got := read(t, ctx, cl, plainRef, "", 1<<20, 5); !bytes.Equal(got, plain[1<<20:1<<20+5]) {
		t.Fatal("direct range read: wrong bytes")
	}
	if n := cl.DirectReads(); n != 2 {
		t.Fatalf("%d direct reads, want 2", n)
	}
	if got := read(t, ctx, cl, encRef, "v", 0, -1); !bytes.Equal(got, enc) {
		t.Fatal("encrypted read: wrong bytes")
	}
	if n := cl.DirectReads(); n != 2 {
		t.Fatalf("an encrypted read went direct (%d)", n)
	}
	ref, err := manifest.ParseRef(plainRef)
	if err != nil {
		t.Fatal(err)
	}
	ref.Inline, ref.Root = "", block.Sum([]byte("no such manifest"))
	missing, _ := ref.MarshalBinary()
	if _, err := cl.Read(ctx, missing, "", 0, -1); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("missing manifest: %v, want not found", err)
	}

	// No placement answers this client's DHT: the tier serves the read.
	lost, err := client.Dial(d.Service.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lost.Close() })
	nowhere, err := dht.New(dht.Config{Placement: []string{"127.0.0.1:1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nowhere.Close() })
	if err := lost.ReadDirect(nowhere); err != nil {
		t.Fatal(err)
	}
	if got := read(t, ctx, lost, plainRef, "", 0, -1); !bytes.Equal(got, plain) {
		t.Fatal("read with the nodes unreachable: wrong bytes")
	}
	if n := lost.DirectReads(); n != 0 {
		t.Fatalf("%d reads counted direct with the nodes unreachable", n)
	}
}
