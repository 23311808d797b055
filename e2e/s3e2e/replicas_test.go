package s3e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"shoal/e2e/framework"
)

// objectCount is how many objects TestReplicasConcurrentPuts writes:
// $SHOAL_S3_OBJECTS, default 10,000 (about 95 s alone on a 2-core VM).
func objectCount(t *testing.T) int {
	n := 10000
	if v := os.Getenv("SHOAL_S3_OBJECTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("SHOAL_S3_OBJECTS=%q", v)
		}
	}
	return n
}

// TestReplicasConcurrentPuts runs two more S3 servers in their own
// processes (sharing the cluster, the dedup tier and the signing key) and
// writes small objects into one bucket through both at once: the listing
// must then hold exactly every key, whichever server is asked.
func TestReplicasConcurrentPuts(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	n := objectCount(t)
	e := startAllInOne(t)
	dedup := e.proc.Field("dedup", time.Second)
	endpoints := []string{}
	for i := range 2 {
		p := framework.StartProc(t, fmt.Sprintf("s3-%d", i+1), "serve", "-target=s3", "-data="+t.TempDir(),
			"-dht.placement="+e.place, "-s3.dedup="+dedup, "-s3.addr=127.0.0.1:0",
			"-s3.key-file="+filepath.Join(e.data, "s3", "signing.key"))
		endpoints = append(endpoints, p.Field("s3", 30*time.Second))
	}
	ctx := context.Background()
	clients := []*awss3.Client{e.sdk(endpoints[0]), e.sdk(endpoints[1])}
	const bucket = "concurrent"
	if _, err := clients[0].CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	body := func(i int) []byte { return []byte(fmt.Sprintf("object %d %s", i, bytes.Repeat([]byte{'x'}, i%200))) }
	key := func(i int) string { return fmt.Sprintf("obj/%05d", i) }

	const workers = 64
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%2]
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() > 0 {
					return
				}
				if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key(i)),
					Body: bytes.NewReader(body(i))}); err != nil {
					if failed.Add(1) == 1 {
						t.Errorf("put %s: %v", key(i), err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if t.Failed() {
		return
	}
	t.Logf("%d objects through 2 replicas with %d writers in %v (%.0f puts/s)", n, workers, took.Round(time.Millisecond), float64(n)/took.Seconds())

	for r, c := range clients {
		lstart := time.Now()
		var got []string
		p := awss3.NewListObjectsV2Paginator(c, &awss3.ListObjectsV2Input{Bucket: aws.String(bucket)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range page.Contents {
				got = append(got, *o.Key)
			}
		}
		if len(got) != n {
			t.Fatalf("replica %d lists %d objects, want %d", r+1, len(got), n)
		}
		for i, k := range got {
			if k != key(i) {
				t.Fatalf("replica %d: listing[%d] = %s, want %s", r+1, i, k, key(i))
			}
		}
		t.Logf("replica %d lists all %d keys in %v", r+1, n, time.Since(lstart).Round(time.Millisecond))
	}
	// Read a sample back through the other replica.
	for i := 0; i < n; i += max(1, n/100) {
		out, err := clients[(i+1)%2].GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key(i))})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil || !bytes.Equal(b, body(i)) {
			t.Fatalf("get %s: %q, %v", key(i), b, err)
		}
	}
}
