package s3_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

func TestSDKObjects(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil, nil)
	c := e.sdkTLS()
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("bkt")}); apiCode(err) != "BucketAlreadyOwnedByYou" {
		t.Fatalf("re-create: %v", err)
	}
	if _, err := c.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	lb, err := c.ListBuckets(ctx, &awss3.ListBucketsInput{})
	if err != nil || len(lb.Buckets) != 1 || *lb.Buckets[0].Name != "bkt" {
		t.Fatalf("list buckets: %v %+v", err, lb)
	}
	loc, err := c.GetBucketLocation(ctx, &awss3.GetBucketLocationInput{Bucket: aws.String("bkt")})
	if err != nil || loc.LocationConstraint != "" {
		t.Fatalf("location: %v %v", err, loc)
	}

	// PutObject over HTTPS: the SDK's default trailer-checksum mode.
	data := fill(100_000, 1)
	put, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+é.txt"),
		Body: bytes.NewReader(data), ContentType: aws.String("text/plain"), CacheControl: aws.String("max-age=5"),
		ContentDisposition: aws.String("attachment"), Metadata: map[string]string{"color": "blue"}})
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(data)
	if *put.ETag != `"`+hex.EncodeToString(sum[:])+`"` || put.ChecksumCRC32 == nil {
		t.Fatalf("etag %s crc %v", *put.ETag, put.ChecksumCRC32)
	}
	// SHA256 checksum explicitly.
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"),
		Body: bytes.NewReader(data), ChecksumAlgorithm: types.ChecksumAlgorithmSha256}); err != nil {
		t.Fatal(err)
	}
	get, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+é.txt"),
		ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(get.Body)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get: %v, %d bytes", err, len(got))
	}
	if *get.ContentType != "text/plain" || *get.CacheControl != "max-age=5" || *get.ContentDisposition != "attachment" ||
		get.Metadata["color"] != "blue" || *get.ContentLength != int64(len(data)) {
		t.Fatalf("get headers: %+v", get)
	}
	// Range, suffix range, bad range.
	rg, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"), Range: aws.String("bytes=10-19")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(rg.Body)
	if !bytes.Equal(got, data[10:20]) || *rg.ContentRange != "bytes 10-19/100000" {
		t.Fatalf("range: %q %s", got, *rg.ContentRange)
	}
	rg, err = c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"), Range: aws.String("bytes=-5")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(rg.Body)
	if !bytes.Equal(got, data[len(data)-5:]) {
		t.Fatalf("suffix range: %q", got)
	}
	if _, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"), Range: aws.String("bytes=100000-")}); apiCode(err) != "InvalidRange" {
		t.Fatalf("bad range: %v", err)
	}
	// Conditionals.
	if _, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"), IfMatch: aws.String(`"nope"`)}); apiCode(err) != "PreconditionFailed" {
		t.Fatalf("if-match: %v", err)
	}
	if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+é.txt"), IfNoneMatch: put.ETag}); apiCode(err) != "NotModified" {
		t.Fatalf("if-none-match: %v", err)
	}
	if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"), IfModifiedSince: aws.Time(time.Now().Add(time.Hour))}); apiCode(err) != "NotModified" {
		t.Fatalf("if-modified-since: %v", err)
	}
	if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"), IfUnmodifiedSince: aws.Time(time.Now().Add(-time.Hour))}); apiCode(err) != "PreconditionFailed" {
		t.Fatalf("if-unmodified-since: %v", err)
	}
	ov, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"), ResponseContentType: aws.String("image/png")})
	if err != nil || *ov.ContentType != "image/png" {
		t.Fatalf("override: %v", err)
	}
	ov.Body.Close()
	if _, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("missing")}); apiCode(err) != "NoSuchKey" {
		t.Fatalf("missing: %v", err)
	}
	if _, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("nobkt"), Key: aws.String("x")}); apiCode(err) != "NoSuchBucket" {
		t.Fatalf("missing bucket: %v", err)
	}

	// Copy: COPY keeps metadata, REPLACE takes the request's; no data written.
	writes := e.data.Writes.Load()
	cp, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("bkt"), Key: aws.String("copy1"),
		CopySource: aws.String("bkt/dir/a%20b%2B%C3%A9.txt")})
	if err != nil {
		t.Fatal(err)
	}
	if *cp.CopyObjectResult.ETag != *put.ETag {
		t.Fatalf("copy etag %s", *cp.CopyObjectResult.ETag)
	}
	h, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("copy1")})
	if err != nil || h.Metadata["color"] != "blue" || *h.ContentType != "text/plain" {
		t.Fatalf("copy head: %v %+v", err, h)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("bkt"), Key: aws.String("copy2"),
		CopySource: aws.String("bkt/sha"), MetadataDirective: types.MetadataDirectiveReplace,
		Metadata: map[string]string{"x": "y"}, ContentType: aws.String("a/b")}); err != nil {
		t.Fatal(err)
	}
	h, err = c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("copy2")})
	if err != nil || h.Metadata["x"] != "y" || *h.ContentType != "a/b" {
		t.Fatalf("copy2 head: %v %+v", err, h)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("bkt"), Key: aws.String("copy3"),
		CopySource: aws.String("bkt/sha"), CopySourceIfMatch: aws.String(`"zzz"`)}); apiCode(err) != "PreconditionFailed" {
		t.Fatalf("copy if-match: %v", err)
	}
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha"),
		CopySource: aws.String("bkt/sha")}); apiCode(err) != "InvalidRequest" {
		t.Fatalf("copy onto itself: %v", err)
	}
	if e.data.Writes.Load() != writes {
		t.Fatalf("copy wrote data")
	}

	// Listing.
	lo, err := c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("bkt"), Delimiter: aws.String("/")})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range lo.Contents {
		keys = append(keys, *o.Key)
	}
	if !slices.Equal(keys, []string{"copy1", "copy2", "sha"}) || len(lo.CommonPrefixes) != 1 || *lo.CommonPrefixes[0].Prefix != "dir/" {
		t.Fatalf("list: %q %+v", keys, lo.CommonPrefixes)
	}
	lo, err = c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("bkt"), Prefix: aws.String("dir/"), EncodingType: types.EncodingTypeUrl})
	if err != nil || len(lo.Contents) != 1 || *lo.Contents[0].Key != url.QueryEscape("dir/a b+é.txt") {
		t.Fatalf("list url-encoded: %v %+v", err, lo.Contents)
	}
	// DeleteObjects, with one key that does not exist (still "deleted").
	del, err := c.DeleteObjects(ctx, &awss3.DeleteObjectsInput{Bucket: aws.String("bkt"), Delete: &types.Delete{
		Objects: []types.ObjectIdentifier{{Key: aws.String("copy1")}, {Key: aws.String("copy2")}, {Key: aws.String("nope")}}}})
	if err != nil || len(del.Deleted) != 3 || len(del.Errors) != 0 {
		t.Fatalf("delete objects: %v %+v", err, del)
	}
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("bkt"), Key: aws.String("sha")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String("bkt")}); apiCode(err) != "BucketNotEmpty" {
		t.Fatalf("delete non-empty: %v", err)
	}
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+é.txt")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String("bkt")}); err == nil {
		t.Fatal("bucket still there")
	}
	if live := e.data.Live(); live != 0 {
		t.Fatalf("%d data references still live after deleting everything", live)
	}
}

