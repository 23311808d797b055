package s3

import (
	"context"
	"crypto/md5" //nolint:gosec // ETags are MD5 by protocol.
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"shoal/services/s3/checksum"
	"shoal/services/s3/s3err"
)

// maxEntryBytes bounds one key's index entry (all its versions), so a key
// with endless versions cannot make its shard unsplittable.
const maxEntryBytes = 64 << 10

func quote(etag string) string { return `"` + etag + `"` }

func unquote(etag string) string { return strings.Trim(strings.TrimSpace(etag), `"`) }

// commit puts v as the newest version of key, atomically with cond (checked
// against the current latest live version, nil if none). It returns the
// committed version.
//
// fn may run again on a shard that already holds this write: Paxos
// completes an attempt that reached some acceptors before the retry runs
// fn on top of it (carry-forward). A run that finds its own version
// changes nothing and reports the versions the inserting run displaced;
// otherwise it would fail its own If-None-Match, add a second version, or
// release the data it just wrote as an "older" null version.
func (q *request) commit(b *bucket, key string, v *objVersion, cond func(cur *objVersion) error) (*objVersion, error) {
	var removed []*objVersion
	var out *objVersion
	err := b.objects.update(q.ctx, key, func(cur []byte, found bool) ([]byte, bool, error) {
		e := &objEntry{}
		if found {
			var err error
			if e, err = decodeEntry(cur); err != nil {
				return nil, false, err
			}
		}
		if mine := e.written(v); mine != nil {
			out = mine
			return cur, true, nil
		}
		if cond != nil {
			var live *objVersion
			if l := e.latest(); l != nil && !l.Del {
				live = l
			}
			if err := cond(live); err != nil {
				return nil, false, err
			}
		}
		nv := *v
		removed = putVersion(e, &nv, b.info.Versioning)
		out = &nv
		enc := e.encode()
		if len(enc) > maxEntryBytes {
			return nil, false, s3err.Newf(s3err.InvalidRequest, "too many versions of this key")
		}
		return enc, true, nil
	})
	if err != nil {
		return nil, err
	}
	for _, r := range removed {
		q.s.releaseVersion(q.ctx, r)
	}
	return out, nil
}

// notCommitted reports whether a commit error means the version was surely
// not written: its own checks refused it (an S3 error) or the bucket is
// gone. Any other error (a timeout, no quorum) leaves the outcome unknown:
// the write may still be decided, so what it references must stay, at
// worst leaking, never freed under a live version.
func notCommitted(err error) bool {
	var se *s3err.Error
	return errors.As(err, &se) || errors.Is(err, errIndexGone)
}

// putConditions implements conditional writes (If-Match / If-None-Match: *).
func putConditions(h http.Header) func(cur *objVersion) error {
	im, inm := h.Get("If-Match"), h.Get("If-None-Match")
	if im == "" && inm == "" {
		return nil
	}
	return func(cur *objVersion) error {
		if inm != "" && cur != nil && etagMatches(inm, cur.ETag) {
			return s3err.New(s3err.PreconditionFailed)
		}
		if im != "" && (cur == nil || !etagMatches(im, cur.ETag)) {
			if cur == nil {
				return s3err.New(s3err.NoSuchKey)
			}
			return s3err.New(s3err.PreconditionFailed)
		}
		return nil
	}
}

