package s3

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"shoal/services/s3/s3err"
	"shoal/shared/dedup/policy"
)

const (
	bucketsName        = "s3/buckets"
	bucketPrefix       = "s3/bucket/"
	versioningEnabled  = "Enabled"
	versioningSuspend  = "Suspended"
	aclPrivate         = "private"
	aclPublicRead      = "public-read"
	aclPublicReadWrite = "public-read-write"
	policyHeader       = "X-Shoal-Policy"
)

// bucketInfo is the bucket's named root block. It is small and read on every
// request; the object and upload indexes live in their own blocks.
type bucketInfo struct {
	Name       string `json:"n"`
	Created    int64  `json:"c"`
	Owner      string `json:"o"`
	Policy     string `json:"p,omitempty"`
	ACL        string `json:"a,omitempty"`
	Versioning string `json:"v,omitempty"`
	Objects    string `json:"oi"`
	Uploads    string `json:"ui"`
}

type bucket struct {
	root    [32]byte
	info    bucketInfo
	objects *index
	uploads *index
}

type bucketList struct {
	B map[string]bucketListEntry `json:"b"`
}

type bucketListEntry struct {
	Created int64  `json:"c"`
	Owner   string `json:"o"`
}

func (s *Server) newIndex(dir [32]byte) *index {
	return &index{meta: s.meta, dir: dir, splitBytes: s.cfg.ShardSplitBytes, cache: s.dirs, splitting: &s.splitting, repairing: &s.repairing, bg: s.bg, queues: s.commits, decoded: s.shards}
}

// loadBucket reads the bucket's root; NoSuchBucket when absent.
func (s *Server) loadBucket(ctx context.Context, name string) (*bucket, error) {
	if err := validBucketName(name); err != nil {
		return nil, s3err.New(s3err.NoSuchBucket)
	}
	a, err := s.meta.ResolveName(ctx, bucketPrefix+name)
	if errors.Is(err, ErrNotFound) {
		return nil, s3err.New(s3err.NoSuchBucket)
	}
	if err != nil {
		return nil, err
	}
	b, _, err := s.meta.Get(ctx, a)
	if errors.Is(err, ErrNotFound) {
		return nil, s3err.New(s3err.NoSuchBucket)
	}
	if err != nil {
		return nil, err
	}
	bk := &bucket{root: a}
	if err := json.Unmarshal(b, &bk.info); err != nil {
		return nil, fmt.Errorf("%w: bucket %s: %v", errCorruptMeta, name, err)
	}
	oa, err := parseAddr(bk.info.Objects)
	if err != nil {
		return nil, err
	}
	ua, err := parseAddr(bk.info.Uploads)
	if err != nil {
		return nil, err
	}
	bk.objects, bk.uploads = s.newIndex(oa), s.newIndex(ua)
	return bk, nil
}

// bucket returns the request's bucket, loading it once.
func (q *request) loadBucket() (*bucket, error) {
	if q.bkt != nil {
		return q.bkt, nil
	}
	b := q.s.cache.getBucket(q.bucket)
	if b == nil {
		var err error
		if b, err = q.s.loadBucket(q.ctx, q.bucket); err != nil {
			return nil, err
		}
		q.s.cache.putBucket(q.bucket, b)
	}
	q.bkt = b
	return b, nil
}

// validBucketName applies AWS's naming rules for new buckets.
func validBucketName(n string) error {
	bad := func(why string) error {
		return s3err.Newf(s3err.InvalidBucketName, "The specified bucket is not valid: %s", why)
	}
	if len(n) < 3 || len(n) > 63 {
		return bad("length must be 3 to 63")
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '-' {
			return bad("only lowercase letters, digits, '.' and '-'")
		}
	}
	first, last := n[0], n[len(n)-1]
	if first == '.' || first == '-' || last == '.' || last == '-' {
		return bad("must begin and end with a letter or digit")
	}
	if strings.Contains(n, "..") {
		return bad("adjacent periods")
	}
	if net.ParseIP(n) != nil {
		return bad("IP address format")
	}
	for _, p := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(n, p) {
			return bad("reserved prefix")
		}
	}
	for _, suf := range []string{"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"} {
		if strings.HasSuffix(n, suf) {
			return bad("reserved suffix")
		}
	}
	return nil
}