func TestSDKMultipart(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil, nil)
	c := e.sdk()
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("mpu")}); err != nil {
		t.Fatal(err)
	}
	cu, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("big"),
		ContentType: aws.String("app/x"), Metadata: map[string]string{"m": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := fill(5<<20, 3), fill(1000, 4)
	var etags []string
	for i, p := range [][]byte{p1, p2} {
		up, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("mpu"), Key: aws.String("big"),
			UploadId: cu.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(p)})
		if err != nil {
			t.Fatal(err)
		}
		etags = append(etags, *up.ETag)
	}
	lp, err := c.ListParts(ctx, &awss3.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("big"), UploadId: cu.UploadId})
	if err != nil || len(lp.Parts) != 2 || *lp.Parts[1].Size != 1000 {
		t.Fatalf("list parts: %v %+v", err, lp)
	}
	lu, err := c.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String("mpu")})
	if err != nil || len(lu.Uploads) != 1 || *lu.Uploads[0].UploadId != *cu.UploadId {
		t.Fatalf("list uploads: %v %+v", err, lu)
	}
	parts := func(nums []int32, tags []string) *types.CompletedMultipartUpload {
		var cp []types.CompletedPart
		for i, n := range nums {
			cp = append(cp, types.CompletedPart{PartNumber: aws.Int32(n), ETag: aws.String(tags[i])})
		}
		return &types.CompletedMultipartUpload{Parts: cp}
	}
	cm := func(p *types.CompletedMultipartUpload) (*awss3.CompleteMultipartUploadOutput, error) {
		return c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("mpu"),
			Key: aws.String("big"), UploadId: cu.UploadId, MultipartUpload: p})
	}
	if _, err := cm(parts([]int32{2, 1}, []string{etags[1], etags[0]})); apiCode(err) != "InvalidPartOrder" {
		t.Fatalf("order: %v", err)
	}
	if _, err := cm(parts([]int32{1, 2}, []string{etags[0], `"00000000000000000000000000000000"`})); apiCode(err) != "InvalidPart" {
		t.Fatalf("etag: %v", err)
	}
	if _, err := cm(parts([]int32{1, 3}, []string{etags[0], etags[1]})); apiCode(err) != "InvalidPart" {
		t.Fatalf("missing part: %v", err)
	}
	if _, err := cm(parts([]int32{2, 1}[:0], nil)); apiCode(err) != "MalformedXML" {
		t.Fatalf("empty: %v", err)
	}
	done, err := cm(parts([]int32{1, 2}, etags))
	if err != nil {
		t.Fatal(err)
	}
	var md5s []byte
	for _, tg := range etags {
		b, _ := hex.DecodeString(strings.Trim(tg, `"`))
		md5s = append(md5s, b...)
	}
	want := md5.Sum(md5s)
	if *done.ETag != fmt.Sprintf(`"%x-2"`, want) {
		t.Fatalf("etag %s", *done.ETag)
	}
	g, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(g.Body)
	if !bytes.Equal(got, append(append([]byte(nil), p1...), p2...)) || *g.ContentType != "app/x" || g.Metadata["m"] != "1" {
		t.Fatalf("multipart content: %d bytes, %+v", len(got), g)
	}
	// A range across the part boundary.
	g, err = c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big"), Range: aws.String(fmt.Sprintf("bytes=%d-%d", len(p1)-3, len(p1)+2))})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(g.Body)
	if !bytes.Equal(got, append(append([]byte(nil), p1[len(p1)-3:]...), p2[:3]...)) {
		t.Fatalf("cross-part range %v", got)
	}
	pn, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big"), PartNumber: aws.Int32(2)})
	if err != nil || *pn.ContentLength != 1000 || *pn.PartsCount != 2 {
		t.Fatalf("part number head: %v %+v", err, pn)
	}
	if _, err := cm(parts([]int32{1, 2}, etags)); apiCode(err) != "NoSuchUpload" {
		t.Fatalf("complete twice: %v", err)
	}

	// Too-small non-last part; UploadPartCopy with a range; abort releases.
	cu2, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("small")})
	if err != nil {
		t.Fatal(err)
	}
	var tags2 []string
	for i := 1; i <= 2; i++ {
		up, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("mpu"), Key: aws.String("small"),
			UploadId: cu2.UploadId, PartNumber: aws.Int32(int32(i)), Body: bytes.NewReader(fill(10, byte(i)))})
		if err != nil {
			t.Fatal(err)
		}
		tags2 = append(tags2, *up.ETag)
	}
	if _, err := c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("small"),
		UploadId: cu2.UploadId, MultipartUpload: parts([]int32{1, 2}, tags2)}); apiCode(err) != "EntityTooSmall" {
		t.Fatalf("too small: %v", err)
	}
	writes := e.data.Writes.Load()
	pc, err := c.UploadPartCopy(ctx, &awss3.UploadPartCopyInput{Bucket: aws.String("mpu"), Key: aws.String("small"),
		UploadId: cu2.UploadId, PartNumber: aws.Int32(3), CopySource: aws.String("mpu/big"),
		CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", len(p1)-10, len(p1)+9))})
	if err != nil || pc.CopyPartResult.ETag == nil {
		t.Fatalf("part copy: %v", err)
	}
	if e.data.Writes.Load() != writes {
		t.Fatal("part copy wrote data")
	}
	if _, err := c.UploadPartCopy(ctx, &awss3.UploadPartCopyInput{Bucket: aws.String("mpu"), Key: aws.String("small"),
		UploadId: cu2.UploadId, PartNumber: aws.Int32(4), CopySource: aws.String("mpu/big"),
		CopySourceRange: aws.String("bytes=0-99999999")}); apiCode(err) != "InvalidArgument" {
		t.Fatalf("part copy bad range: %v", err)
	}
	releases := e.data.Releases.Load()
	if _, err := c.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("small"), UploadId: cu2.UploadId}); err != nil {
		t.Fatal(err)
	}
	// Two uploaded parts, and the copied part's two segments (it spans
	// both parts of its source).
	if n := e.data.Releases.Load() - releases; n != 4 {
		t.Fatalf("abort released %d refs, want 4", n)
	}
	if _, err := c.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("small"), UploadId: cu2.UploadId}); apiCode(err) != "NoSuchUpload" {
		t.Fatalf("abort twice: %v", err)
	}
	if _, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("mpu"), Key: aws.String("small"),
		UploadId: cu2.UploadId, PartNumber: aws.Int32(1), Body: bytes.NewReader([]byte("x"))}); apiCode(err) != "NoSuchUpload" {
		t.Fatalf("upload to aborted: %v", err)
	}
}

