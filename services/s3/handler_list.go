package s3

import (
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"net/url"
	"strconv"

	"shoal/services/s3/checksum"
	"shoal/services/s3/s3err"
)

const defaultMaxKeys = 1000

// maxKeysParam parses max-keys style parameters (capped at 1000, as AWS).
func (q *request) maxKeysParam(name string) (int, error) {
	v := q.query(name)
	if v == "" {
		return defaultMaxKeys, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, s3err.Newf(s3err.InvalidArgument, "Provided %s not an integer or within integer range", name)
	}
	return min(n, defaultMaxKeys), nil
}

func (q *request) encoder() (func(string) string, error) {
	switch q.query("encoding-type") {
	case "":
		return func(s string) string { return s }, nil
	case "url":
		return url.QueryEscape, nil
	}
	return nil, s3err.New(s3err.InvalidEncoding)
}

// countLive shows a key when its latest version is not a delete marker.
func countLive(_ string, val []byte) (int, error) {
	e, err := decodeEntry(val)
	if err != nil {
		return 0, err
	}
	if l := e.latest(); l != nil && !l.Del {
		return 1, nil
	}
	return 0, nil
}

func (q *request) objectXML(key string, val []byte, withOwner bool, enc func(string) string) (objectXML, error) {
	e, err := decodeEntry(val)
	if err != nil {
		return objectXML{}, err
	}
	v := e.latest()
	o := objectXML{Key: enc(key), LastModified: isoTime(v.modTime()), ETag: quote(v.ETag),
		Size: v.Size, StorageClass: storageClass(v)}
	if withOwner {
		o.Owner = &owner{ID: v.Owner, DisplayName: v.Owner}
	}
	for name := range v.Sums {
		if a, ok := checksum.Parse(name); ok {
			o.ChecksumAlgorithm = append(o.ChecksumAlgorithm, a.Name())
		}
	}
	return o, nil
}

func storageClass(v *objVersion) string {
	if sc := v.Hdr["x-amz-storage-class"]; sc != "" {
		return sc
	}
	return "STANDARD"
}

func (q *request) listObjectsV1() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	maxKeys, err := q.maxKeysParam("max-keys")
	if err != nil {
		return err
	}
	enc, err := q.encoder()
	if err != nil {
		return err
	}
	prefix, delim, marker := q.query("prefix"), q.query("delimiter"), q.query("marker")
	l, err := list(q.ctx, b.objects, listSpec{prefix: prefix, delimiter: delim,
		start: afterMarker(marker, prefix, delim), max: maxKeys, count: countLive})
	if err != nil {
		return err
	}
	res := listBucketResult{Xmlns: s3NS, Name: q.bucket, Prefix: enc(prefix), Marker: enc(marker),
		MaxKeys: maxKeys, Delimiter: enc(delim), IsTruncated: l.truncated, EncodingType: q.query("encoding-type")}
	last := ""
	for _, it := range l.items {
		if it.prefix != "" {
			res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(it.prefix)})
			last = it.prefix
			continue
		}
		o, err := q.objectXML(it.key, it.val, true, enc)
		if err != nil {
			return err
		}
		res.Contents = append(res.Contents, o)
		last = it.key
	}
	if l.truncated {
		res.NextMarker = enc(last)
	}
	return q.writeXML(http.StatusOK, res)
}

func (q *request) listObjectsV2() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	maxKeys, err := q.maxKeysParam("max-keys")
	if err != nil {
		return err
	}
	enc, err := q.encoder()
	if err != nil {
		return err
	}
	prefix, delim, startAfter := q.query("prefix"), q.query("delimiter"), q.query("start-after")
	token := q.query("continuation-token")
	after := startAfter
	if q.has("continuation-token") {
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || token == "" {
			return s3err.Newf(s3err.InvalidArgument, "The continuation token provided is incorrect")
		}
		after = string(raw)
	}
	l, err := list(q.ctx, b.objects, listSpec{prefix: prefix, delimiter: delim,
		start: afterMarker(after, prefix, delim), max: maxKeys, count: countLive})
	if err != nil {
		return err
	}
	res := listBucketV2Result{Xmlns: s3NS, Name: q.bucket, Prefix: enc(prefix), StartAfter: enc(startAfter),
		ContinuationToken: token, MaxKeys: maxKeys, Delimiter: enc(delim), IsTruncated: l.truncated,
		EncodingType: q.query("encoding-type")}
	fetchOwner := q.query("fetch-owner") == "true"
	last := ""
	for _, it := range l.items {
		if it.prefix != "" {
			res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(it.prefix)})
			last = it.prefix
			continue
		}
		o, err := q.objectXML(it.key, it.val, fetchOwner, enc)
		if err != nil {
			return err
		}
		res.Contents = append(res.Contents, o)
		last = it.key
	}
	res.KeyCount = len(l.items)
	if l.truncated {
		res.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(last))
	}
	return q.writeXML(http.StatusOK, res)
}

func (q *request) listVersions() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	maxKeys, err := q.maxKeysParam("max-keys")
	if err != nil {
		return err
	}
	enc, err := q.encoder()
	if err != nil {
		return err
	}
	prefix, delim := q.query("prefix"), q.query("delimiter")
	keyMarker, vidMarker := q.query("key-marker"), q.query("version-id-marker")
	if vidMarker != "" && keyMarker == "" {
		return s3err.Newf(s3err.InvalidArgument, "A version-id marker cannot be specified without a key marker.")
	}
	spec := listSpec{prefix: prefix, delimiter: delim, max: maxKeys,
		count: func(_ string, val []byte) (int, error) {
			e, err := decodeEntry(val)
			if err != nil {
				return 0, err
			}
			return len(e.V), nil
		}}
	if vidMarker != "" {
		spec.start = keyMarker
		spec.skip = func(_ string, val []byte) int {
			e, err := decodeEntry(val)
			if err != nil {
				return 0
			}
			i, _ := e.find(vidMarker)
			return i + 1
		}
	} else {
		spec.start = afterMarker(keyMarker, prefix, delim)
	}
	l, err := list(q.ctx, b.objects, spec)
	if err != nil {
		return err
	}
	res := listVersionsResult{Xmlns: s3NS, Name: q.bucket, Prefix: enc(prefix), KeyMarker: enc(keyMarker),
		VersionIDMarker: vidMarker, MaxKeys: maxKeys, Delimiter: enc(delim), IsTruncated: l.truncated,
		EncodingType: q.query("encoding-type")}
	var lastKey, lastVID string
	for _, it := range l.items {
		if it.prefix != "" {
			res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(it.prefix)})
			lastKey, lastVID = it.prefix, ""
			continue
		}
		e, err := decodeEntry(it.val)
		if err != nil {
			return err
		}
		v := e.V[it.sub]
		vid := v.ID
		if vid == "" {
			vid = "null"
		}
		x := versionXML{Key: enc(it.key), VersionID: vid, IsLatest: it.sub == 0,
			LastModified: isoTime(v.modTime()), Owner: owner{ID: v.Owner, DisplayName: v.Owner}}
		if v.Del {
			x.XMLName = xml.Name{Local: "DeleteMarker"}
		} else {
			size := v.Size
			x.XMLName = xml.Name{Local: "Version"}
			x.ETag, x.Size, x.StorageClass = quote(v.ETag), &size, storageClass(v)
		}
		res.Versions = append(res.Versions, x)
		lastKey, lastVID = it.key, vid
	}
	if l.truncated {
		res.NextKeyMarker, res.NextVersionIDMarker = enc(lastKey), lastVID
	}
	return q.writeXML(http.StatusOK, res)
}
