package s3e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"shoal/e2e/framework"
)

// testCLI: keys and buckets made by the shoal CLI work through S3.
func testCLI(t *testing.T, e *env) {
	common := []string{"-placement", e.place, "-data", e.data}
	out, serr, code := framework.Run(t, nil, append([]string{"s3", "key", "create", "--user", "alice"}, common...)...)
	if code != 0 {
		t.Fatalf("s3 key create: %d %s", code, serr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "AWS_ACCESS_KEY_ID=") || !strings.HasPrefix(lines[1], "AWS_SECRET_ACCESS_KEY=") {
		t.Fatalf("s3 key create output is not eval-able:\n%s", out)
	}
	alice := *e
	alice.id = strings.TrimPrefix(lines[0], "AWS_ACCESS_KEY_ID=")
	alice.secret = strings.TrimPrefix(lines[1], "AWS_SECRET_ACCESS_KEY=")

	out, serr, code = framework.Run(t, nil, append([]string{"bucket", "create", "clibucket", "--policy", "redundancy=rep:3/2,encrypt=on"}, common...)...)
	if code != 0 || strings.TrimSpace(out) != "clibucket" {
		t.Fatalf("bucket create: %d %q %s", code, out, serr)
	}
	if _, serr, code = framework.Run(t, nil, append([]string{"bucket", "create", "clibucket2", "--policy", "no such policy"}, common...)...); code != 2 {
		t.Fatalf("bucket create with a bad policy: exit %d, want 2 (%s)", code, serr)
	}
	if _, _, code = framework.Run(t, nil, append([]string{"bucket", "create", "clibucket"}, common...)...); code != 1 {
		t.Fatalf("bucket create twice: exit %d, want 1", code)
	}
	ctx := context.Background()
	c := alice.sdk("")
	if _, err := c.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String("clibucket")}); err != nil {
		t.Fatalf("head bucket with the new key: %v", err)
	}
	alice.healthy(t, "clibucket") // an encrypted bucket round trip

	out, _, code = framework.Run(t, nil, append([]string{"s3", "key", "list"}, common...)...)
	if code != 0 || !strings.Contains(out, alice.id) || !strings.Contains(out, "alice") || !strings.Contains(out, e.id) {
		t.Fatalf("s3 key list (%d):\n%s", code, out)
	}
	if _, serr, code = framework.Run(t, nil, append([]string{"s3", "key", "delete", alice.id}, common...)...); code != 0 {
		t.Fatalf("s3 key delete: %d %s", code, serr)
	}
	// The S3 server reuses the key table it read for up to its
	// meta-cache TTL (1 s); a key deleted by another process stops
	// working within it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String("clibucket")})
		if err != nil && strings.Contains(err.Error(), "403") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted key still works after 10 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