func (q *request) putObject() error {
	s := q.s
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	hdr, err := objectHeaders(q.r.Header)
	if err != nil {
		return err
	}
	limit := min(int64(maxSinglePut), s.cfg.MaxObjectSize)
	if _, err := uploadSize(q.r, q.auth != nil && q.auth.IsStreaming(), limit); err != nil {
		return err
	}
	body, err := q.newBody(limit)
	if err != nil {
		return err
	}
	ref, size, err := s.data.Write(q.ctx, q.bucket, b.info.Policy, body)
	q.in = body.n
	if err != nil {
		return err
	}
	v := &objVersion{Mod: s.now().UnixNano(), Size: size, ETag: body.etag(),
		Segs: []segment{{Ref: ref, Len: size}}, Hdr: hdr, Sums: body.checksums(), Owner: q.user}
	nv, err := q.commit(b, q.key, v, putConditions(q.r.Header))
	if err != nil {
		if notCommitted(err) {
			_ = s.data.Release(q.ctx, ref)
		} else {
			s.log.WarnContext(q.ctx, "s3: put: index write outcome unknown; its data is kept", "bucket", q.bucket, "key", q.key, "err", err)
		}
		return err
	}
	h := q.w.Header()
	h.Set("ETag", quote(nv.ETag))
	if id := versionHeader(nv, b.info.Versioning); id != "" {
		h.Set("X-Amz-Version-Id", id)
	}
	for name, val := range nv.Sums {
		a, _ := checksum.Parse(name)
		h.Set(a.Header(), val)
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

// findVersion returns the requested version of key. A missing key, or a
// latest version that is a delete marker, is NoSuchKey.
//
// With shared set, the version may be shared with other requests and must
// not be modified (reads: GET and HEAD); otherwise it is the caller's own.
func (q *request) findVersion(b *bucket, key, versionID string, shared bool) (*objVersion, error) {
	if !validVersionID(versionID) {
		return nil, errBadVersionID
	}
	var e *objEntry
	var found bool
	var err error
	if shared {
		var v any
		v, found, err = b.objects.getDecoded(q.ctx, key, func(raw []byte) (any, error) { return decodeEntry(raw) })
		e, _ = v.(*objEntry)
	} else {
		var raw []byte
		if raw, found, err = b.objects.get(q.ctx, key); err == nil && found {
			e, err = decodeEntry(raw)
		}
	}
	if err != nil {
		return nil, err
	}
	if !found {
		if versionID != "" {
			return nil, s3err.New(s3err.NoSuchVersion)
		}
		return nil, s3err.New(s3err.NoSuchKey)
	}
	if versionID != "" {
		_, v := e.find(versionID)
		if v == nil {
			return nil, s3err.New(s3err.NoSuchVersion)
		}
		if v.Del {
			q.w.Header().Set("X-Amz-Delete-Marker", "true")
			q.w.Header().Set("X-Amz-Version-Id", versionHeader(v, b.info.Versioning))
			q.w.Header().Set("Last-Modified", v.modTime().Format(http.TimeFormat))
			return nil, s3err.New(s3err.MethodNotAllowed)
		}
		return v, nil
	}
	v := e.latest()
	if v == nil {
		return nil, s3err.New(s3err.NoSuchKey)
	}
	if v.Del {
		q.w.Header().Set("X-Amz-Delete-Marker", "true")
		q.w.Header().Set("X-Amz-Version-Id", versionHeader(v, b.info.Versioning))
		return nil, s3err.New(s3err.NoSuchKey)
	}
	return v, nil
}

func etagMatches(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		t = strings.TrimPrefix(t, "W/")
		if t == "*" || unquote(t) == etag {
			return true
		}
	}
	return false
}

// checkConditions applies If-Match, If-Unmodified-Since, If-None-Match and
// If-Modified-Since in the order RFC 9110 and S3 use.
func checkConditions(h http.Header, v *objVersion, prefix string, copySource bool) error {
	im, ius := h.Get(prefix+"If-Match"), h.Get(prefix+"If-Unmodified-Since")
	inm, ims := h.Get(prefix+"If-None-Match"), h.Get(prefix+"If-Modified-Since")
	if im == "" && ius == "" && inm == "" && ims == "" {
		return nil // most requests: nothing to check, no date to parse
	}
	mod := v.modTime().Truncate(time.Second)
	fail := s3err.New(s3err.PreconditionFailed)
	notModified := s3err.New(s3err.NotModified)
	if copySource {
		notModified = fail
	}
	if im != "" {
		if !etagMatches(im, v.ETag) {
			return fail
		}
	} else if ius != "" {
		if t, err := http.ParseTime(ius); err == nil && mod.After(t) {
			return fail
		}
	}
	if inm != "" {
		if etagMatches(inm, v.ETag) {
			return notModified
		}
	} else if ims != "" {
		if t, err := http.ParseTime(ims); err == nil && !mod.After(t) {
			return notModified
		}
	}
	return nil
}

// parseRange parses a single byte range. ok=false means "serve the whole
// object" (no header, or one we ignore as RFC 9110 allows).
func parseRange(h string, size int64) (start, length int64, ok bool, err error) {
	spec, found := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if h == "" || !found || strings.Contains(spec, ",") {
		return 0, 0, false, nil
	}
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false, nil
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	invalid := s3err.New(s3err.InvalidRange)
	if first == "" { // suffix: last N bytes
		n, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || n < 0 {
			return 0, 0, false, nil
		}
		if n == 0 || size == 0 {
			return 0, 0, false, invalid
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	a, perr := strconv.ParseInt(first, 10, 64)
	if perr != nil || a < 0 {
		return 0, 0, false, nil
	}
	end := size - 1
	if last != "" {
		e, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || e < a {
			return 0, 0, false, nil
		}
		end = min(e, size-1)
	}
	if a >= size {
		return 0, 0, false, invalid
	}
	return a, end - a + 1, true, nil
}

func (q *request) getObject() error  { return q.readObject(true) }
func (q *request) headObject() error { return q.readObject(false) }

var responseOverrides = map[string]string{
	"response-content-type":        "Content-Type",
	"response-content-language":    "Content-Language",
	"response-expires":             "Expires",
	"response-cache-control":       "Cache-Control",
	"response-content-disposition": "Content-Disposition",
	"response-content-encoding":    "Content-Encoding",
}

func (q *request) readObject(withBody bool) error {
	s := q.s
	// The overrides become response headers, where a control character
	// would break the response for the client.
	for qk := range responseOverrides {
		if val := q.query(qk); !httpguts.ValidHeaderFieldValue(val) {
			return s3err.Newf(s3err.InvalidArgument, "%s is not a valid header value", qk)
		}
	}
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	if q.key == "" {
		return s3err.New(s3err.NoSuchKey)
	}
	v, err := q.findVersion(b, q.key, q.query("versionId"), true)
	if err != nil {
		return err
	}
	h := q.w.Header()
	h.Set("ETag", quote(v.ETag))
	h.Set("Last-Modified", v.modTime().Format(http.TimeFormat))
	if id := versionHeader(v, b.info.Versioning); id != "" {
		h.Set("X-Amz-Version-Id", id)
	}
	if err := checkConditions(q.r.Header, v, "", false); err != nil {
		return err
	}
	segs, parts, err := s.loadSegs(q.ctx, v)
	if err != nil {
		return err
	}
	start, length, partial := int64(0), v.Size, false
	if pn := q.query("partNumber"); pn != "" {
		n, perr := strconv.Atoi(pn)
		if perr != nil || n < 1 || n > maxParts {
			return s3err.Newf(s3err.InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive")
		}
		if len(parts) == 0 { // a simple object is one part
			if n != 1 {
				return s3err.New(s3err.InvalidRange)
			}
		} else {
			if n > len(parts) {
				return s3err.New(s3err.InvalidRange)
			}
			for _, p := range parts[:n-1] {
				start += p
			}
			length, partial = parts[n-1], true
			h.Set("X-Amz-Mp-Parts-Count", strconv.Itoa(len(parts)))
		}
	} else {
		var ok bool
		start, length, ok, err = parseRange(q.r.Header.Get("Range"), v.Size)
		if err != nil {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", v.Size))
			return err
		}
		if !ok {
			start, length = 0, v.Size
		} else {
			partial = true
		}
	}
	for k, val := range v.Hdr {
		if strings.HasPrefix(k, "x-amz-meta-") {
			// As AWS sends them: lower case. Clients that keep the header's
			// case (botocore) would otherwise report "Color" for "color".
			h[k] = []string{val}
			continue
		}
		h.Set(k, val)
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "binary/octet-stream")
	}
	for qk, hk := range responseOverrides {
		if val := q.query(qk); val != "" {
			h.Set(hk, val)
		}
	}
	if strings.EqualFold(q.r.Header.Get("X-Amz-Checksum-Mode"), "ENABLED") && !partial {
		for name, val := range v.Sums {
			if a, ok := checksum.Parse(name); ok {
				h.Set(a.Header(), val)
			}
		}
	}
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	status := http.StatusOK
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, v.Size))
		status = http.StatusPartialContent
	}
	if !withBody || length == 0 {
		q.w.WriteHeader(status)
		return nil
	}
	// Open the first piece before committing to a status, so a missing
	// data reference is reported as an error rather than a short body.
	rd := &segReader{ctx: q.ctx, data: s.data, pieces: slicePieces(segs, start, length)}
	if err := rd.open(); err != nil {
		return err
	}
	defer rd.Close()
	q.w.WriteHeader(status)
	buf := make([]byte, max(1, min(256<<10, length)))
	if _, err := io.CopyBuffer(q.w, rd, buf); err != nil {
		// Headers are out; the short body tells the client. Log for us.
		s.log.WarnContext(q.ctx, "s3: get: stream aborted", "bucket", q.bucket, "key", q.key, "err", err)
	}
	return nil
}

