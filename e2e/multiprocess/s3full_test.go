package multiprocess

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"shoal/e2e/framework"
)

// countingTransport counts the PUT requests an SDK sends.
type countingTransport struct{ puts atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut {
		c.puts.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// Storage nodes that are full answer a PUT with 507 XShoalStorageFull,
// which SDKs do not retry (a 503 they would, to no avail), and what was
// stored before stays readable.
func TestS3StorageFullIs507(t *testing.T) {
	c := framework.StartProcCluster(t, 3, "-blockstore.capacity=2000000")
	s3c, _ := startS3Front(t, c)
	ctx := context.Background()
	if _, err := s3c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("full")}); err != nil {
		t.Fatal(err)
	}
	small := []byte("stored while there was room")
	if _, err := s3c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("full"), Key: aws.String("before"), Body: bytes.NewReader(small)}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 8<<20) // random, so neither compression nor dedup shrinks it
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	_, err := s3c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("full"), Key: aws.String("big"), Body: bytes.NewReader(big)})
	var re *smithyhttp.ResponseError
	var ae smithy.APIError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInsufficientStorage || !errors.As(err, &ae) || ae.ErrorCode() != "XShoalStorageFull" {
		t.Fatalf("PUT of 8 MiB into 2 MB nodes: %v, want 507 XShoalStorageFull", err)
	}

	// An SDK with its default retries sends the PUT once.
	tr := &countingTransport{}
	retrying := awss3.New(s3c.Options(), func(o *awss3.Options) {
		o.RetryMaxAttempts = 3
		o.HTTPClient = &http.Client{Transport: tr}
	})
	if _, err := retrying.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("full"), Key: aws.String("big2"), Body: bytes.NewReader(big)}); !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInsufficientStorage {
		t.Fatalf("second PUT: %v", err)
	}
	if n := tr.puts.Load(); n != 1 {
		t.Fatalf("the SDK sent the refused PUT %d times", n)
	}

	// The server stays healthy: the object stored before reads back, and
	// the refused ones are not listed.
	o, err := s3c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("full"), Key: aws.String("before")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o.Body)
	o.Body.Close()
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("GET after the refusal: %q %v", got, err)
	}
	l, err := s3c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("full")})
	if err != nil || len(l.Contents) != 1 || aws.ToString(l.Contents[0].Key) != "before" {
		t.Fatalf("listing after the refusals: %v %+v", err, l)
	}
}
