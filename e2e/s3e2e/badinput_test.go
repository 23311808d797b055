package s3e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestBadInput sends what real clients never should against the real
// server: every request gets a proper S3 error and the server stays healthy.
func TestBadInput(t *testing.T) {
	e := startAllInOne(t)
	ctx := context.Background()
	const bucket = "badinput"
	if _, err := e.sdk("").CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	sign := func(r *http.Request, secret string, payload string, at time.Time) {
		t.Helper()
		r.Header.Set("X-Amz-Content-Sha256", payload)
		err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: e.id, SecretAccessKey: secret}, r, payload, "s3", region, at)
		if err != nil {
			t.Fatal(err)
		}
	}
	hash := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	do := func(r *http.Request) (int, string) {
		t.Helper()
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatalf("%s %s: %v", r.Method, r.URL, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	expect := func(what string, status int, body string, wantStatus int, wantCode string) {
		t.Helper()
		if status != wantStatus || !strings.Contains(body, "<Code>"+wantCode+"</Code>") {
			t.Errorf("%s: %d %s, want %d %s", what, status, body, wantStatus, wantCode)
		}
	}
	req := func(method, path string, body []byte) *http.Request {
		r, err := http.NewRequest(method, e.endpoint+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	absent := func(key string) {
		t.Helper()
		r := req("HEAD", "/"+bucket+"/"+key, nil)
		sign(r, e.secret, hash(nil), time.Now())
		if st, _ := do(r); st != http.StatusNotFound {
			t.Errorf("%s: stored by a rejected request (HEAD %d)", key, st)
		}
	}

	// Authentication.
	r := req("PUT", "/"+bucket+"/wrong-secret", []byte("data"))
	sign(r, e.secret+"x", hash([]byte("data")), time.Now())
	st, b := do(r)
	expect("wrong secret", st, b, 403, "SignatureDoesNotMatch")
	absent("wrong-secret")

	r = req("GET", "/"+bucket, nil)
	r.Header.Set("X-Amz-Content-Sha256", hash(nil))
	_ = v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: "SHNOSUCHKEY0000000000", SecretAccessKey: e.secret}, r, hash(nil), "s3", region, time.Now())
	st, b = do(r)
	expect("unknown key", st, b, 403, "InvalidAccessKeyId")

	r = req("PUT", "/"+bucket+"/skewed", []byte("data"))
	sign(r, e.secret, hash([]byte("data")), time.Now().Add(-time.Hour))
	st, b = do(r)
	expect("skewed clock", st, b, 403, "RequestTimeTooSkewed")
	absent("skewed")

	pr := req("GET", "/"+bucket+"/x", nil)
	q := pr.URL.Query()
	q.Set("X-Amz-Expires", "1")
	pr.URL.RawQuery = q.Encode()
	url, _, err := v4.NewSigner().PresignHTTP(ctx, aws.Credentials{AccessKeyID: e.id, SecretAccessKey: e.secret}, pr,
		"UNSIGNED-PAYLOAD", "s3", region, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	r, _ = http.NewRequest("GET", url, nil)
	st, b = do(r)
	expect("expired presign", st, b, 403, "AccessDenied")

	// Streaming upload whose second chunk's signature is tampered with:
	// refused, nothing stored.
	for _, tamper := range []bool{false, true} {
		key := fmt.Sprintf("chunked-%v", tamper)
		data := randBytes(100_000)
		st, b := e.chunkedPut(t, bucket, key, data, 64<<10, tamper)
		if !tamper {
			if st != 200 {
				t.Fatalf("good chunked put: %d %s", st, b)
			}
			continue
		}
		expect("tampered chunk signature", st, b, 403, "SignatureDoesNotMatch")
		absent(key)
	}

	// Bad input.
	garbage := []byte("<Delete><Object><Key>a</Key></Object") // unterminated
	r = req("POST", "/"+bucket+"?delete", garbage)
	sum := md5Base64(garbage)
	r.Header.Set("Content-Md5", sum)
	sign(r, e.secret, hash(garbage), time.Now())
	st, b = do(r)
	expect("malformed XML", st, b, 400, "MalformedXML")

	for _, name := range []string{"UPPER", "ab", "-dash", "a..b", "192.168.1.1", strings.Repeat("x", 64)} {
		r = req("PUT", "/"+name, nil)
		sign(r, e.secret, hash(nil), time.Now())
		st, b = do(r)
		expect("bucket name "+name, st, b, 400, "InvalidBucketName")
	}

	r = req("GET", "/"+bucket+"/x", nil)
	r.Header.Set("X-Huge", strings.Repeat("h", 200<<10))
	sign(r, e.secret, hash(nil), time.Now())
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge && resp.StatusCode != 400 {
		t.Errorf("huge headers: %d", resp.StatusCode)
	}

	// Raw HTTP: an absurd Content-Length, and a body cut short.
	host := strings.TrimPrefix(e.endpoint, "http://")
	raw := func(what, head string, body []byte, halfClose bool) (int, string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(append([]byte(head), body...)); err != nil {
			t.Fatal(err)
		}
		if halfClose {
			_ = c.(*net.TCPConn).CloseWrite()
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: no HTTP response: %v", what, err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(rb)
	}
	signedHead := func(key string, length int64, payload string) string {
		r := req("PUT", "/"+bucket+"/"+key, nil)
		r.ContentLength = length
		sign(r, e.secret, payload, time.Now())
		var sb strings.Builder
		fmt.Fprintf(&sb, "PUT /%s/%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", bucket, key, host, length)
		for k, vs := range r.Header {
			for _, v := range vs {
				fmt.Fprintf(&sb, "%s: %s\r\n", k, v)
			}
		}
		sb.WriteString("\r\n")
		return sb.String()
	}
	st, b = raw("absurd length", signedHead("absurd", 1<<50, "UNSIGNED-PAYLOAD"), []byte("tiny"), true)
	expect("absurd Content-Length", st, b, 400, "EntityTooLarge")
	absent("absurd")
	st, b = raw("truncated", signedHead("truncated", 100_000, "UNSIGNED-PAYLOAD"), randBytes(1000), true)
	if st < 400 || st >= 500 {
		t.Errorf("truncated body: %d %s", st, b)
	}
	absent("truncated")

	e.healthy(t, bucket)
}

// chunkedPut uploads data with STREAMING-AWS4-HMAC-SHA256-PAYLOAD, chunk
// by chunk, optionally corrupting the second chunk after signing it.
func (e *env) chunkedPut(t *testing.T, bucket, key string, data []byte, chunk int, tamper bool) (int, string) {
	t.Helper()
	now := time.Now().UTC()
	date, stamp := now.Format("20060102"), now.Format("20060102T150405Z")
	scope := date + "/" + region + "/s3/aws4_request"
	var sizes []int
	for off := 0; off < len(data); off += chunk {
		sizes = append(sizes, min(chunk, len(data)-off))
	}
	sizes = append(sizes, 0)
	enc := 0
	for _, n := range sizes {
		enc += len(fmt.Sprintf("%x;chunk-signature=", n)) + 64 + 2 + n + 2
	}
	r, err := http.NewRequest("PUT", e.endpoint+"/"+bucket+"/"+key, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.ContentLength = int64(enc)
	r.Header.Set("X-Amz-Decoded-Content-Length", fmt.Sprint(len(data)))
	r.Header.Set("Content-Encoding", "aws-chunked")
	r.Header.Set("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: e.id, SecretAccessKey: e.secret}, r,
		"STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "s3", region, now); err != nil {
		t.Fatal(err)
	}
	auth := r.Header.Get("Authorization")
	prev := auth[strings.LastIndex(auth, "Signature=")+len("Signature="):]
	hm := func(k []byte, s string) []byte { h := hmac.New(sha256.New, k); h.Write([]byte(s)); return h.Sum(nil) }
	key4 := hm(hm(hm(hm([]byte("AWS4"+e.secret), date), region), "s3"), "aws4_request")
	emptyHash := sha256.Sum256(nil)
	var body bytes.Buffer
	off := 0
	for i, n := range sizes {
		c := append([]byte(nil), data[off:off+n]...)
		off += n
		ch := sha256.Sum256(c)
		sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + stamp + "\n" + scope + "\n" + prev + "\n" + hex.EncodeToString(emptyHash[:]) + "\n" + hex.EncodeToString(ch[:])
		sig := hex.EncodeToString(hm(key4, sts))
		prev = sig
		if tamper && i == 1 {
			c[10] ^= 0xff
		}
		fmt.Fprintf(&body, "%x;chunk-signature=%s\r\n", n, sig)
		body.Write(c)
		body.WriteString("\r\n")
	}
	r.Body = io.NopCloser(&body)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func md5Base64(b []byte) string {
	s := md5.Sum(b) //nolint:gosec // Content-MD5
	return base64.StdEncoding.EncodeToString(s[:])
}
