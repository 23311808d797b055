package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"shoal/shared/randtest"
)

// Signed requests of random shape (methods, bucket and key names, sub-
// resources and their values, headers such as Range, conditionals, copy
// sources, checksums, and bodies of random bytes or random S3 XML) reach
// the handlers past authentication. However wrong they are, each is
// answered with a client error or a success, never with a 5xx other than
// 501, and an error has an S3 XML body; the connection stays usable; an
// object in a bucket the requests never touch is intact afterwards. The
// seed is logged; SHOAL_S3_FUZZ_SEED replays it and SHOAL_S3_FUZZ_N sets
// the number of requests.
func TestRandomSignedRequests(t *testing.T) {
	seed := randtest.Seed(t, "SHOAL_S3_FUZZ_SEED")
	n := 3000
	if testing.Short() {
		n = 600
	}
	n = randtest.Count(t, "SHOAL_S3_FUZZ_N", n)
	t.Logf("%d requests", n)
	rng := rand.New(rand.NewPCG(seed, seed>>7|1))
	var e *env
	if u := os.Getenv("SHOAL_S3_FUZZ_URL"); u != "" {
		// A running server instead (e.g. `shoal serve`): its URL, and a
		// key in SHOAL_S3_FUZZ_KEY as "ID SECRET". Its bucket names must
		// be free.
		id, secret, _ := strings.Cut(os.Getenv("SHOAL_S3_FUZZ_KEY"), " ")
		e = &env{t: t, url: u, host: strings.TrimPrefix(u, "http://"), id: id, secret: secret}
	} else {
		e = newEnv(t, nil, nil, nil)
	}

	// State for the requests to find: a bucket the requests never name,
	// holding an object that must survive them; buckets they do name, one
	// versioned, with objects and an upload in progress.
	kept := fill(70_000, 3)
	mustCreateBucket(t, e, "keep", nil)
	if resp, body := e.do(e.signed("PUT", "/keep/obj", kept, nil, "", time.Time{})); resp.StatusCode != 200 {
		t.Fatalf("put keep/obj: %d %s", resp.StatusCode, body)
	}
	mustCreateBucket(t, e, "fzz", nil)
	mustCreateBucket(t, e, "fzv", nil)
	versioning := `<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>`
	if resp, body := e.do(e.signed("PUT", "/fzv?versioning", []byte(versioning), nil, "", time.Time{})); resp.StatusCode != 200 {
		t.Fatalf("enable versioning: %d %s", resp.StatusCode, body)
	}
	for _, k := range []string{"a", "b/c", "b/d", "e f"} {
		for _, b := range []string{"fzz", "fzv"} {
			if resp, body := e.do(signS3(t, e, "PUT", "/"+b+"/"+escapeKey(k), fill(100, 1), nil)); resp.StatusCode != 200 {
				t.Fatalf("put %s/%s: %d %s", b, k, resp.StatusCode, body)
			}
		}
	}
	uploads := []string{"nosuchupload", ""}
	resp, body := e.do(e.signed("POST", "/fzz/mp?uploads", nil, nil, "", time.Time{}))
	var created struct {
		UploadID string `xml:"UploadId"`
	}
	if resp.StatusCode != 200 || xml.Unmarshal(body, &created) != nil {
		t.Fatalf("create upload: %d %s", resp.StatusCode, body)
	}
	uploads = append(uploads, created.UploadID)

	g := &reqGen{rng: rng, uploads: uploads}
	statuses := map[int]int{}
	for i := range n {
		method, path, hdr, body := g.request()
		req := signS3(t, e, method, path, body, hdr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request %d (seed %d) %s %s %v: %v", i, seed, method, path, hdr, err)
		}
		var rb bytes.Buffer
		_, err = rb.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d (seed %d) %s %s %v: reading the response: %v", i, seed, method, path, hdr, err)
		}
		statuses[resp.StatusCode]++
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented {
			t.Fatalf("request %d (seed %d) %s %s %v (body %q): %d %s", i, seed, method, path, hdr, body, resp.StatusCode, rb.Bytes())
		}
		if resp.StatusCode >= 400 && method != "HEAD" {
			var x xmlErr
			if err := xml.Unmarshal(rb.Bytes(), &x); err != nil || x.Code == "" {
				t.Fatalf("request %d (seed %d) %s %s %v: %d with a body that is no S3 error: %q", i, seed, method, path, hdr, resp.StatusCode, rb.Bytes())
			}
		}
	}
	t.Logf("statuses: %v", statuses)
	resp, got := e.do(e.signed("GET", "/keep/obj", nil, nil, "", time.Time{}))
	if resp.StatusCode != 200 || !bytes.Equal(got, kept) {
		t.Fatalf("keep/obj after the requests: %d, %d bytes, equal %v", resp.StatusCode, len(got), bytes.Equal(got, kept))
	}
}

