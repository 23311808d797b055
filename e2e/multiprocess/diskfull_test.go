package multiprocess

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"shoal/e2e/framework"
)

// Storage nodes whose disk fills up (no capacity set: the file system
// runs out) refuse writes as full, S3 507 XShoalStorageFull, not as a
// failure to retry; they stay up and serve what they hold; once objects are
// deleted and collected, compaction gives the space back and writes work
// again.
func TestS3DiskFullIs507(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Three nodes' index files take ~55 MiB of a fresh tmpfs: 96 MiB leave
	// room for a few objects.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a 96 MiB tmpfs for the nodes' data (needs root and mount): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() }) // after the processes stop
	c := framework.StartProcClusterIn(t, dir, 3, "-blockstore.compact-interval=1s")
	s3c, front := startS3Front(t, c)
	ctx := context.Background()
	put := func(key string, body []byte) error {
		_, err := s3c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("full"), Key: aws.String(key), Body: bytes.NewReader(body)})
		return err
	}
	if _, err := s3c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("full")}); err != nil {
		t.Fatal(err)
	}
	small := []byte("stored while there was room")
	if err := put("before", small); err != nil {
		t.Fatal(err)
	}
	var stored []string
	bodies := map[string][]byte{}
	var err error
	for i := range 40 {
		big := make([]byte, 4<<20) // random: neither compression nor dedup shrinks it
		if _, err := rand.Read(big); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("big%02d", i)
		if err = put(key, big); err != nil {
			break
		}
		stored = append(stored, key)
		bodies[key] = big
	}
	var re *smithyhttp.ResponseError
	var ae smithy.APIError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInsufficientStorage || !errors.As(err, &ae) || ae.ErrorCode() != "XShoalStorageFull" {
		t.Fatalf("after %d objects of 4 MiB on 96 MiB of disk: %v, want 507 XShoalStorageFull", len(stored), err)
	}
	if len(stored) == 0 {
		t.Fatal("the disk was full before the first object")
	}
	get := func(key string) []byte {
		t.Helper()
		o, err := s3c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("full"), Key: aws.String(key)})
		if err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		defer o.Body.Close()
		b, err := io.ReadAll(o.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		return b
	}
	// Everything acknowledged reads back while the disk is full.
	if !bytes.Equal(get("before"), small) {
		t.Fatal("the small object changed")
	}
	for _, k := range stored {
		if !bytes.Equal(get(k), bodies[k]) {
			t.Fatalf("%s changed", k)
		}
	}

	// Room comes back: delete, collect, and let the nodes compact.
	for _, k := range stored {
		if _, err := s3c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("full"), Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	after := make([]byte, 4<<20)
	if _, err := rand.Read(after); err != nil {
		t.Fatal(err)
	}
	// Collect until the deleted objects' blocks are older than the grace
	// period (on this fast disk they may all be younger than a second),
	// and PUT until compaction has given their segments' space back.
	dedupAddr := front.Field("dedup", 10*time.Second)
	framework.Eventually(t, 60*time.Second, "a PUT succeeds once the deleted objects are collected and compacted", func() bool {
		if out, stderr, code := framework.Run(t, nil, "gc", "-dedup", dedupAddr, "-grace", "1s"); code != 0 {
			t.Fatalf("shoal gc: %d %s %s", code, out, stderr)
		}
		return put("after", after) == nil
	})
	if !bytes.Equal(get("after"), after) || !bytes.Equal(get("before"), small) {
		t.Fatal("objects written around the full disk do not read back")
	}
}
