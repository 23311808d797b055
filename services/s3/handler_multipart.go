package s3

import (
	"crypto/md5" //nolint:gosec // multipart ETags are MD5 by protocol.
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"shoal/services/s3/checksum"
	"shoal/services/s3/s3err"
)

// Uploads live in the bucket's upload index: the upload under
// key\x00uploadID and its parts under key\x00uploadID\x01NNNNN, so parts
// of a 10,000-part upload are sharded like any other keys and an upload's
// parts are one contiguous range.
type uploadRec struct {
	Initiated int64             `json:"t"`
	Owner     string            `json:"o"`
	Hdr       map[string]string `json:"h,omitempty"`
	Algo      string            `json:"a,omitempty"`
}

type partRec struct {
	ETag string            `json:"e"`
	Size int64             `json:"s"`
	Mod  int64             `json:"m"`
	Segs []segment         `json:"g"`
	Sums map[string]string `json:"c,omitempty"`
}

// maxPartSegs bounds the segments of one part (copies of fragmented
// sources), keeping part records small.
const maxPartSegs = 64

func uploadKey(key, id string) string { return key + "\x00" + id }

func partKey(key, id string, n int) string { return fmt.Sprintf("%s\x00%s\x01%05d", key, id, n) }

func validUploadID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// loadUpload returns the upload named by the uploadId parameter.
func (q *request) loadUpload(b *bucket) (string, *uploadRec, error) {
	id := q.query("uploadId")
	if !validUploadID(id) {
		return "", nil, s3err.New(s3err.NoSuchUpload)
	}
	raw, found, err := b.uploads.get(q.ctx, uploadKey(q.key, id))
	if err != nil {
		return "", nil, err
	}
	if !found {
		return "", nil, s3err.New(s3err.NoSuchUpload)
	}
	u := &uploadRec{}
	if err := json.Unmarshal(raw, u); err != nil {
		return "", nil, fmt.Errorf("%w: upload: %v", errCorruptMeta, err)
	}
	return id, u, nil
}

func (q *request) createUpload() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	hdr, err := objectHeaders(q.r.Header)
	if err != nil {
		return err
	}
	u := uploadRec{Initiated: q.s.now().UnixNano(), Owner: q.user, Hdr: hdr}
	if v := q.r.Header.Get("X-Amz-Checksum-Algorithm"); v != "" {
		a, ok := checksum.Parse(v)
		if !ok {
			return s3err.Newf(s3err.InvalidRequest, "unsupported checksum algorithm %q", v)
		}
		u.Algo = a.Name()
	}
	id := newVersionID()
	raw, _ := json.Marshal(u)
	err = b.uploads.update(q.ctx, uploadKey(q.key, id), func(_ []byte, _ bool) ([]byte, bool, error) {
		return raw, true, nil
	})
	if err != nil {
		return err
	}
	if u.Algo != "" {
		q.w.Header().Set("X-Amz-Checksum-Algorithm", u.Algo)
	}
	return q.writeXML(http.StatusOK, initiateUploadResult{Xmlns: s3NS, Bucket: q.bucket, Key: q.key, UploadID: id})
}