// reqGen makes random S3 requests.
type reqGen struct {
	rng     *rand.Rand
	uploads []string
}

func (g *reqGen) pick(xs ...string) string { return xs[g.rng.IntN(len(xs))] }

func (g *reqGen) num() string {
	return g.pick("0", "1", "2", "3", "-1", "10000", "10001", "999999999999", "abc", "", "1.5", "0x10", "1000", "2147483648")
}

func (g *reqGen) str() string {
	switch g.rng.IntN(4) {
	case 0:
		b := make([]byte, g.rng.IntN(30))
		for i := range b {
			b[i] = byte(g.rng.IntN(256))
		}
		return string(b)
	case 1:
		return strings.Repeat("x", g.rng.IntN(2000))
	default:
		return g.pick("", "a", "b/", "/", "%", "..", "é", "a\x00b", "null", "*", "fzz/a", "keep/obj", "b/c", "\n")
	}
}

func (g *reqGen) request() (method, path string, hdr map[string]string, body []byte) {
	method = g.pick("GET", "PUT", "POST", "DELETE", "HEAD")
	bucket := g.pick("fzz", "fzz", "fzv", "fzv", "nosuchbucket", "Bad_Bucket", "ab", "x..y", "", "new-"+strconv.Itoa(g.rng.IntN(5)))
	key := ""
	if g.rng.IntN(4) != 0 {
		key = g.pick("a", "b/c", "b/d", "e f", "mp", "new", strings.Repeat("k", 1100), "é/ü", "a/../b", "./x", g.str())
	}
	path = "/" + bucket
	if key != "" || g.rng.IntN(2) == 0 {
		path += "/" + escapeKey(key)
	}
	q := url.Values{}
	subs := []string{"uploads", "uploadId", "partNumber", "versionId", "versioning", "location", "delete", "list-type",
		"prefix", "delimiter", "max-keys", "continuation-token", "marker", "start-after", "encoding-type", "acl", "tagging",
		"cors", "policy", "versions", "key-marker", "version-id-marker", "upload-id-marker", "max-uploads", "part-number-marker",
		"max-parts", "response-content-type", "response-content-disposition", "response-expires", "fetch-owner", "attributes", "x-id"}
	for range g.rng.IntN(4) {
		s := subs[g.rng.IntN(len(subs))]
		switch s {
		case "uploadId":
			q.Set(s, g.pick(g.uploads...))
		case "partNumber", "max-keys", "max-uploads", "max-parts", "part-number-marker":
			q.Set(s, g.num())
		case "list-type":
			q.Set(s, g.pick("1", "2", "3", ""))
		case "encoding-type":
			q.Set(s, g.pick("url", "URL", "base64", ""))
		case "uploads", "versioning", "location", "delete", "acl", "tagging", "cors", "policy", "versions", "attributes":
			q.Set(s, "")
		default:
			q.Set(s, g.str())
		}
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	hdr = map[string]string{}
	headers := []func(){
		func() {
			hdr["Range"] = g.pick("bytes=0-0", "bytes=-1", "bytes=5-", "bytes=100-50", "bytes=0-99999999999", "bytes=a-b", "bytes=", "items=0-1", "bytes=0-1,3-4", "bytes=-0", "bytes=18446744073709551616-")
		},
		func() { hdr["If-Match"] = g.pick("*", `"abc"`, "", g.str()) },
		func() { hdr["If-None-Match"] = g.pick("*", `"abc"`, "", g.str()) },
		func() {
			hdr["If-Modified-Since"] = g.pick("Mon, 02 Jan 2006 15:04:05 GMT", "yesterday", "", "Sun, 06 Nov 1994 08:49:37 GMT", "Fri, 31 Dec 9999 23:59:59 GMT")
		},
		func() { hdr["If-Unmodified-Since"] = g.pick("Mon, 02 Jan 2006 15:04:05 GMT", "garbage", "") },
		func() {
			hdr["X-Amz-Copy-Source"] = g.pick("/fzz/a", "fzz/a", "/keep/obj", "/fzv/a?versionId=x", "/nosuch/a", "", "/", "//", "/fzz/", "%zz", "/fzz/"+strings.Repeat("k", 1100))
		},
		func() {
			hdr["X-Amz-Copy-Source-Range"] = g.pick("bytes=0-9", "bytes=9-0", "bytes=0-99999999", "nonsense", "")
		},
		func() { hdr["X-Amz-Metadata-Directive"] = g.pick("COPY", "REPLACE", "BOTH", "") },
		func() { hdr["X-Amz-Meta-"+g.pick("a", "B", "x_y", "dup")] = g.str() },
		func() {
			hdr["Content-Md5"] = g.pick("", "abc", base64.StdEncoding.EncodeToString(make([]byte, 16)), base64.StdEncoding.EncodeToString(make([]byte, 15)))
		},
		func() {
			hdr["X-Amz-Checksum-"+g.pick("Crc32", "Crc32c", "Sha1", "Sha256", "Crc64nvme", "Md5")] = g.pick("", "AAAAAA==", "!!", base64.StdEncoding.EncodeToString(make([]byte, 32)))
		},
		func() { hdr["X-Amz-Sdk-Checksum-Algorithm"] = g.pick("CRC32", "SHA256", "BOGUS", "") },
		func() { hdr["Content-Type"] = g.pick("text/plain", "", "application/xml", g.str()) },
		func() { hdr["X-Amz-Storage-Class"] = g.pick("STANDARD", "GLACIER", "bogus") },
		func() { hdr["X-Amz-Bucket-Object-Lock-Enabled"] = g.pick("true", "false", "x") },
		func() {
			hdr["X-Shoal-Policy"] = g.pick("r=3", "ec=4+2", "bogus", "chunk=fixed:1", "", "redundancy=ec:2+2,compress=zstd:3")
		},
		func() { hdr["X-Amz-Acl"] = g.pick("private", "public-read", "bogus") },
		func() { hdr["X-Amz-Tagging"] = g.pick("a=b", "=", "%%", "") },
		func() { hdr["X-Amz-Mfa"] = g.str() },
	}
	for range g.rng.IntN(4) {
		headers[g.rng.IntN(len(headers))]()
	}
	for k, v := range hdr {
		// Header values cannot carry control characters on the wire.
		hdr[k] = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return '?'
			}
			return r
		}, v)
	}
	switch g.rng.IntN(5) {
	case 0:
		body = nil
	case 1:
		body = make([]byte, g.rng.IntN(5000))
		for i := range body {
			body[i] = byte(g.rng.IntN(256))
		}
	default:
		body = []byte(g.xmlBody())
	}
	return method, path, hdr, body
}

