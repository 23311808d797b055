package multiprocess

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"shoal/e2e/framework"
	"shoal/services/app"
)

// A storage outage reaches S3 clients as a 503 (which SDKs retry), never as
// a 500: with two of three storage nodes killed, a GET of an object stored
// before cannot read its index shard and a PUT cannot store its data; once
// the nodes are back, both work again.
func TestS3OutageIs503(t *testing.T) {
	c := framework.StartProcCluster(t, 3)
	s3c, _ := startS3Front(t, c)
	ctx := context.Background()
	body := []byte("stored before the outage")
	put := func(key string) error {
		_, err := s3c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("outage"), Key: aws.String(key), Body: bytes.NewReader(body)})
		return err
	}
	get := func(key string) error {
		o, err := s3c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("outage"), Key: aws.String(key)})
		if err == nil {
			o.Body.Close()
		}
		return err
	}
	if _, err := s3c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("outage")}); err != nil {
		t.Fatal(err)
	}
	if err := put("before"); err != nil {
		t.Fatal(err)
	}
	if err := get("before"); err != nil {
		t.Fatal(err)
	}

	c.Nodes[0].Kill()
	c.Nodes[1].Kill()
	for op, err := range map[string]error{"GET": get("before"), "PUT": put("during")} {
		var re *smithyhttp.ResponseError
		var ae smithy.APIError
		if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusServiceUnavailable || !errors.As(err, &ae) {
			t.Fatalf("%s with two of three nodes down: %v, want a 503", op, err)
		}
		if code := ae.ErrorCode(); code != "ServiceUnavailable" && code != "SlowDown" {
			t.Fatalf("%s with two of three nodes down: code %s", op, code)
		}
	}

	c.Nodes[0].Restart()
	c.Nodes[1].Restart()
	framework.Eventually(t, 30*time.Second, "S3 serves again once the nodes are back", func() bool {
		return get("before") == nil && put("after") == nil
	})
}

// startS3Front runs the dedup tier and S3 as one more process and returns
// it with an SDK client using a key made as an operator would (signed with
// the front's key file), one attempt per call: tests see each answer, not
// the SDK's retries.
func startS3Front(t *testing.T, c *framework.ProcCluster) (*awss3.Client, *framework.Proc) {
	t.Helper()
	front := framework.StartProc(t, "dedup+s3", "serve", "-target=dedup,s3", "-nats.url="+c.NATSURL,
		"-dht.placement="+strings.Join(c.Places, ","), "-dedup.listen=127.0.0.1:0", "-s3.addr=127.0.0.1:0",
		"-data="+filepath.Join(c.Dir, "front"))
	endpoint := front.Field("s3", 60*time.Second)
	out, stderr, code := framework.Run(t, nil, "s3", "key", "create", "-placement", c.Places[0],
		"-key-file", filepath.Join(c.Dir, "front", "s3", "signing.key"))
	if code != 0 {
		t.Fatalf("s3 key create: %d %s", code, stderr)
	}
	id, secret, err := app.ParseS3Credentials(strings.NewReader(out))
	if err != nil {
		t.Fatalf("s3 key create printed %q", out)
	}
	return awss3.New(awss3.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""), RetryMaxAttempts: 1}), front
}
