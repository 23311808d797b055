package s3

import (
	"crypto/md5" //nolint:gosec // MD5 is the S3 ETag and Content-MD5, not a security measure.
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"

	"shoal/services/s3/checksum"
	"shoal/services/s3/s3err"
	"shoal/services/s3/sigv4"
)

// bodyReader streams an upload once, computing its MD5 and any requested
// checksums on the way, and turns the final io.EOF into an error when a
// digest does not match or the size limit is crossed. DataStore.Write fails
// on that error, so bad uploads are never committed.
type bodyReader struct {
	p        *sigv4.Payload
	md5      hash.Hash
	sums     map[checksum.Algorithm]hash.Hash
	want     map[checksum.Algorithm]string // from headers
	trailed  []checksum.Algorithm          // expected in trailers
	wantMD5  []byte
	n, limit int64
	err      error
}

// uploadSize returns the declared payload size, checking it against limit.
func uploadSize(r *http.Request, streaming bool, limit int64) (int64, error) {
	size := r.ContentLength
	if streaming {
		size = -1
		if v := r.Header.Get("X-Amz-Decoded-Content-Length"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return 0, s3err.Newf(s3err.InvalidArgument, "invalid x-amz-decoded-content-length")
			}
			size = n
		}
	} else if size < 0 {
		return 0, s3err.New(s3err.MissingContentLength)
	}
	if size > limit {
		return 0, s3err.New(s3err.EntityTooLarge)
	}
	return size, nil
}

func (q *request) newBody(limit int64) (*bodyReader, error) {
	p, err := q.payload()
	if err != nil {
		return nil, err
	}
	h := q.r.Header
	br := &bodyReader{p: p, md5: md5.New(), sums: map[checksum.Algorithm]hash.Hash{},
		want: map[checksum.Algorithm]string{}, limit: limit}
	if v := h.Get("Content-MD5"); v != "" {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(b) != md5.Size {
			return nil, s3err.New(s3err.InvalidDigest)
		}
		br.wantMD5 = b
	}
	for _, a := range checksum.All {
		if v := h.Get(a.Header()); v != "" {
			if !a.Valid(v) {
				return nil, s3err.Newf(s3err.InvalidRequest, "Value for %s header is invalid.", a.Header())
			}
			br.want[a] = v
			br.sums[a] = a.New()
		}
	}
	for _, name := range p.DeclaredTrailers() {
		a, ok := checksum.FromHeader(name)
		if !ok {
			return nil, s3err.Newf(s3err.InvalidRequest, "unsupported trailer %q", name)
		}
		br.trailed = append(br.trailed, a)
		br.sums[a] = a.New()
	}
	for _, hn := range []string{"X-Amz-Sdk-Checksum-Algorithm", "X-Amz-Checksum-Algorithm"} {
		if v := h.Get(hn); v != "" {
			a, ok := checksum.Parse(v)
			if !ok {
				return nil, s3err.Newf(s3err.InvalidRequest, "unsupported checksum algorithm %q", v)
			}
			if br.sums[a] == nil {
				br.sums[a] = a.New()
			}
		}
	}
	if len(br.sums) > 2 {
		return nil, s3err.Newf(s3err.InvalidRequest, "Expecting a single x-amz-checksum- header")
	}
	return br, nil
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.p.Read(p)
	b.md5.Write(p[:n])
	for _, h := range b.sums {
		h.Write(p[:n])
	}
	b.n += int64(n)
	if b.n > b.limit {
		b.err = s3err.New(s3err.EntityTooLarge)
		return 0, b.err
	}
	if errors.Is(err, io.EOF) {
		err = b.finish()
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *bodyReader) finish() error {
	if b.wantMD5 != nil && string(b.md5.Sum(nil)) != string(b.wantMD5) {
		return s3err.New(s3err.BadDigest)
	}
	for a, v := range b.want {
		if checksum.Encode(b.sums[a].Sum(nil)) != v {
			return s3err.Newf(s3err.ChecksumMismatch, "The %s you specified did not match the calculated checksum.", a.Name())
		}
	}
	for _, a := range b.trailed {
		v, ok := b.p.Trailer(a.Header())
		if !ok {
			return s3err.Newf(s3err.InvalidRequest, "missing trailer %s", a.Header())
		}
		if checksum.Encode(b.sums[a].Sum(nil)) != v {
			return s3err.Newf(s3err.ChecksumMismatch, "The %s you specified did not match the calculated checksum.", a.Name())
		}
	}
	return io.EOF
}

func (b *bodyReader) etag() string { return hex.EncodeToString(b.md5.Sum(nil)) }

func (b *bodyReader) checksums() map[string]string {
	if len(b.sums) == 0 {
		return nil
	}
	m := make(map[string]string, len(b.sums))
	for a, h := range b.sums {
		m[a.Name()] = checksum.Encode(h.Sum(nil))
	}
	return m
}

// checkContentMD5 validates Content-MD5 for small buffered bodies.
func checkContentMD5(v string, body []byte) error {
	if v == "" {
		return nil
	}
	want, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(want) != md5.Size {
		return s3err.New(s3err.InvalidDigest)
	}
	got := md5.Sum(body) //nolint:gosec // see import
	if string(got[:]) != string(want) {
		return s3err.New(s3err.BadDigest)
	}
	return nil
}

// storedHeaders are kept with the object and returned on GET/HEAD.
var storedHeaders = []string{"Content-Type", "Content-Encoding", "Content-Disposition",
	"Content-Language", "Cache-Control", "Expires", "X-Amz-Website-Redirect-Location"}

// objectHeaders collects the headers to store from a request.
func objectHeaders(h http.Header) (map[string]string, error) {
	m := map[string]string{}
	for _, k := range storedHeaders {
		v := h.Get(k)
		if k == "Content-Encoding" {
			v = stripAWSChunked(v)
		}
		if v != "" {
			m[strings.ToLower(k)] = v
		}
	}
	metaSize := 0
	for k, vs := range h {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-amz-meta-") {
			v := strings.Join(vs, ",")
			m[lk] = v
			metaSize += len(lk) - len("x-amz-meta-") + len(v)
		}
	}
	if metaSize > maxUserMeta {
		return nil, s3err.New(s3err.MetadataTooLarge)
	}
	switch sc := h.Get("X-Amz-Storage-Class"); sc {
	case "", "STANDARD":
	case "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR":
		m["x-amz-storage-class"] = sc
	default:
		return nil, s3err.New(s3err.InvalidStorageClass)
	}
	return m, nil
}

// stripAWSChunked drops the aws-chunked transfer coding clients add to
// Content-Encoding; it describes the request, not the object.
func stripAWSChunked(v string) string {
	if v == "" {
		return ""
	}
	var keep []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" && !strings.EqualFold(p, "aws-chunked") {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, ",")
}