func (q *request) partNumber() (int, error) {
	n, err := strconv.Atoi(q.query("partNumber"))
	if err != nil || n < 1 || n > maxParts {
		return 0, s3err.Newf(s3err.InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive")
	}
	return n, nil
}

// putPart stores a part record and releases the one it replaces. If the
// upload vanished meanwhile (aborted or completed), the part is taken back.
func (q *request) putPart(b *bucket, id string, n int, p *partRec) error {
	raw, _ := json.Marshal(p)
	var old *partRec
	err := b.uploads.update(q.ctx, partKey(q.key, id, n), func(cur []byte, found bool) ([]byte, bool, error) {
		old = nil
		if found {
			old = &partRec{}
			if err := json.Unmarshal(cur, old); err != nil {
				old = nil
			}
		}
		return raw, true, nil
	})
	if err != nil {
		return err
	}
	if old != nil {
		q.s.releaseSegs(q, old.Segs)
	}
	if _, found, err := b.uploads.get(q.ctx, uploadKey(q.key, id)); err != nil || !found {
		_, _ = b.uploads.deleteRange(q.ctx, partKey(q.key, id, n), partKey(q.key, id, n)+"\x00")
		q.s.releaseSegs(q, p.Segs)
		if err != nil {
			return err
		}
		return s3err.New(s3err.NoSuchUpload)
	}
	return nil
}

func (s *Server) releaseSegs(q *request, segs []segment) {
	for _, sg := range segs {
		if err := s.data.Release(q.ctx, sg.Ref); err != nil {
			s.log.WarnContext(q.ctx, "s3: release", "err", err)
		}
	}
}

func (q *request) uploadPart() error {
	s := q.s
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	n, err := q.partNumber()
	if err != nil {
		return err
	}
	id, _, err := q.loadUpload(b)
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
	p := &partRec{ETag: body.etag(), Size: size, Mod: s.now().UnixNano(),
		Segs: []segment{{Ref: ref, Len: size}}, Sums: body.checksums()}
	if err := q.putPart(b, id, n, p); err != nil {
		return err
	}
	h := q.w.Header()
	h.Set("ETag", quote(p.ETag))
	for name, val := range p.Sums {
		if a, ok := checksum.Parse(name); ok {
			h.Set(a.Header(), val)
		}
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (q *request) uploadPartCopy() error {
	s := q.s
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	n, err := q.partNumber()
	if err != nil {
		return err
	}
	id, _, err := q.loadUpload(b)
	if err != nil {
		return err
	}
	_, sv, err := q.copySource()
	if err != nil {
		return err
	}
	start, length := int64(0), sv.Size
	if rh := q.r.Header.Get("X-Amz-Copy-Source-Range"); rh != "" {
		var ok bool
		if start, length, ok = parseCopyRange(rh, sv.Size); !ok {
			return s3err.Newf(s3err.InvalidArgument, "Range specified is not valid for source object of size: %d", sv.Size)
		}
	}
	if length > maxSinglePut {
		return s3err.New(s3err.EntityTooLarge)
	}
	segs, _, err := s.loadSegs(q.ctx, sv)
	if err != nil {
		return err
	}
	pieces := slicePieces(segs, start, length)
	if len(pieces) > maxPartSegs {
		return s3err.Newf(s3err.InvalidRequest, "the copy source range spans too many stored segments")
	}
	etag := sv.ETag
	if start != 0 || length != sv.Size || strings.Contains(etag, "-") {
		etag = partETag(sv.ETag, start, length)
	}
	if err := s.retainSegs(q.ctx, pieces); err != nil {
		return err
	}
	now := s.now()
	p := &partRec{ETag: etag, Size: length, Mod: now.UnixNano(), Segs: pieces}
	if err := q.putPart(b, id, n, p); err != nil {
		return err
	}
	return q.writeXML(http.StatusOK, copyPartResult{Xmlns: s3NS, LastModified: isoTime(now), ETag: quote(etag)})
}

// scanParts returns the parts of an upload with numbers > after, in order,
// stopping after limit parts (limit < 0: all).
func (q *request) scanParts(b *bucket, id string, after, limit int) ([]int, []*partRec, bool, error) {
	var nums []int
	var recs []*partRec
	lo := partKey(q.key, id, after+1)
	hi := uploadKey(q.key, id) + "\x02"
	start := lo
	for {
		keys, vals, next, more, err := b.uploads.page(q.ctx, start)
		if err != nil {
			return nil, nil, false, err
		}
		for i, k := range keys {
			if k >= hi {
				return nums, recs, false, nil
			}
			if limit >= 0 && len(nums) == limit {
				return nums, recs, true, nil
			}
			n, err := strconv.Atoi(k[len(k)-5:])
			if err != nil {
				return nil, nil, false, fmt.Errorf("%w: part key", errCorruptMeta)
			}
			p := &partRec{}
			if err := json.Unmarshal(vals[i], p); err != nil {
				return nil, nil, false, fmt.Errorf("%w: part: %v", errCorruptMeta, err)
			}
			nums, recs = append(nums, n), append(recs, p)
		}
		if !more {
			return nums, recs, false, nil
		}
		start = next
	}
}

func (q *request) completeUpload() error {
	s := q.s
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	id, u, err := q.loadUpload(b)
	if err != nil {
		return err
	}
	var req completeUploadRequest
	if err := q.readXML(&req); err != nil {
		return err
	}
	if len(req.Parts) == 0 {
		return s3err.Newf(s3err.MalformedXML, "You must specify at least one part")
	}
	nums, recs, _, err := q.scanParts(b, id, 0, -1)
	if err != nil {
		return err
	}
	have := make(map[int]*partRec, len(nums))
	for i, n := range nums {
		have[n] = recs[i]
	}
	used := make(map[int]bool, len(req.Parts))
	md5s := make([]byte, 0, 16*len(req.Parts))
	v := &objVersion{Mod: s.now().UnixNano(), Hdr: u.Hdr, Owner: q.user}
	prev := 0
	for _, p := range req.Parts {
		if p.PartNumber <= prev {
			return s3err.New(s3err.InvalidPartOrder)
		}
		prev = p.PartNumber
	}
	for i, p := range req.Parts {
		rec := have[p.PartNumber]
		if rec == nil || unquote(p.ETag) != rec.ETag {
			return s3err.New(s3err.InvalidPart)
		}
		if i < len(req.Parts)-1 && rec.Size < s.cfg.MinPartSize {
			return s3err.New(s3err.EntityTooSmall)
		}
		sum, err := hex.DecodeString(rec.ETag)
		if err != nil {
			return s3err.New(s3err.InvalidPart)
		}
		md5s = append(md5s, sum...)
		v.Size += rec.Size
		v.Segs = append(v.Segs, rec.Segs...)
		v.Parts = append(v.Parts, rec.Size)
		used[p.PartNumber] = true
	}
	if v.Size > s.cfg.MaxObjectSize {
		return s3err.New(s3err.EntityTooLarge)
	}
	sum := md5.Sum(md5s) //nolint:gosec // see import
	v.ETag = hex.EncodeToString(sum[:]) + "-" + strconv.Itoa(len(req.Parts))
	if err := s.storeSegs(q.ctx, v); err != nil {
		return err
	}
	// Claim the upload: of concurrent completes/aborts exactly one wins.
	uk := uploadKey(q.key, id)
	var claimed []byte
	err = b.uploads.update(q.ctx, uk, func(cur []byte, found bool) ([]byte, bool, error) {
		if !found {
			return nil, false, s3err.New(s3err.NoSuchUpload)
		}
		claimed = cur
		return nil, false, nil
	})
	if err != nil {
		s.dropSegBlock(q, v)
		return err
	}
	nv, err := q.commit(b, q.key, v, nil)
	if err != nil {
		if !notCommitted(err) {
			// The object may exist: giving the upload back would let an
			// abort free the parts it is made of.
			s.log.WarnContext(q.ctx, "s3: complete: index write outcome unknown; the upload's parts are kept", "bucket", q.bucket, "key", q.key, "err", err)
			return err
		}
		s.dropSegBlock(q, v)
		_ = b.uploads.update(q.ctx, uk, func([]byte, bool) ([]byte, bool, error) { return claimed, true, nil })
		return err
	}
	if _, err := b.uploads.deleteRange(q.ctx, uk, uk+"\x02"); err != nil {
		s.log.WarnContext(q.ctx, "s3: complete: part cleanup", "err", err)
	}
	for i, n := range nums {
		if !used[n] {
			s.releaseSegs(q, recs[i].Segs)
		}
	}
	if vid := versionHeader(nv, b.info.Versioning); vid != "" {
		q.w.Header().Set("X-Amz-Version-Id", vid)
	}
	return q.writeXML(http.StatusOK, completeUploadResult{Xmlns: s3NS,
		Location: "/" + q.bucket + "/" + q.key, Bucket: q.bucket, Key: q.key, ETag: quote(nv.ETag)})
}

func (s *Server) dropSegBlock(q *request, v *objVersion) {
	if v.SegBlock == "" {
		return
	}
	if a, err := parseAddr(v.SegBlock); err == nil {
		_ = s.meta.Delete(q.ctx, a)
	}
}

func (q *request) abortUpload() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	id := q.query("uploadId")
	if !validUploadID(id) {
		return s3err.New(s3err.NoSuchUpload)
	}
	uk := uploadKey(q.key, id)
	err = b.uploads.update(q.ctx, uk, func(_ []byte, found bool) ([]byte, bool, error) {
		if !found {
			return nil, false, s3err.New(s3err.NoSuchUpload)
		}
		return nil, false, nil
	})
	if err != nil {
		return err
	}
	removed, err := b.uploads.deleteRange(q.ctx, uk, uk+"\x02")
	if err != nil {
		return err
	}
	for _, raw := range removed {
		p := &partRec{}
		if json.Unmarshal(raw, p) == nil {
			q.s.releaseSegs(q, p.Segs)
		}
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (q *request) listParts() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	id, u, err := q.loadUpload(b)
	if err != nil {
		return err
	}
	maxParts, err := q.maxKeysParam("max-parts")
	if err != nil {
		return err
	}
	marker := 0
	if v := q.query("part-number-marker"); v != "" {
		if marker, err = strconv.Atoi(v); err != nil || marker < 0 {
			return s3err.Newf(s3err.InvalidArgument, "invalid part-number-marker")
		}
	}
	nums, recs, truncated, err := q.scanParts(b, id, marker, maxParts)
	if err != nil {
		return err
	}
	o := owner{ID: u.Owner, DisplayName: u.Owner}
	res := listPartsResult{Xmlns: s3NS, Bucket: q.bucket, Key: q.key, UploadID: id, Initiator: o, Owner: o,
		StorageClass: "STANDARD", PartNumberMarker: marker, MaxParts: maxParts, IsTruncated: truncated}
	for i, n := range nums {
		res.Parts = append(res.Parts, partXML{PartNumber: n, LastModified: isoTime(timeFromNanos(recs[i].Mod)),
			ETag: quote(recs[i].ETag), Size: recs[i].Size})
		res.NextPartNumberMarker = n
	}
	return q.writeXML(http.StatusOK, res)
}

func (q *request) listUploads() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	maxUploads, err := q.maxKeysParam("max-uploads")
	if err != nil {
		return err
	}
	enc, err := q.encoder()
	if err != nil {
		return err
	}
	prefix, delim := q.query("prefix"), q.query("delimiter")
	keyMarker, idMarker := q.query("key-marker"), q.query("upload-id-marker")
	start := ""
	switch {
	case keyMarker != "" && idMarker != "":
		start = uploadKey(keyMarker, idMarker) + "\x02"
	case keyMarker != "":
		start = keyMarker + "\x01"
	}
	l, err := list(q.ctx, b.uploads, listSpec{prefix: prefix, delimiter: delim, start: start, max: maxUploads,
		count: func(k string, _ []byte) (int, error) {
			if strings.ContainsRune(k, '\x01') {
				return 0, nil // a part
			}
			return 1, nil
		},
		keyOf: func(k string) string { key, _, _ := strings.Cut(k, "\x00"); return key }})
	if err != nil {
		return err
	}
	res := listUploadsResult{Xmlns: s3NS, Bucket: q.bucket, KeyMarker: enc(keyMarker), UploadIDMarker: idMarker,
		Prefix: enc(prefix), Delimiter: enc(delim), MaxUploads: maxUploads, IsTruncated: l.truncated,
		EncodingType: q.query("encoding-type")}
	for _, it := range l.items {
		if it.prefix != "" {
			res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(it.prefix)})
			res.NextKeyMarker, res.NextUploadIDMarker = enc(it.prefix), ""
			continue
		}
		key, id, _ := strings.Cut(it.key, "\x00")
		u := &uploadRec{}
		if err := json.Unmarshal(it.val, u); err != nil {
			return fmt.Errorf("%w: upload: %v", errCorruptMeta, err)
		}
		o := owner{ID: u.Owner, DisplayName: u.Owner}
		res.Uploads = append(res.Uploads, uploadXML{Key: enc(key), UploadID: id, Initiator: o, Owner: o,
			StorageClass: "STANDARD", Initiated: isoTime(timeFromNanos(u.Initiated))})
		res.NextKeyMarker, res.NextUploadIDMarker = enc(key), id
	}
	return q.writeXML(http.StatusOK, res)
}

// parseCopyRange parses x-amz-copy-source-range: "bytes=first-last", both
// present and inside the source.
func parseCopyRange(h string, size int64) (start, length int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || last >= size {
		return 0, 0, false
	}
	return first, last - first + 1, true
}
