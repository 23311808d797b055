package sigv4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Test vectors from the AWS S3 documentation ("Signature Calculations for
// the Authorization Header", "Query String Authentication", "Signature
// Calculations When Transferring Payload in Multiple Chunks").
const (
	docAccessKey = "AKIAIOSFODNN7EXAMPLE"
	docSecret    = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

func docVerifier(now time.Time) *Verifier {
	return &Verifier{Region: "us-east-1", Now: func() time.Time { return now },
		Lookup: func(_ context.Context, id string) (string, error) {
			if id != docAccessKey {
				return "", ErrInvalidAccessKey
			}
			return docSecret, nil
		}}
}

var docTime = time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)

// docHeaderRequest is the documentation's GET with header auth.
func docHeaderRequest() *http.Request {
	r := httptest.NewRequest("GET", "http://examplebucket.s3.amazonaws.com/test.txt", nil)
	r.Header.Set("Range", "bytes=0-9")
	r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
	return r
}

func TestHeaderAuthDocVector(t *testing.T) {
	r := docHeaderRequest()
	a, err := docVerifier(docTime.Add(time.Minute)).Verify(context.Background(), r)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if a.AccessKey != docAccessKey {
		t.Fatalf("access key %q", a.AccessKey)
	}
	// One changed signed header must break it.
	r.Header.Set("Range", "bytes=0-10")
	if _, err := docVerifier(docTime).Verify(context.Background(), r); !errors.Is(err, ErrSignatureMismatch) {
		t.Fatalf("tampered: got %v", err)
	}
}

func TestHeaderAuthErrors(t *testing.T) {
	mk := docHeaderRequest
	cases := []struct {
		name string
		mod  func(*http.Request, *Verifier)
		want error
	}{
		{"skewed", func(_ *http.Request, v *Verifier) { v.Now = func() time.Time { return docTime.Add(16 * time.Minute) } }, ErrTimeSkewed},
		{"future", func(_ *http.Request, v *Verifier) { v.Now = func() time.Time { return docTime.Add(-16 * time.Minute) } }, ErrTimeSkewed},
		{"region", func(_ *http.Request, v *Verifier) { v.Region = "eu-west-1" }, ErrWrongRegion},
		{"unknown key", func(r *http.Request, _ *Verifier) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), docAccessKey, "AKIDNOPE", 1))
		}, ErrInvalidAccessKey},
		{"no sha header", func(r *http.Request, _ *Verifier) { r.Header.Del("X-Amz-Content-Sha256") }, ErrMissingContentSHA256},
		{"garbage", func(r *http.Request, _ *Verifier) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256 nonsense") }, ErrMalformedAuth},
		{"v2", func(r *http.Request, _ *Verifier) { r.Header.Set("Authorization", "AWS AKID:sig") }, ErrUnsupportedAuth},
		{"anonymous", func(r *http.Request, _ *Verifier) { r.Header.Del("Authorization") }, ErrNotSigned},
		{"no date", func(r *http.Request, _ *Verifier) { r.Header.Del("X-Amz-Date") }, ErrMissingDate},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, v := mk(), docVerifier(docTime)
			c.mod(r, v)
			if _, err := v.Verify(context.Background(), r); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestPresignDocVector(t *testing.T) {
	const u = "http://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
	r := httptest.NewRequest("GET", u, nil)
	a, err := docVerifier(docTime.Add(time.Hour)).Verify(context.Background(), r)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !a.Presigned || a.ContentSHA256 != UnsignedPayload {
		t.Fatalf("auth %+v", a)
	}
	if _, err := docVerifier(docTime.Add(86401*time.Second)).Verify(context.Background(), r); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: got %v", err)
	}
	r2 := httptest.NewRequest("GET", strings.Replace(u, "test.txt", "other.txt", 1), nil)
	if _, err := docVerifier(docTime).Verify(context.Background(), r2); !errors.Is(err, ErrSignatureMismatch) {
		t.Fatalf("other key: got %v", err)
	}
	r3 := httptest.NewRequest("GET", strings.Replace(u, "X-Amz-Expires=86400", "X-Amz-Expires=604801", 1), nil)
	if _, err := docVerifier(docTime).Verify(context.Background(), r3); !errors.Is(err, ErrMalformedPresign) {
		t.Fatalf("expiry > 7 days: got %v", err)
	}
}