func TestSDKVersioning(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil, nil)
	c := e.sdk()
	b := aws.String("ver")
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutBucketVersioning(ctx, &awss3.PutBucketVersioningInput{Bucket: b,
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}}); err != nil {
		t.Fatal(err)
	}
	gv, err := c.GetBucketVersioning(ctx, &awss3.GetBucketVersioningInput{Bucket: b})
	if err != nil || gv.Status != types.BucketVersioningStatusEnabled {
		t.Fatalf("get versioning: %v %v", err, gv)
	}
	var ids []string
	for i := 0; i < 3; i++ {
		p, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: b, Key: aws.String("k"), Body: strings.NewReader(fmt.Sprint("v", i))})
		if err != nil || p.VersionId == nil {
			t.Fatalf("put: %v", err)
		}
		ids = append(ids, *p.VersionId)
	}
	g, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: b, Key: aws.String("k"), VersionId: aws.String(ids[0])})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(g.Body); string(got) != "v0" {
		t.Fatalf("old version: %q", got)
	}
	d, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("k")})
	if err != nil || d.DeleteMarker == nil || !*d.DeleteMarker {
		t.Fatalf("delete: %v %+v", err, d)
	}
	if _, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: b, Key: aws.String("k")}); apiCode(err) != "NoSuchKey" {
		t.Fatalf("after delete marker: %v", err)
	}
	lo, err := c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: b})
	if err != nil || len(lo.Contents) != 0 {
		t.Fatalf("listing shows deleted: %v %+v", err, lo.Contents)
	}
	lv, err := c.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: b})
	if err != nil || len(lv.Versions) != 3 || len(lv.DeleteMarkers) != 1 || !*lv.DeleteMarkers[0].IsLatest {
		t.Fatalf("versions: %v %+v", err, lv)
	}
	// Paginate versions two at a time.
	var seen int
	var km, vm *string
	for {
		lv, err := c.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: b, MaxKeys: aws.Int32(2), KeyMarker: km, VersionIdMarker: vm})
		if err != nil {
			t.Fatal(err)
		}
		seen += len(lv.Versions) + len(lv.DeleteMarkers)
		if !*lv.IsTruncated {
			break
		}
		km, vm = lv.NextKeyMarker, lv.NextVersionIdMarker
	}
	if seen != 4 {
		t.Fatalf("paginated versions: %d", seen)
	}
	// Deleting the marker by id restores the object.
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("k"), VersionId: d.VersionId}); err != nil {
		t.Fatal(err)
	}
	g, err = c.GetObject(ctx, &awss3.GetObjectInput{Bucket: b, Key: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(g.Body); string(got) != "v2" {
		t.Fatalf("latest: %q", got)
	}
	if _, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: b, Key: aws.String("k"), VersionId: aws.String(ids[1])}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: b, Key: aws.String("k"), VersionId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: b}); err != nil {
		t.Fatalf("delete emptied versioned bucket: %v", err)
	}
}