// validPolicyName accepts "" (the dedup tier's default) or a policy in
// the dedup tier's compact syntax, e.g. "redundancy=ec:2+2,encrypt=on", so
// a bad policy fails the bucket's creation rather than its first write.
func validPolicyName(p string) bool {
	if p == "" {
		return true
	}
	if len(p) > 256 {
		return false
	}
	_, err := policy.Parse(p)
	return err == nil
}

func cannedACL(h string) (string, error) {
	switch h {
	case "", aclPrivate, "authenticated-read", "bucket-owner-read", "bucket-owner-full-control":
		return aclPrivate, nil
	case aclPublicRead, aclPublicReadWrite:
		return h, nil
	}
	return "", s3err.Newf(s3err.InvalidArgument, "unsupported canned ACL %q", h)
}

func (q *request) createBucket() error {
	s := q.s
	if err := validBucketName(q.bucket); err != nil {
		return err
	}
	acl, err := cannedACL(q.r.Header.Get("X-Amz-Acl"))
	if err != nil {
		return err
	}
	pol := q.r.Header.Get(policyHeader)
	if !validPolicyName(pol) {
		return s3err.Newf(s3err.InvalidArgument, "invalid %s %q", policyHeader, pol)
	}
	if q.r.ContentLength != 0 {
		var cfg createBucketConfiguration
		if err := q.readXML(&cfg); err != nil {
			return err
		}
		if lc := cfg.LocationConstraint; lc != "" && lc != s.cfg.Region {
			return s3err.Newf(s3err.InvalidLocationConstraint, "location constraint %q is not %q", lc, s.cfg.Region)
		}
	}
	existing, err := s.makeBucket(q.ctx, q.bucket, q.user, pol, acl)
	if existing != nil {
		return q.bucketExists(existing)
	}
	if err != nil {
		return err
	}
	q.w.Header().Set("Location", "/"+q.bucket)
	q.w.WriteHeader(http.StatusOK)
	return nil
}

// makeBucket creates a bucket; when it exists already it returns it (and
// no error) so the caller decides what that means.
func (s *Server) makeBucket(ctx context.Context, name, user, pol, acl string) (*bucket, error) {
	if b, err := s.loadBucket(ctx, name); err == nil {
		return b, nil
	}
	oi, err := createIndex(ctx, s.meta)
	if err != nil {
		return nil, err
	}
	ui, err := createIndex(ctx, s.meta)
	if err != nil {
		s.newIndex(oi).destroy(ctx) //nolint:errcheck // best-effort cleanup
		return nil, err
	}
	now := s.now()
	info := bucketInfo{Name: name, Created: now.UnixNano(), Owner: user, Policy: pol, ACL: acl,
		Objects: hex.EncodeToString(oi[:]), Uploads: hex.EncodeToString(ui[:])}
	raw, _ := json.Marshal(info)
	_, err = s.meta.CreateNamed(ctx, bucketPrefix+name, raw)
	if err != nil {
		_ = s.newIndex(oi).destroy(ctx)
		_ = s.newIndex(ui).destroy(ctx)
		if errors.Is(err, ErrExists) {
			return s.loadBucket(ctx, name)
		}
		return nil, err
	}
	return nil, s.listBucket(ctx, name, info)
}

// CreateBucket creates a bucket owned by user with a storage policy, as an
// operator does from the CLI. It fails with an error wrapping ErrExists
// when the bucket exists.
func (s *Server) CreateBucket(ctx context.Context, name, user, pol string) error {
	if err := validBucketName(name); err != nil {
		return err
	}
	if !validPolicyName(pol) {
		return fmt.Errorf("%w: invalid policy %q", ErrConfig, pol)
	}
	existing, err := s.makeBucket(ctx, name, user, pol, aclPrivate)
	if existing != nil {
		return fmt.Errorf("s3: bucket %s: %w", name, ErrExists)
	}
	return err
}