// xmlBody is a random document of one of the shapes S3 takes as a body,
// possibly truncated.
func (g *reqGen) xmlBody() string {
	var b strings.Builder
	switch g.rng.IntN(5) {
	case 0:
		b.WriteString("<CompleteMultipartUpload>")
		for range g.rng.IntN(4) {
			fmt.Fprintf(&b, "<Part><PartNumber>%s</PartNumber><ETag>%s</ETag></Part>", g.num(), g.pick(`"abc"`, "", `"d41d8cd98f00b204e9800998ecf8427e"`))
		}
		b.WriteString("</CompleteMultipartUpload>")
	case 1:
		b.WriteString("<Delete>")
		if g.rng.IntN(2) == 0 {
			b.WriteString("<Quiet>" + g.pick("true", "false", "x") + "</Quiet>")
		}
		for range g.rng.IntN(4) {
			fmt.Fprintf(&b, "<Object><Key>%s</Key>", xmlEscape(g.pick("a", "b/c", "", "e f", "nosuch")))
			if g.rng.IntN(3) == 0 {
				fmt.Fprintf(&b, "<VersionId>%s</VersionId>", xmlEscape(g.pick("null", "x", "")))
			}
			b.WriteString("</Object>")
		}
		b.WriteString("</Delete>")
	case 2:
		fmt.Fprintf(&b, "<VersioningConfiguration><Status>%s</Status></VersioningConfiguration>", g.pick("Enabled", "Suspended", "On", ""))
	case 3:
		fmt.Fprintf(&b, "<CreateBucketConfiguration><LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>", g.pick("us-east-1", "eu-west-1", "", "EU"))
	default:
		b.WriteString(g.pick("<", "<?xml version=\"1.0\"?>", "<a><b></a>", "<Delete><Object><Key>a</Key></Object>", "&bogus;", "<!DOCTYPE x [<!ENTITY y \"z\">]><x>&y;</x>"))
	}
	s := b.String()
	if g.rng.IntN(6) == 0 && len(s) > 0 {
		s = s[:g.rng.IntN(len(s))]
	}
	return s
}

