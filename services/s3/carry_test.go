package s3_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// An index write whose first attempt is carried forward by Paxos (its
// retry finds it accepted and completes it, then runs again on top) must
// still report the write's own outcome and must not treat the version it
// just wrote as an older one: releasing it would free the data of an
// acknowledged PUT once the collector's grace period passed.
func TestIndexWriteCarriedForward(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil, nil)
	c := e.sdk()
	for _, b := range []string{"plain", "versioned"} {
		if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.PutBucketVersioning(ctx, &awss3.PutBucketVersioningInput{Bucket: aws.String("versioned"),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bucket string
		ifNone bool
	}{{"plain", false}, {"plain", true}, {"versioned", false}} {
		key := "k"
		if tc.ifNone {
			key = "only-once"
		}
		body := []byte("carried " + tc.bucket + " " + key)
		releases, live := e.data.Releases.Load(), e.data.Live()
		e.meta.CarryForward.Store(1)
		in := &awss3.PutObjectInput{Bucket: aws.String(tc.bucket), Key: aws.String(key), Body: bytes.NewReader(body)}
		if tc.ifNone {
			in.IfNoneMatch = aws.String("*")
		}
		if _, err := c.PutObject(ctx, in); err != nil {
			t.Fatalf("%s/%s: PUT whose index write was carried forward: %v", tc.bucket, key, err)
		}
		if n := e.meta.CarryForward.Load(); n != 0 {
			t.Fatalf("the PUT made no index write (carry-forward left: %d)", n)
		}
		if got := e.data.Releases.Load() - releases; got != 0 {
			t.Fatalf("%s/%s: the PUT released %d references (its own data)", tc.bucket, key, got)
		}
		if got := e.data.Live() - live; got != 1 {
			t.Fatalf("%s/%s: %d more live references after the PUT, want 1", tc.bucket, key, got)
		}
		out, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(tc.bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if !bytes.Equal(got, body) {
			t.Fatalf("%s/%s: read %q", tc.bucket, key, got)
		}
	}
	vs, err := c.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: aws.String("versioned")})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.Versions) != 1 {
		t.Fatalf("one PUT made %d versions", len(vs.Versions))
	}
}

// A PUT whose index write may have happened (its reply was lost) fails,
// but keeps its data: the version may be live. A PUT refused by its own
// condition gives its data back.
func TestUncertainIndexWriteKeepsData(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil, nil)
	c := e.sdk()
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	body := []byte("maybe written")
	releases := e.data.Releases.Load()
	e.meta.LoseReply.Store(1)
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k"), Body: bytes.NewReader(body)}); err == nil {
		t.Fatal("a PUT whose index write reply was lost succeeded")
	}
	if n := e.meta.LoseReply.Load(); n != 0 {
		t.Fatalf("the PUT made no index write (left: %d)", n)
	}
	if got := e.data.Releases.Load() - releases; got != 0 {
		t.Fatalf("an uncertain PUT released %d references", got)
	}
	out, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k")})
	if err != nil {
		t.Fatalf("the write did land; GET: %v", err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(got, body) {
		t.Fatalf("read %q", got)
	}

	_, err = c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k"),
		Body: bytes.NewReader([]byte("refused")), IfNoneMatch: aws.String("*")})
	if apiCode(err) != "PreconditionFailed" {
		t.Fatalf("If-None-Match on an existing key: %v", err)
	}
	if got := e.data.Releases.Load() - releases; got != 1 {
		t.Fatalf("a refused PUT released %d references, want its own 1", got)
	}
}