// slicePieces maps [start, start+length) of an object onto its segments.
func slicePieces(segs []segment, start, length int64) []segment {
	var out []segment
	pos := int64(0)
	end := start + length
	for _, sg := range segs {
		sEnd := pos + sg.Len
		if sEnd > start && pos < end {
			from := max(start, pos) - pos
			to := min(end, sEnd) - pos
			out = append(out, segment{Ref: sg.Ref, Off: sg.Off + from, Len: to - from})
		}
		pos = sEnd
		if pos >= end {
			break
		}
	}
	return out
}

// segReader reads pieces one after another, opening each lazily.
type segReader struct {
	ctx    context.Context
	data   DataStore
	pieces []segment
	cur    io.ReadCloser
	left   int64
}

func (r *segReader) open() error {
	if len(r.pieces) == 0 {
		return io.EOF
	}
	p := r.pieces[0]
	r.pieces = r.pieces[1:]
	rc, err := r.data.Read(r.ctx, p.Ref, p.Off, p.Len)
	if err != nil {
		return fmt.Errorf("s3: read data: %w", err)
	}
	r.cur, r.left = rc, p.Len
	return nil
}

func (r *segReader) Read(b []byte) (int, error) {
	for {
		if r.cur == nil {
			if err := r.open(); err != nil {
				return 0, err
			}
		}
		if r.left > 0 {
			if int64(len(b)) > r.left {
				b = b[:r.left]
			}
			n, err := r.cur.Read(b)
			r.left -= int64(n)
			if errors.Is(err, io.EOF) && r.left > 0 {
				return n, fmt.Errorf("s3: data shorter than recorded: %w", io.ErrUnexpectedEOF)
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return n, err
			}
			if n > 0 {
				return n, nil
			}
		}
		_ = r.cur.Close()
		r.cur = nil
	}
}