// escapeKey escapes a key for a path as SDKs do: every byte but the
// unreserved ones and the slashes.
func escapeKey(k string) string {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		c := k[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// signS3 signs like an S3 SDK: the path is escaped once, by escapeKey.
func signS3(t *testing.T, e *env, method, path string, body []byte, hdr map[string]string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", h)
	err = v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).SignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: e.id, SecretAccessKey: e.secret}, req, h, "s3", "us-east-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// Values a response would echo in a header are checked first: a control
// character in a response-* override, or a version id that no version can
// have, is a 400, not a response the client cannot parse (both broke the
// connection before).
func TestEchoedValuesValidated(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	mustCreateBucket(t, e, "echo", nil)
	if resp, body := e.do(e.signed("PUT", "/echo/k", []byte("v"), nil, "", time.Time{})); resp.StatusCode != 200 {
		t.Fatalf("put: %d %s", resp.StatusCode, body)
	}
	for _, path := range []string{"/echo/k?response-content-type=a%00b", "/echo/k?response-cache-control=x%0Dy", "/echo/k?versionId=%00x", "/echo/k?versionId=abc"} {
		resp, body := e.do(signS3(t, e, "GET", path, nil, nil))
		expectErr(t, "GET "+path, resp, body, 400, "InvalidArgument")
	}
	resp, body := e.do(signS3(t, e, "DELETE", "/echo/k?versionId=%8F%AE", nil, nil))
	expectErr(t, "DELETE of a malformed version id", resp, body, 400, "InvalidArgument")
	resp, body = e.do(signS3(t, e, "GET", "/echo/k?versionId=0123456789abcdef0123456789abcdef", nil, nil))
	expectErr(t, "GET of a well-formed version id that does not exist", resp, body, 404, "NoSuchVersion")
	resp, body = e.do(signS3(t, e, "GET", "/echo/k?versionId=null&response-content-type=text%2Fx%09y", nil, nil))
	if resp.StatusCode != 200 || string(body) != "v" || resp.Header.Get("Content-Type") != "text/x\ty" {
		t.Fatalf("GET of the null version with a tab in the override: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
}