// bucketExists answers a create for an existing bucket. AWS answers its own
// re-creates with 200 in us-east-1; BucketAlreadyOwnedByYou is what every
// other region, and most clients' tests, expect, so we send it everywhere.
func (q *request) bucketExists(b *bucket) error {
	// Make sure a crash between create and list did not leave it unlisted.
	if b.info.Owner == q.user {
		if err := q.s.listBucket(q.ctx, q.bucket, b.info); err != nil {
			return err
		}
		return s3err.New(s3err.BucketAlreadyOwnedByYou)
	}
	return s3err.New(s3err.BucketAlreadyExists)
}

func (s *Server) bucketsAddr(ctx context.Context) ([32]byte, error) {
	return s.named(ctx, bucketsName, []byte(`{"b":{}}`))
}

func (s *Server) listBucket(ctx context.Context, name string, info bucketInfo) error {
	a, err := s.bucketsAddr(ctx)
	if err != nil {
		return err
	}
	_, err = s.meta.Update(ctx, a, func(cur []byte) ([]byte, error) {
		var l bucketList
		if err := json.Unmarshal(cur, &l); err != nil {
			return nil, fmt.Errorf("%w: bucket list: %v", errCorruptMeta, err)
		}
		if l.B == nil {
			l.B = map[string]bucketListEntry{}
		}
		if e, ok := l.B[name]; ok && e.Created == info.Created {
			return nil, errNoChange
		}
		l.B[name] = bucketListEntry{Created: info.Created, Owner: info.Owner}
		return json.Marshal(l)
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	return err
}

var errNoChange = errors.New("s3: no change")

func (q *request) listBuckets() error {
	s := q.s
	a, err := s.bucketsAddr(q.ctx)
	if err != nil {
		return err
	}
	raw, _, err := s.meta.Get(q.ctx, a)
	if err != nil {
		return err
	}
	var l bucketList
	if err := json.Unmarshal(raw, &l); err != nil {
		return fmt.Errorf("%w: bucket list: %v", errCorruptMeta, err)
	}
	res := listAllMyBucketsResult{Xmlns: s3NS, Owner: owner{ID: q.user, DisplayName: q.user}}
	for name, e := range l.B {
		res.Buckets = append(res.Buckets, bucketEntry{Name: name,
			CreationDate: isoTime(time.Unix(0, e.Created)), BucketRegion: s.cfg.Region})
	}
	sort.Slice(res.Buckets, func(i, j int) bool { return res.Buckets[i].Name < res.Buckets[j].Name })
	return q.writeXML(http.StatusOK, res)
}

func (q *request) headBucket() error {
	if _, err := q.loadBucket(); err != nil {
		return err
	}
	q.w.Header().Set("X-Amz-Bucket-Region", q.s.cfg.Region)
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (q *request) getBucketLocation() error {
	if _, err := q.loadBucket(); err != nil {
		return err
	}
	loc := q.s.cfg.Region
	if loc == "us-east-1" { // AWS reports the original region as empty
		loc = ""
	}
	return q.writeXML(http.StatusOK, locationConstraint{Xmlns: s3NS, Value: loc})
}

func (q *request) deleteBucket() error {
	defer q.s.cache.dropBucket(q.bucket)
	s := q.s
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	// Seal both indexes: writers that loaded the bucket before us then fail
	// instead of adding keys to a bucket being deleted.
	if err := b.objects.seal(q.ctx); err != nil {
		if errors.Is(err, errNotEmpty) {
			return s3err.New(s3err.BucketNotEmpty)
		}
		return err
	}
	if err := b.uploads.seal(q.ctx); err != nil {
		_ = unsealAll(q.ctx, b.objects)
		if errors.Is(err, errNotEmpty) {
			return s3err.Newf(s3err.BucketNotEmpty, "The bucket you tried to delete has multipart uploads in progress.")
		}
		return err
	}
	if err := s.meta.DeleteName(q.ctx, bucketPrefix+q.bucket); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	a, err := s.bucketsAddr(q.ctx)
	if err != nil {
		return err
	}
	_, err = s.meta.Update(q.ctx, a, func(cur []byte) ([]byte, error) {
		var l bucketList
		if err := json.Unmarshal(cur, &l); err != nil {
			return nil, fmt.Errorf("%w: bucket list: %v", errCorruptMeta, err)
		}
		delete(l.B, q.bucket)
		return json.Marshal(l)
	})
	if err != nil {
		return err
	}
	for _, ix := range []*index{b.objects, b.uploads} {
		if err := ix.destroy(q.ctx); err != nil {
			s.log.WarnContext(q.ctx, "s3: delete bucket: index cleanup", "bucket", q.bucket, "err", err)
		}
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

func unsealAll(ctx context.Context, ix *index) error {
	return ix.shards(ctx, func(a [32]byte, _ *shard) error {
		_, err := ix.meta.Update(ctx, a, func(cur []byte) ([]byte, error) {
			s, err := decodeShard(cur)
			if err != nil {
				return nil, err
			}
			s.sealed = false
			s.gen++
			return s.encode(), nil
		})
		return err
	})
}

// updateInfo changes the bucket root through read-modify-write.
func (q *request) updateInfo(fn func(*bucketInfo) error) error {
	defer q.s.cache.dropBucket(q.bucket)
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	_, err = q.s.meta.Update(q.ctx, b.root, func(cur []byte) ([]byte, error) {
		var info bucketInfo
		if err := json.Unmarshal(cur, &info); err != nil {
			return nil, fmt.Errorf("%w: bucket: %v", errCorruptMeta, err)
		}
		if err := fn(&info); err != nil {
			return nil, err
		}
		return json.Marshal(info)
	})
	if errors.Is(err, ErrNotFound) {
		return s3err.New(s3err.NoSuchBucket)
	}
	return err
}

func (q *request) putBucketVersioning() error {
	var vc versioningConfiguration
	if err := q.readXML(&vc); err != nil {
		return err
	}
	if vc.Status != versioningEnabled && vc.Status != versioningSuspend {
		return s3err.Newf(s3err.MalformedXML, "versioning status must be Enabled or Suspended")
	}
	if err := q.updateInfo(func(b *bucketInfo) error { b.Versioning = vc.Status; return nil }); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

func (q *request) getBucketVersioning() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	return q.writeXML(http.StatusOK, versioningConfiguration{Xmlns: s3NS, Status: b.info.Versioning})
}

func (q *request) putBucketACL() error {
	acl, err := cannedACL(q.r.Header.Get("X-Amz-Acl"))
	if err != nil {
		return err
	}
	if q.r.Header.Get("X-Amz-Acl") == "" && q.r.ContentLength != 0 {
		var in aclIn
		if err := q.readXML(&in); err != nil {
			return err
		}
		read, write := false, false
		for _, g := range in.Grants {
			if g.Grantee.URI == allUsersURI {
				switch g.Permission {
				case "READ":
					read = true
				case "WRITE":
					write = true
				case "FULL_CONTROL":
					read, write = true, true
				}
			}
		}
		switch {
		case read && write:
			acl = aclPublicReadWrite
		case read:
			acl = aclPublicRead
		}
	}
	if err := q.updateInfo(func(b *bucketInfo) error { b.ACL = acl; return nil }); err != nil {
		return err
	}
	q.w.WriteHeader(http.StatusOK)
	return nil
}

const allUsersURI = "http://acs.amazonaws.com/groups/global/AllUsers"

func (q *request) getBucketACL() error {
	b, err := q.loadBucket()
	if err != nil {
		return err
	}
	o := owner{ID: b.info.Owner, DisplayName: b.info.Owner}
	res := accessControlPolicy{Xmlns: s3NS, Owner: o, Grants: []grant{{
		Grantee:    grantee{XMLNSXsi: "http://www.w3.org/2001/XMLSchema-instance", Type: "CanonicalUser", ID: o.ID, DisplayName: o.DisplayName},
		Permission: "FULL_CONTROL"}}}
	if b.info.ACL == aclPublicRead || b.info.ACL == aclPublicReadWrite {
		res.Grants = append(res.Grants, grant{Grantee: grantee{XMLNSXsi: "http://www.w3.org/2001/XMLSchema-instance", Type: "Group", URI: allUsersURI}, Permission: "READ"})
	}
	if b.info.ACL == aclPublicReadWrite {
		res.Grants = append(res.Grants, grant{Grantee: grantee{XMLNSXsi: "http://www.w3.org/2001/XMLSchema-instance", Type: "Group", URI: allUsersURI}, Permission: "WRITE"})
	}
	return q.writeXML(http.StatusOK, res)
}

func urlUnescape(s string) (string, error) { return url.QueryUnescape(s) }