// WriteTo passes each piece to w as its reader hands it over: a dedup
// read gives whole chunks (its own WriteTo), where io.CopyBuffer would
// copy every byte through a buffer first.
func (r *segReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if r.cur == nil {
			if err := r.open(); errors.Is(err, io.EOF) {
				return total, nil
			} else if err != nil {
				return total, err
			}
		}
		n, err := io.Copy(&limitWriter{w: w, left: r.left}, r.cur)
		total += n
		r.left -= n
		if err != nil {
			return total, err
		}
		if r.left > 0 {
			return total, fmt.Errorf("s3: data shorter than recorded: %w", io.ErrUnexpectedEOF)
		}
		_ = r.cur.Close()
		r.cur = nil
	}
}

// limitWriter refuses bytes past left: a piece's data longer than its
// recorded length is an error, not more of the body.
type limitWriter struct {
	w    io.Writer
	left int64
}

var errDataLonger = errors.New("s3: data longer than recorded")

func (l *limitWriter) Write(p []byte) (int, error) {
	over := int64(len(p)) > l.left
	if over {
		p = p[:l.left]
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	if over && err == nil {
		err = errDataLonger
	}
	return n, err
}

func (r *segReader) Close() error {
	if r.cur != nil {
		return r.cur.Close()
	}
	return nil
}

func (q *request) deleteObject() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	res, err := q.deleteKey(b, q.key, q.query("versionId"))
	if err != nil {
		return err
	}
	h := q.w.Header()
	if res.DeleteMarker {
		h.Set("X-Amz-Delete-Marker", "true")
	}
	if res.VersionID != "" {
		h.Set("X-Amz-Version-Id", res.VersionID)
	} else if res.DeleteMarkerVersionID != "" {
		h.Set("X-Amz-Version-Id", res.DeleteMarkerVersionID)
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteKey deletes one key or version. Deleting what does not exist
// succeeds, as in S3.
func (q *request) deleteKey(b *bucket, key, versionID string) (deletedXML, error) {
	if !validVersionID(versionID) {
		return deletedXML{}, errBadVersionID
	}
	res := deletedXML{Key: key}
	if key == "" {
		return res, s3err.New(s3err.InvalidObjectName)
	}
	vstate := b.info.Versioning
	var removed []*objVersion
	err := b.objects.update(q.ctx, key, func(cur []byte, found bool) ([]byte, bool, error) {
		removed = nil
		res = deletedXML{Key: key}
		e := &objEntry{}
		if found {
			var err error
			if e, err = decodeEntry(cur); err != nil {
				return nil, false, err
			}
		}
		switch {
		case versionID != "":
			i, v := e.find(versionID)
			res.VersionID = versionID
			if v == nil {
				return cur, found, nil
			}
			res.DeleteMarker = v.Del
			removed = append(removed, v)
			e.V = append(e.V[:i], e.V[i+1:]...)
		case vstate == "":
			removed, e.V = e.V, nil
		default:
			m := &objVersion{Del: true, Mod: q.s.now().UnixNano(), Owner: q.user}
			removed = putVersion(e, m, vstate)
			res.DeleteMarker = true
			res.DeleteMarkerVersionID = versionHeader(m, vstate)
		}
		if len(e.V) == 0 {
			return nil, false, nil
		}
		return e.encode(), true, nil
	})
	if err != nil {
		return res, err
	}
	for _, v := range removed {
		q.s.releaseVersion(q.ctx, v)
	}
	return res, nil
}

func (q *request) deleteObjects() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	var req deleteRequest
	if err := q.readXML(&req); err != nil {
		return err
	}
	if len(req.Objects) == 0 || len(req.Objects) > 1000 {
		return s3err.Newf(s3err.MalformedXML, "a Delete request holds 1 to 1000 objects")
	}
	res := deleteResult{Xmlns: s3NS}
	for _, o := range req.Objects {
		var d deletedXML
		var err error
		switch {
		case o.Key == "" || len(o.Key) > maxKeyLen || strings.ContainsRune(o.Key, 0):
			err = s3err.New(s3err.InvalidObjectName)
		default:
			d, err = q.deleteKey(b, o.Key, o.VersionID)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			e := s3Error(err)
			if e.Code == s3err.InternalError {
				q.s.log.ErrorContext(q.ctx, "s3: delete objects", "key", o.Key, "err", err)
			}
			res.Errors = append(res.Errors, deleteErrorXML{Key: o.Key, VersionID: o.VersionID,
				Code: e.Code.Name(), Message: e.Message()})
			continue
		}
		if !req.Quiet {
			res.Deleted = append(res.Deleted, d)
		}
	}
	return q.writeXML(http.StatusOK, res)
}

// parseCopySource splits x-amz-copy-source: [/]bucket/key[?versionId=id].
func parseCopySource(h string) (bucket, key, versionID string, err error) {
	raw, query, _ := strings.Cut(h, "?")
	if query != "" {
		vals, perr := url.ParseQuery(query)
		if perr != nil {
			return "", "", "", s3err.Newf(s3err.InvalidArgument, "invalid x-amz-copy-source")
		}
		versionID = vals.Get("versionId")
	}
	path, perr := url.PathUnescape(raw)
	if perr != nil {
		return "", "", "", s3err.Newf(s3err.InvalidArgument, "invalid x-amz-copy-source")
	}
	path = strings.TrimPrefix(path, "/")
	bucket, key, _ = strings.Cut(path, "/")
	if bucket == "" || key == "" || len(key) > maxKeyLen || strings.ContainsRune(key, 0) {
		return "", "", "", s3err.Newf(s3err.InvalidArgument, "Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
	}
	return bucket, key, versionID, nil
}

// copySource loads and checks the source of a copy.
func (q *request) copySource() (*bucket, *objVersion, error) {
	sb, sk, sv, err := parseCopySource(q.r.Header.Get("X-Amz-Copy-Source"))
	if err != nil {
		return nil, nil, err
	}
	src, err := q.s.loadBucket(q.ctx, sb)
	if err != nil {
		return nil, nil, err
	}
	v, err := q.findVersion(src, sk, sv, false)
	if err != nil {
		q.w.Header().Del("X-Amz-Delete-Marker")
		return nil, nil, err
	}
	if err := checkConditions(q.r.Header, v, "X-Amz-Copy-Source-", true); err != nil {
		return nil, nil, err
	}
	if id := versionHeader(v, src.info.Versioning); id != "" {
		q.w.Header().Set("X-Amz-Copy-Source-Version-Id", id)
	}
	return src, v, nil
}

func (q *request) copyObject() error {
	s := q.s
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	src, sv, err := q.copySource()
	if err != nil {
		return err
	}
	directive := strings.ToUpper(q.r.Header.Get("X-Amz-Metadata-Directive"))
	if directive != "" && directive != "COPY" && directive != "REPLACE" {
		return s3err.Newf(s3err.InvalidArgument, "Unknown metadata directive.")
	}
	sameObject := src.info.Name == b.info.Name && q.key == strings.SplitN(strings.TrimPrefix(mustUnescape(q.r.Header.Get("X-Amz-Copy-Source")), "/"), "/", 2)[1]
	if sameObject && directive != "REPLACE" && q.r.Header.Get("X-Amz-Storage-Class") == "" {
		return s3err.Newf(s3err.InvalidRequest, "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.")
	}
	if sv.Size > s.cfg.MaxObjectSize {
		return s3err.New(s3err.EntityTooLarge)
	}
	segs, parts, err := s.loadSegs(q.ctx, sv)
	if err != nil {
		return err
	}
	hdr := sv.Hdr
	if directive == "REPLACE" {
		if hdr, err = objectHeaders(q.r.Header); err != nil {
			return err
		}
	}
	if err := s.retainSegs(q.ctx, segs); err != nil {
		return err
	}
	now := s.now()
	v := &objVersion{Mod: now.UnixNano(), Size: sv.Size, ETag: sv.ETag,
		Segs: append([]segment(nil), segs...), Parts: parts, Hdr: hdr, Sums: sv.Sums, Owner: q.user}
	if err := s.storeSegs(q.ctx, v); err != nil {
		return err
	}
	nv, err := q.commit(b, q.key, v, nil)
	if err != nil {
		if notCommitted(err) {
			q.s.releaseVersion(q.ctx, v)
		} else {
			s.log.WarnContext(q.ctx, "s3: copy: index write outcome unknown; its data is kept", "bucket", q.bucket, "key", q.key, "err", err)
		}
		return err
	}
	if id := versionHeader(nv, b.info.Versioning); id != "" {
		q.w.Header().Set("X-Amz-Version-Id", id)
	}
	return q.writeXML(http.StatusOK, copyObjectResult{Xmlns: s3NS, LastModified: isoTime(now), ETag: quote(nv.ETag)})
}

func mustUnescape(s string) string {
	raw, _, _ := strings.Cut(s, "?")
	if u, err := url.PathUnescape(raw); err == nil {
		return u
	}
	return raw
}

// partETag is the ETag of a part made by copying a range: the S3 ETag would
// be the MD5 of the bytes, which we do not read. Clients only echo part
// ETags back, so a digest unique to (source, range) is enough.
func partETag(srcETag string, start, length int64) string {
	sum := md5.Sum([]byte(fmt.Sprintf("%s:%d:%d", srcETag, start, length))) //nolint:gosec // see import
	return hex.EncodeToString(sum[:])
}