// chunkedDocRequest rebuilds the AWS documentation's aws-chunked example:
// 65536 + 1024 bytes of 'a' in two chunks, then the final empty chunk.
func chunkedDocRequest(sigs [3]string) *http.Request {
	var body bytes.Buffer
	fmt.Fprintf(&body, "10000;chunk-signature=%s\r\n%s\r\n", sigs[0], strings.Repeat("a", 65536))
	fmt.Fprintf(&body, "400;chunk-signature=%s\r\n%s\r\n", sigs[1], strings.Repeat("a", 1024))
	fmt.Fprintf(&body, "0;chunk-signature=%s\r\n\r\n", sigs[2])
	r := httptest.NewRequest("PUT", "http://s3.amazonaws.com/examplebucket/chunkObject.txt", bytes.NewReader(body.Bytes()))
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("X-Amz-Storage-Class", "REDUCED_REDUNDANCY")
	r.Header.Set("Content-Encoding", "aws-chunked")
	r.Header.Set("X-Amz-Decoded-Content-Length", "66560")
	r.Header.Set("Content-Length", "66824")
	r.Header.Set("X-Amz-Content-Sha256", StreamingSigned)
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
	return r
}

var docChunkSigs = [3]string{
	"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
	"0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
	"b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
}

func readPayload(t *testing.T, r *http.Request) ([]byte, error) {
	t.Helper()
	a, err := docVerifier(docTime).Verify(context.Background(), r)
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	p, err := Body(a, r)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return io.ReadAll(p)
}

func TestChunkedDocVector(t *testing.T) {
	got, err := readPayload(t, chunkedDocRequest(docChunkSigs))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != strings.Repeat("a", 66560) {
		t.Fatalf("decoded %d bytes", len(got))
	}
	for i := range docChunkSigs {
		bad := docChunkSigs
		bad[i] = strings.Repeat("0", 64)
		if _, err := readPayload(t, chunkedDocRequest(bad)); !errors.Is(err, ErrChunkSignature) {
			t.Fatalf("tampered chunk %d: got %v", i, err)
		}
	}
}

func TestChunkedTamperedData(t *testing.T) {
	r := chunkedDocRequest(docChunkSigs)
	b, _ := io.ReadAll(r.Body)
	i := bytes.Index(b, []byte("\r\naaaa")) + 10
	b[i] = 'b'
	r.Body = io.NopCloser(bytes.NewReader(b))
	if _, err := readPayload(t, r); !errors.Is(err, ErrChunkSignature) {
		t.Fatalf("got %v", err)
	}
}

func TestChunkedTruncated(t *testing.T) {
	r := chunkedDocRequest(docChunkSigs)
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b[:40000]))
	if _, err := readPayload(t, r); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v", err)
	}
}

func TestUnsignedTrailer(t *testing.T) {
	body := "5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n"
	r := httptest.NewRequest("PUT", "http://h/b/k", strings.NewReader(body))
	r.Header.Set("X-Amz-Content-Sha256", StreamingUnsignedTrailer)
	r.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
	r.Header.Set("X-Amz-Decoded-Content-Length", "5")
	p, err := Body(&Auth{ContentSHA256: StreamingUnsignedTrailer}, r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(p)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
	if v, ok := p.Trailer("x-amz-checksum-crc32"); !ok || v != "NhCmhg==" {
		t.Fatalf("trailer %q %v", v, ok)
	}
	// An undeclared trailer is refused.
	r = httptest.NewRequest("PUT", "http://h/b/k", strings.NewReader(body))
	r.Header.Set("X-Amz-Trailer", "x-amz-checksum-sha256")
	p, _ = Body(&Auth{ContentSHA256: StreamingUnsignedTrailer}, r)
	if _, err := io.ReadAll(p); !errors.Is(err, ErrTrailer) {
		t.Fatalf("undeclared: %v", err)
	}
	// Wrong decoded length.
	r = httptest.NewRequest("PUT", "http://h/b/k", strings.NewReader(body))
	r.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
	r.Header.Set("X-Amz-Decoded-Content-Length", "6")
	p, _ = Body(&Auth{ContentSHA256: StreamingUnsignedTrailer}, r)
	if _, err := io.ReadAll(p); !errors.Is(err, ErrDecodedLength) {
		t.Fatalf("length: %v", err)
	}
}

func TestSignedDigestPayload(t *testing.T) {
	r := httptest.NewRequest("PUT", "http://h/b/k", strings.NewReader("not empty"))
	p, err := Body(&Auth{ContentSHA256: emptySHA256}, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(p); !errors.Is(err, ErrContentSHA256) {
		t.Fatalf("got %v", err)
	}
}

func TestURIEncode(t *testing.T) {
	if got := uriEncode("/a b/c~d/é+", false); got != "/a%20b/c~d/%C3%A9%2B" {
		t.Fatal(got)
	}
	if got := canonicalQuery("b=2&a=1&a=0&X-Amz-Signature=x&c", true); got != "a=0&a=1&b=2&c=" {
		t.Fatal(got)
	}
}