func TestSDKPresign(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil, nil, nil)
	c := e.sdk()
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("pre")}); err != nil {
		t.Fatal(err)
	}
	ps := awss3.NewPresignClient(c)
	pu, err := ps.PresignPutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("pre"), Key: aws.String("p")},
		awss3.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(pu.Method, pu.URL, strings.NewReader("presigned body"))
	for k, v := range pu.SignedHeader {
		req.Header[k] = v
	}
	resp, body := e.do(req)
	if resp.StatusCode != 200 {
		t.Fatalf("presigned put: %d %s", resp.StatusCode, body)
	}
	pg, err := ps.PresignGetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("pre"), Key: aws.String("p")},
		awss3.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest("GET", pg.URL, nil)
	resp, body = e.do(req)
	if resp.StatusCode != 200 || string(body) != "presigned body" {
		t.Fatalf("presigned get: %d %s", resp.StatusCode, body)
	}
	// Expiry is honoured: move the server's clock past it.
	e.srv.SetClock(func() time.Time { return time.Now().Add(2 * time.Minute) })
	resp, body = e.do(req)
	expectErr(t, "expired presign", resp, body, 403, "AccessDenied")
	e.srv.SetClock(time.Now)
	// A tampered presigned URL fails.
	req, _ = http.NewRequest("GET", strings.Replace(pg.URL, "/pre/p?", "/pre/q?", 1), nil)
	resp, body = e.do(req)
	expectErr(t, "tampered presign", resp, body, 403, "SignatureDoesNotMatch")
}
