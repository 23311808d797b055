package dedupe2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"shoal/e2e/framework"
	"shoal/proto/dedupb"
	"shoal/services/s3"
	"shoal/services/s3/cluster"
	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
	"shoal/shared/rpc"
)

// Small reads through the S3 tier's data store travel in ReadBatch calls
// over real gRPC: many concurrent reads of small objects (whole, ranged,
// empty, encrypted, in two volumes) each get their own bytes, a missing
// object fails alone without failing its batch-mates, and reads above the
// batch limit still stream.
func TestReadBatch(t *testing.T) {
	_, d := start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	data, get := s3Data(t, ctx, d)

	type object struct {
		ref  []byte
		body []byte
	}
	var objs []object
	for i := range 48 {
		vol, pol := "small-a", ""
		if i%3 == 0 {
			vol, pol = "small-b", "encrypt=on"
		}
		body := randBytes(byte(i), 1+i*997%(60<<10))
		ref, size, err := data.Write(ctx, vol, pol, bytes.NewReader(body))
		if err != nil || size != int64(len(body)) {
			t.Fatalf("write %d: %d bytes, %v", i, size, err)
		}
		objs = append(objs, object{ref, body})
	}

	before := data.BatchedReads.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 3*len(objs))
	for i, o := range objs {
		wg.Add(3)
		go func() { // whole
			defer wg.Done()
			got, err := get(o.ref, 0, int64(len(o.body)))
			if err != nil || !bytes.Equal(got, o.body) {
				errs <- fmt.Errorf("object %d: %d bytes, %v", i, len(got), err)
			}
		}()
		go func() { // a range inside it
			defer wg.Done()
			off := int64(len(o.body) / 3)
			n := int64(len(o.body)) - off - int64(len(o.body)/4)
			got, err := get(o.ref, off, n)
			if err != nil || !bytes.Equal(got, o.body[off:off+n]) {
				errs <- fmt.Errorf("object %d range %d+%d: %d bytes, %v", i, off, n, len(got), err)
			}
		}()
		go func() { // nothing, at its end
			defer wg.Done()
			got, err := get(o.ref, int64(len(o.body)), 0)
			if err != nil || len(got) != 0 {
				errs <- fmt.Errorf("object %d empty read at its end: %d bytes, %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := data.BatchedReads.Load() - before; n != int64(3*len(objs)) {
		t.Fatalf("%d of %d small reads went through ReadBatch", n, 3*len(objs))
	}
	t.Logf("%d small reads in %d batches", 3*len(objs), data.Batches.Load())

	// A reference to a manifest that is not stored fails on its own.
	missingRef := missingManifest(t, objs[1].ref)
	var mu sync.Mutex
	var good, bad int
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%4 == 0 {
				_, err := get(missingRef, 0, 10)
				if !errors.Is(err, s3.ErrNotFound) {
					t.Errorf("missing manifest: %v, want not found", err)
				}
				mu.Lock()
				bad++
				mu.Unlock()
				return
			}
			o := objs[i]
			if got, err := get(o.ref, 0, int64(len(o.body))); err != nil || !bytes.Equal(got, o.body) {
				t.Errorf("object %d beside a missing one: %v", i, err)
			}
			mu.Lock()
			good++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if good != 12 || bad != 4 {
		t.Fatalf("good %d bad %d", good, bad)
	}

	// Above the batch limit the read streams.
	big := randBytes(99, 200<<10)
	bigRef, _, err := data.Write(ctx, "small-a", "", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	batched := data.BatchedReads.Load()
	if got, err := get(bigRef, 0, int64(len(big))); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("200 KiB read: %d bytes, %v", len(got), err)
	}
	if data.BatchedReads.Load() != batched {
		t.Fatal("a 200 KiB read went through ReadBatch")
	}

	// The tier's own limits, straight through gRPC.
	conn, err := rpc.Dial(d.Service.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := dedupb.NewDedupClient(conn)
	vol, inner := objs[1].ref[2:2+int(objs[1].ref[1])], objs[1].ref[2+int(objs[1].ref[1]):]
	tooMany := &dedupb.ReadBatchRequest{}
	for range 257 {
		tooMany.Reads = append(tooMany.Reads, &dedupb.ReadRequest{Ref: inner, Volume: string(vol), Length: 1})
	}
	if _, err := c.ReadBatch(ctx, tooMany); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("257 reads in a batch: %v, want InvalidArgument", err)
	}
	tooBig := &dedupb.ReadBatchRequest{}
	for range 65 {
		tooBig.Reads = append(tooBig.Reads, &dedupb.ReadRequest{Ref: inner, Volume: string(vol), Length: 256 << 10})
	}
	if _, err := c.ReadBatch(ctx, tooBig); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("65 reads of 256 KiB in a batch: %v, want InvalidArgument", err)
	}
	resp, err := c.ReadBatch(ctx, &dedupb.ReadBatchRequest{Reads: []*dedupb.ReadRequest{
		{Ref: inner, Volume: string(vol), Length: -1},
		{Ref: inner, Volume: string(vol), Length: 256<<10 + 1},
		{Ref: []byte("garbage"), Volume: string(vol), Length: 1},
		{Ref: inner, Volume: string(vol), Length: 5},
	}})
	if err != nil || len(resp.Results) != 4 {
		t.Fatalf("batch with bad items: %v", err)
	}
	for i, r := range resp.Results[:3] {
		if codes.Code(r.Code) != codes.InvalidArgument || r.Message == "" {
			t.Errorf("bad item %d: code %d %q, want InvalidArgument", i, r.Code, r.Message)
		}
	}
	if r := resp.Results[3]; r.Code != 0 || !bytes.Equal(r.Data, objs[1].body[:5]) {
		t.Fatalf("good item beside bad ones: code %d %q, %d bytes", r.Code, r.Message, len(r.Data))
	}
}

// s3Data is the S3 tier's data store on d, over real gRPC, and a reader
// of whole ranges through it.
func s3Data(t *testing.T, ctx context.Context, d *framework.Dedup) (*cluster.Data, func(ref []byte, off, n int64) ([]byte, error)) {
	conn, err := rpc.Dial(d.Service.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	data := cluster.NewData(conn)
	return data, func(ref []byte, off, n int64) ([]byte, error) {
		rc, err := data.Read(ctx, ref, off, n)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
}

// missingManifest is ref (a Data reference) naming a manifest that is not
// stored.
func missingManifest(t *testing.T, ref []byte) []byte {
	vol, inner := ref[2:2+int(ref[1])], ref[2+int(ref[1]):]
	mref, err := manifest.ParseRef(inner)
	if err != nil {
		t.Fatal(err)
	}
	mref.Inline, mref.Root = "", block.Sum([]byte("no such manifest"))
	missing, _ := mref.MarshalBinary()
	return append(append([]byte{1, byte(len(vol))}, vol...), missing...)
}
