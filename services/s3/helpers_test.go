package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"shoal/services/s3"
	"shoal/services/s3/s3test"
)

type env struct {
	t      *testing.T
	srv    *s3.Server
	url    string
	host   string
	meta   *s3test.Meta
	data   *s3test.Data
	id     string
	secret string
}

// newEnv starts a server on 127.0.0.1 through Serve and creates a key.
func newEnv(t *testing.T, meta *s3test.Meta, data *s3test.Data, mod func(*s3.Config)) *env {
	t.Helper()
	if meta == nil {
		meta = s3test.NewMeta()
	}
	if data == nil {
		data = s3test.NewData()
	}
	cfg := s3.DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	srv, err := s3.New(cfg, data, meta, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	id, secret, err := srv.CreateKey(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, url: "http://" + ln.Addr().String(), host: ln.Addr().String(),
		meta: meta, data: data, id: id, secret: secret}
}

func (e *env) sdkWith(endpoint string, hc *http.Client, id, secret string) *awss3.Client {
	cfg := aws.Config{Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""),
		// What config.LoadDefaultConfig sets: checksums on every upload.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenSupported,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenSupported}
	if hc != nil {
		cfg.HTTPClient = hc
	}
	return awss3.NewFromConfig(cfg, func(o *awss3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
		o.RetryMaxAttempts = 1
	})
}

// sdk returns an AWS SDK client over plain HTTP.
func (e *env) sdk() *awss3.Client { return e.sdkWith(e.url, nil, e.id, e.secret) }

// sdkTLS returns an AWS SDK client over HTTPS, where the SDK uses its default
// trailer-checksum upload mode (STREAMING-UNSIGNED-PAYLOAD-TRAILER).
func (e *env) sdkTLS() *awss3.Client {
	ts := httptest.NewUnstartedServer(e.srv.Handler())
	ts.StartTLS()
	e.t.Cleanup(ts.Close)
	return e.sdkWith(ts.URL, ts.Client(), e.id, e.secret)
}

// signed builds a request signed at time at (zero: now) with the given
// payload hash ("" = hash of body).
func (e *env) signed(method, path string, body []byte, hdr map[string]string, payloadHash string, at time.Time) *http.Request {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if payloadHash == "" {
		sum := sha256.Sum256(body)
		payloadHash = hex.EncodeToString(sum[:])
	}
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	if at.IsZero() {
		at = time.Now()
	}
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: e.id, SecretAccessKey: e.secret},
		req, payloadHash, "s3", "us-east-1", at)
	if err != nil {
		e.t.Fatal(err)
	}
	return req
}

func (e *env) do(req *http.Request) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

type xmlErr struct {
	Code      string `xml:"Code"`
	Message   string `xml:"Message"`
	RequestID string `xml:"RequestId"`
}

// expectErr checks status and S3 error code of a response.
func expectErr(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, resp.StatusCode, status, body)
	}
	if code == "" {
		return
	}
	var x xmlErr
	if err := xml.Unmarshal(body, &x); err != nil {
		t.Fatalf("%s: body is not an S3 error (%v): %q", what, err, body)
	}
	if x.Code != code || x.RequestID == "" || x.RequestID != resp.Header.Get("X-Amz-Request-Id") {
		t.Fatalf("%s: error %+v (request id header %q), want code %s", what, x, resp.Header.Get("X-Amz-Request-Id"), code)
	}
}

// apiCode extracts the S3 error code from an SDK error.
func apiCode(err error) string {
	var ae interface{ ErrorCode() string }
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	if err == nil {
		return ""
	}
	return "non-API error: " + err.Error()
}

func mustCreateBucket(t *testing.T, e *env, name string, hdr map[string]string) {
	t.Helper()
	resp, body := e.do(e.signed("PUT", "/"+name, nil, hdr, "", time.Time{}))
	if resp.StatusCode != 200 {
		t.Fatalf("create bucket %s: %d %s", name, resp.StatusCode, body)
	}
}

func fill(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// resign signs req again after its Host was changed.
func resign(t *testing.T, e *env, req *http.Request, body []byte) *http.Request {
	t.Helper()
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:])
	req.Header.Del("X-Amz-Date")
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: e.id, SecretAccessKey: e.secret},
		req, h, "s3", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	return req
}

// minioLessPager lists bucket "shared" with ListObjectsV2 pages of 1000.
func minioLessPager(t *testing.T, c *awss3.Client) []string {
	t.Helper()
	var keys []string
	out := map[string]bool{}
	var token *string
	for {
		lo, err := c.ListObjectsV2(context.Background(), &awss3.ListObjectsV2Input{Bucket: aws.String("shared"), ContinuationToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range lo.Contents {
			if out[*o.Key] {
				t.Fatalf("key %q listed twice", *o.Key)
			}
			out[*o.Key] = true
			keys = append(keys, *o.Key)
		}
		if !*lo.IsTruncated {
			return keys
		}
		token = lo.NextContinuationToken
	}
}
