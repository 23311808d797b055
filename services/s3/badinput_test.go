package s3_test

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

	"shoal/services/s3"
)

// raw sends a hand-written request head (and optional partial body) on a
// fresh connection, half-closes it, and parses the response.
func raw(t *testing.T, e *env, req *http.Request, declaredLen int64, body []byte) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", e.host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", req.Method, req.URL.RequestURI(), req.Host, declaredLen)
	for k, vs := range req.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := conn.Write(append([]byte(b.String()), body...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp, rb
}

func (e *env) exists(t *testing.T, path string) bool {
	t.Helper()
	resp, _ := e.do(e.signed("HEAD", path, nil, nil, "", time.Time{}))
	return resp.StatusCode == 200
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	mustCreateBucket(t, e, "bad", nil)
	now := time.Time{}

	t.Run("malformed xml", func(t *testing.T) {
		if r, b := e.do(e.signed("PUT", "/bad/keep", []byte("x"), nil, "", now)); r.StatusCode != 200 {
			t.Fatalf("put: %s", b)
		}
		for _, body := range []string{"<Delete><Object>", "not xml", "<Delete></Delete>"} {
			resp, rb := e.do(e.signed("POST", "/bad?delete", []byte(body), nil, "", now))
			expectErr(t, body, resp, rb, 400, "MalformedXML")
		}
		resp, rb := e.do(e.signed("PUT", "/bad?versioning", []byte("<VersioningConfiguration><Status>Maybe</Status></VersioningConfiguration>"), nil, "", now))
		expectErr(t, "versioning", resp, rb, 400, "MalformedXML")
		if !e.exists(t, "/bad/keep") {
			t.Fatal("object deleted by malformed request")
		}
	})
	t.Run("absurd content length", func(t *testing.T) {
		req := e.signed("PUT", "/bad/huge", nil, nil, "UNSIGNED-PAYLOAD", now)
		resp, rb := raw(t, e, req, 6<<30, nil)
		expectErr(t, "6 GiB put", resp, rb, 400, "EntityTooLarge")
		req.Header.Set("Content-Length", "99999999999999999999999")
		resp, _ = raw(t, e, req, 1, nil)
		if resp.StatusCode != 400 {
			t.Fatalf("unparsable length: %d", resp.StatusCode)
		}
		if e.exists(t, "/bad/huge") {
			t.Fatal("stored")
		}
	})
	t.Run("truncated body", func(t *testing.T) {
		req := e.signed("PUT", "/bad/trunc", nil, nil, "UNSIGNED-PAYLOAD", now)
		resp, rb := raw(t, e, req, 1000, make([]byte, 500))
		expectErr(t, "truncated", resp, rb, 400, "IncompleteBody")
		if e.exists(t, "/bad/trunc") {
			t.Fatal("stored")
		}
	})
	t.Run("bucket names", func(t *testing.T) {
		for _, n := range []string{"ab", "AB-c", "a..b", "192.168.1.1", "-abc", "abc-", "xn--abc", strings.Repeat("a", 64), "a_b"} {
			resp, rb := e.do(e.signed("PUT", "/"+n, nil, nil, "", now))
			expectErr(t, n, resp, rb, 400, "InvalidBucketName")
		}
	})
	t.Run("key names", func(t *testing.T) {
		resp, rb := e.do(e.signed("PUT", "/bad/"+strings.Repeat("k", 1025), []byte("x"), nil, "", now))
		expectErr(t, "long key", resp, rb, 400, "KeyTooLongError")
		resp, rb = e.do(e.signed("PUT", "/bad/%FF%FE", []byte("x"), nil, "", now))
		expectErr(t, "invalid utf-8", resp, rb, 400, "InvalidArgument")
	})
	t.Run("huge headers", func(t *testing.T) {
		req := e.signed("GET", "/bad/keep", nil, map[string]string{"X-Junk": strings.Repeat("j", 100<<10)}, "", now)
		resp, _ := e.do(req)
		if resp.StatusCode != 431 && resp.StatusCode != 400 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		resp, rb := e.do(e.signed("PUT", "/bad/meta", []byte("x"), map[string]string{"X-Amz-Meta-Big": strings.Repeat("m", 3000)}, "", now))
		expectErr(t, "metadata", resp, rb, 400, "MetadataTooLarge")
	})
	t.Run("wrong secret", func(t *testing.T) {
		bad := *e
		bad.secret = "wrong"
		resp, rb := e.do(bad.signed("GET", "/bad/keep", nil, nil, "", now))
		expectErr(t, "wrong secret", resp, rb, 403, "SignatureDoesNotMatch")
		bad = *e
		bad.id = "SHNOSUCHKEY"
		resp, rb = e.do(bad.signed("GET", "/bad/keep", nil, nil, "", now))
		expectErr(t, "unknown key", resp, rb, 403, "InvalidAccessKeyId")
	})
	t.Run("skewed clock", func(t *testing.T) {
		resp, rb := e.do(e.signed("PUT", "/bad/skew", []byte("x"), nil, "", time.Now().Add(-20*time.Minute)))
		expectErr(t, "skew", resp, rb, 403, "RequestTimeTooSkewed")
		if e.exists(t, "/bad/skew") {
			t.Fatal("stored")
		}
	})
	t.Run("payload hash mismatch", func(t *testing.T) {
		sum := sha256.Sum256([]byte("other"))
		resp, rb := e.do(e.signed("PUT", "/bad/sha", []byte("body"), nil, hex.EncodeToString(sum[:]), now))
		expectErr(t, "sha", resp, rb, 400, "XAmzContentSHA256Mismatch")
		if e.exists(t, "/bad/sha") {
			t.Fatal("stored")
		}
	})
	t.Run("content-md5", func(t *testing.T) {
		sum := md5.Sum([]byte("other"))
		resp, rb := e.do(e.signed("PUT", "/bad/md5", []byte("body"), map[string]string{"Content-MD5": base64.StdEncoding.EncodeToString(sum[:])}, "", now))
		expectErr(t, "md5", resp, rb, 400, "BadDigest")
		resp, rb = e.do(e.signed("PUT", "/bad/md5", []byte("body"), map[string]string{"Content-MD5": "nope"}, "", now))
		expectErr(t, "md5 syntax", resp, rb, 400, "InvalidDigest")
		resp, rb = e.do(e.signed("PUT", "/bad/md5", []byte("body"), map[string]string{"X-Amz-Checksum-Crc32": "AAAAAA=="}, "", now))
		expectErr(t, "crc32", resp, rb, 400, "BadDigest")
		if e.exists(t, "/bad/md5") {
			t.Fatal("stored")
		}
	})
	t.Run("unsupported", func(t *testing.T) {
		resp, rb := e.do(e.signed("GET", "/bad?tagging", nil, nil, "", now))
		expectErr(t, "tagging", resp, rb, 501, "NotImplemented")
		resp, rb = e.do(e.signed("PATCH", "/bad/keep", nil, nil, "", now))
		expectErr(t, "patch", resp, rb, 405, "MethodNotAllowed")
		resp, rb = e.do(e.signed("GET", "/bad?list-type=2&max-keys=-1", nil, nil, "", now))
		expectErr(t, "max-keys", resp, rb, 400, "InvalidArgument")
	})
}

// signChunked builds an aws-chunked STREAMING-AWS4-HMAC-SHA256-PAYLOAD
// request; tamper flips a byte of the second chunk's signature.
func signChunked(t *testing.T, e *env, path string, chunks [][]byte, tamper bool) *http.Request {
	t.Helper()
	total := 0
	for _, c := range chunks {
		total += len(c)
	}
	at := time.Now().UTC()
	req := e.signed("PUT", path, nil, map[string]string{"Content-Encoding": "aws-chunked",
		"X-Amz-Decoded-Content-Length": fmt.Sprint(total)}, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", at)
	auth := req.Header.Get("Authorization")
	prev := auth[strings.Index(auth, "Signature=")+len("Signature="):]
	mac := func(k []byte, s string) []byte { h := hmac.New(sha256.New, k); h.Write([]byte(s)); return h.Sum(nil) }
	key := mac(mac(mac(mac([]byte("AWS4"+e.secret), at.Format("20060102")), "us-east-1"), "s3"), "aws4_request")
	scope := at.Format("20060102") + "/us-east-1/s3/aws4_request"
	empty := sha256.Sum256(nil)
	var body bytes.Buffer
	for i, c := range append(chunks, nil) {
		h := sha256.Sum256(c)
		sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + at.Format("20060102T150405Z") + "\n" + scope + "\n" + prev + "\n" +
			hex.EncodeToString(empty[:]) + "\n" + hex.EncodeToString(h[:])
		sig := hex.EncodeToString(mac(key, sts))
		prev = sig
		if tamper && i == 1 {
			sig = "0" + sig[1:]
			if sig == prev {
				sig = "1" + sig[1:]
			}
		}
		fmt.Fprintf(&body, "%x;chunk-signature=%s\r\n%s\r\n", len(c), sig, c)
	}
	req.Body = io.NopCloser(bytes.NewReader(body.Bytes()))
	req.ContentLength = int64(body.Len())
	return req
}

func TestChunkedUpload(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	mustCreateBucket(t, e, "chk", nil)
	chunks := [][]byte{fill(8192, 1), fill(100, 2)}
	resp, rb := e.do(signChunked(t, e, "/chk/ok", chunks, false))
	if resp.StatusCode != 200 {
		t.Fatalf("chunked put: %d %s", resp.StatusCode, rb)
	}
	resp, rb = e.do(e.signed("GET", "/chk/ok", nil, nil, "", time.Time{}))
	if !bytes.Equal(rb, append(append([]byte(nil), chunks[0]...), chunks[1]...)) {
		t.Fatalf("content: %d %d bytes", resp.StatusCode, len(rb))
	}
	writes := e.data.Writes.Load()
	resp, rb = e.do(signChunked(t, e, "/chk/bad", chunks, true))
	expectErr(t, "tampered chunk", resp, rb, 403, "SignatureDoesNotMatch")
	if e.exists(t, "/chk/bad") || e.data.Writes.Load() != writes {
		t.Fatal("tampered upload stored")
	}
}

func TestAnonymousAndKeys(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil, nil)
	mustCreateBucket(t, e, "private", nil)
	mustCreateBucket(t, e, "public", map[string]string{"X-Amz-Acl": "public-read"})
	for _, b := range []string{"private", "public"} {
		if r, body := e.do(e.signed("PUT", "/"+b+"/obj", []byte("hello"), nil, "", time.Time{})); r.StatusCode != 200 {
			t.Fatalf("put: %s", body)
		}
	}
	anon := func(method, path string, body string) (*http.Response, []byte) {
		req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
		return e.do(req)
	}
	resp, rb := anon("GET", "/private/obj", "")
	expectErr(t, "anonymous private get", resp, rb, 403, "AccessDenied")
	resp, rb = anon("GET", "/", "")
	expectErr(t, "anonymous list buckets", resp, rb, 403, "AccessDenied")
	resp, rb = anon("GET", "/public/obj", "")
	if resp.StatusCode != 200 || string(rb) != "hello" {
		t.Fatalf("anonymous public get: %d %s", resp.StatusCode, rb)
	}
	if resp, rb = anon("GET", "/public?list-type=2", ""); resp.StatusCode != 200 || !bytes.Contains(rb, []byte("<Key>obj</Key>")) {
		t.Fatalf("anonymous public list: %d %s", resp.StatusCode, rb)
	}
	resp, rb = anon("PUT", "/public/new", "x")
	expectErr(t, "anonymous put", resp, rb, 403, "AccessDenied")
	resp, rb = anon("DELETE", "/public/obj", "")
	expectErr(t, "anonymous delete", resp, rb, 403, "AccessDenied")
	// Make it private again through PutBucketAcl.
	if r, body := e.do(e.signed("PUT", "/public?acl", nil, map[string]string{"X-Amz-Acl": "private"}, "", time.Time{})); r.StatusCode != 200 {
		t.Fatalf("put acl: %s", body)
	}
	resp, rb = anon("GET", "/public/obj", "")
	expectErr(t, "after private acl", resp, rb, 403, "AccessDenied")

	// Key management.
	id2, secret2, err := e.srv.CreateKey(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := e.srv.ListKeys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("list keys: %v %+v", err, keys)
	}
	bob := *e
	bob.id, bob.secret = id2, secret2
	if r, body := e.do(bob.signed("GET", "/private/obj", nil, nil, "", time.Time{})); r.StatusCode != 200 {
		t.Fatalf("bob get: %s", body)
	}
	if err := e.srv.DeleteKey(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.DeleteKey(ctx, id2); err == nil {
		t.Fatal("deleting twice succeeded")
	}
	resp, rb = e.do(bob.signed("GET", "/private/obj", nil, nil, "", time.Time{}))
	expectErr(t, "deleted key", resp, rb, 403, "InvalidAccessKeyId")
	if _, _, err := e.srv.CreateKey(ctx, ""); err == nil {
		t.Fatal("empty user accepted")
	}
}

func TestVirtualHostAndPolicy(t *testing.T) {
	e := newEnv(t, nil, nil, func(c *s3.Config) { c.Domain = "s3.test" })
	mustCreateBucket(t, e, "vhost", map[string]string{"X-Shoal-Policy": "redundancy=ec:4+2"})
	req := e.signed("PUT", "/obj", []byte("via vhost"), nil, "", time.Time{})
	req.Host = "vhost.s3.test"
	req.Header.Del("Authorization")
	req = resign(t, e, req, []byte("via vhost"))
	if r, body := e.do(req); r.StatusCode != 200 {
		t.Fatalf("vhost put: %d %s", r.StatusCode, body)
	}
	resp, rb := e.do(e.signed("GET", "/vhost/obj", nil, nil, "", time.Time{}))
	if resp.StatusCode != 200 || string(rb) != "via vhost" {
		t.Fatalf("path-style get: %d %s", resp.StatusCode, rb)
	}
	if e.data.PolicyCount("redundancy=ec:4+2") != 1 {
		t.Fatal("bucket policy not passed to DataStore.Write")
	}
	resp, rb = e.do(e.signed("PUT", "/badpolicy", nil, map[string]string{"X-Shoal-Policy": "no spaces"}, "", time.Time{}))
	expectErr(t, "policy", resp, rb, 400, "InvalidArgument")
}
