package s3_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	mcreds "github.com/minio/minio-go/v7/pkg/credentials"

	"shoal/services/s3"
	"shoal/services/s3/s3test"
)

func TestMinioClient(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil, nil)
	for _, trailers := range []bool{false, true} {
		t.Run(fmt.Sprintf("trailers=%v", trailers), func(t *testing.T) {
			c, err := minio.New(e.host, &minio.Options{Creds: mcreds.NewStaticV4(e.id, e.secret, ""),
				Region: "us-east-1", TrailingHeaders: trailers})
			if err != nil {
				t.Fatal(err)
			}
			bkt := fmt.Sprintf("mc-%v", trailers)
			if err := c.MakeBucket(ctx, bkt, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
				t.Fatal(err)
			}
			// Small object: streaming signature (chunked, signed trailer when trailers=true).
			small := fill(200_000, 9)
			opts := minio.PutObjectOptions{ContentType: "x/y", UserMetadata: map[string]string{"k": "v"}}
			if trailers {
				opts.Checksum = minio.ChecksumCRC32C
			}
			if _, err := c.PutObject(ctx, bkt, "small", bytes.NewReader(small), int64(len(small)), opts); err != nil {
				t.Fatal(err)
			}
			// Large object: minio-go switches to multipart.
			large := fill(11<<20, 5)
			info, err := c.PutObject(ctx, bkt, "dir/large", bytes.NewReader(large), int64(len(large)),
				minio.PutObjectOptions{PartSize: 5 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(info.ETag, "-3") {
				t.Fatalf("multipart etag %q", info.ETag)
			}
			for name, want := range map[string][]byte{"small": small, "dir/large": large} {
				o, err := c.GetObject(ctx, bkt, name, minio.GetObjectOptions{})
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(o)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s: %v, %d bytes", name, err, len(got))
				}
			}
			st, err := c.StatObject(ctx, bkt, "small", minio.StatObjectOptions{})
			if err != nil || st.ContentType != "x/y" || st.UserMetadata["K"] != "v" {
				t.Fatalf("stat: %v %+v", err, st)
			}
			// Ranged read.
			gopts := minio.GetObjectOptions{}
			_ = gopts.SetRange(5<<20-2, 5<<20+1)
			o, err := c.GetObject(ctx, bkt, "dir/large", gopts)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(o)
			if !bytes.Equal(got, large[5<<20-2:5<<20+2]) {
				t.Fatalf("range: %v", got)
			}
			// Server-side copy and listing.
			if _, err := c.CopyObject(ctx, minio.CopyDestOptions{Bucket: bkt, Object: "copy"},
				minio.CopySrcOptions{Bucket: bkt, Object: "dir/large"}); err != nil {
				t.Fatal(err)
			}
			var names []string
			for o := range c.ListObjects(ctx, bkt, minio.ListObjectsOptions{Recursive: true}) {
				if o.Err != nil {
					t.Fatal(o.Err)
				}
				names = append(names, o.Key)
			}
			if strings.Join(names, ",") != "copy,dir/large,small" {
				t.Fatalf("list: %v", names)
			}
			var top []string
			for o := range c.ListObjects(ctx, bkt, minio.ListObjectsOptions{UseV1: true}) {
				top = append(top, o.Key)
			}
			sort.Strings(top) // minio-go yields a page's prefixes after its objects
			if strings.Join(top, ",") != "copy,dir/,small" {
				t.Fatalf("list v1: %v", top)
			}
			// Presigned GET through minio-go.
			u, err := c.PresignedGetObject(ctx, bkt, "small", time.Minute, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.Get(u.String())
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(body, small) {
				t.Fatalf("presigned get: %d", resp.StatusCode)
			}
			// Batch delete.
			ch := make(chan minio.ObjectInfo, 3)
			for _, n := range names {
				ch <- minio.ObjectInfo{Key: n}
			}
			close(ch)
			for err := range c.RemoveObjects(ctx, bkt, ch, minio.RemoveObjectsOptions{}) {
				t.Fatal(err.Err)
			}
			if err := c.RemoveBucket(ctx, bkt); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Two servers share one MetaStore and write 10,000 objects into one bucket
// concurrently, splitting the index shards under each other: the listing
// must show exactly the 10,000 keys.
func TestTwoServersConcurrentPuts(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 2000
	}
	meta, data := s3test.NewMeta(), s3test.NewData()
	small := func(c *s3.Config) { c.ShardSplitBytes = 4 << 10 }
	a := newEnv(t, meta, data, small)
	b := newEnv(t, meta, data, small)
	b.id, b.secret = a.id, a.secret // keys are shared through the MetaStore
	mustCreateBucket(t, a, "shared", nil)
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for w := 0; w < workers; w++ {
		e := a
		if w%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 2}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			for i := w; i < n; i += workers {
				key := fmt.Sprintf("obj/%03d/%06d", i%97, i)
				req := e.signed("PUT", "/shared/"+key, []byte(key), nil, "UNSIGNED-PAYLOAD", time.Time{})
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Sprintf("put %s: %d", key, resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Fatal(msg)
	}
	// List through the other server, 1000 at a time.
	c := b.sdk()
	var seen []string
	seen = append(seen, minioLessPager(t, c)...)
	if len(seen) != n {
		t.Fatalf("listed %d keys, want %d", len(seen), n)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i-1] >= seen[i] {
			t.Fatalf("not strictly ordered at %d: %q %q", i, seen[i-1], seen[i])
		}
	}
	if max := meta.MaxSize.Load(); max > 64<<10 {
		t.Fatalf("a metadata block grew to %d bytes", max)
	}
	t.Logf("meta conflicts retried: %d, blocks: %d", meta.Conflicts.Load(), meta.Blocks())
}
