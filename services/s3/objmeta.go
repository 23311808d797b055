package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"shoal/services/s3/s3err"
)

// segment is a byte range of stored data. Objects are lists of segments so
// copies and part copies reuse data instead of rewriting it.
type segment struct {
	Ref []byte `json:"r"`
	Off int64  `json:"o,omitempty"`
	Len int64  `json:"l"`
}

// objVersion is one version of an object (or a delete marker).
type objVersion struct {
	ID       string            `json:"i,omitempty"` // "" is the null version
	Del      bool              `json:"d,omitempty"`
	Mod      int64             `json:"m"` // unix nanoseconds
	Size     int64             `json:"s,omitempty"`
	ETag     string            `json:"e,omitempty"` // unquoted
	Segs     []segment         `json:"g,omitempty"`
	Parts    []int64           `json:"p,omitempty"` // multipart part sizes
	SegBlock string            `json:"b,omitempty"` // hex address holding Segs and Parts when large
	Hdr      map[string]string `json:"h,omitempty"` // content-type etc. and x-amz-meta-*
	Sums     map[string]string `json:"c,omitempty"` // checksum algorithm → base64
	Owner    string            `json:"o,omitempty"`
}

// objEntry is the index value for one key: versions, newest first.
type objEntry struct {
	V []*objVersion `json:"v"`
}

func decodeEntry(b []byte) (*objEntry, error) {
	e := &objEntry{}
	if err := json.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("%w: object entry: %v", errCorruptMeta, err)
	}
	return e, nil
}

func (e *objEntry) encode() []byte {
	b, _ := json.Marshal(e) // plain strings and numbers cannot fail
	return b
}

func (e *objEntry) latest() *objVersion {
	if len(e.V) == 0 {
		return nil
	}
	return e.V[0]
}

func (e *objEntry) find(id string) (int, *objVersion) {
	if id == "null" {
		id = ""
	}
	for i, v := range e.V {
		if v.ID == id {
			return i, v
		}
	}
	return -1, nil
}

// maxInlineSegs bounds the segments kept in the index entry; beyond it they
// move to their own block so shards stay small.
const maxInlineSegs = 16

type segBlock struct {
	Segs  []segment `json:"g"`
	Parts []int64   `json:"p,omitempty"`
}

// storeSegs moves large segment lists out of the version.
func (s *Server) storeSegs(ctx context.Context, v *objVersion) error {
	if len(v.Segs) <= maxInlineSegs {
		return nil
	}
	b, err := json.Marshal(segBlock{Segs: v.Segs, Parts: v.Parts})
	if err != nil {
		return err
	}
	a, err := s.meta.CreateMutable(ctx, b)
	if err != nil {
		return fmt.Errorf("s3: store segments: %w", err)
	}
	v.SegBlock, v.Segs, v.Parts = hex.EncodeToString(a[:]), nil, nil
	return nil
}

// loadSegs returns a version's segments and part sizes.
func (s *Server) loadSegs(ctx context.Context, v *objVersion) ([]segment, []int64, error) {
	if v.SegBlock == "" {
		return v.Segs, v.Parts, nil
	}
	a, err := parseAddr(v.SegBlock)
	if err != nil {
		return nil, nil, err
	}
	b, _, err := s.meta.Get(ctx, a)
	if err != nil {
		return nil, nil, fmt.Errorf("s3: load segments: %w", err)
	}
	var sb segBlock
	if err := json.Unmarshal(b, &sb); err != nil {
		return nil, nil, fmt.Errorf("%w: segments: %v", errCorruptMeta, err)
	}
	return sb.Segs, sb.Parts, nil
}

// releaseVersion ends a version's use of its data, after the version left
// the index. Failures only delay space reclamation, so they are logged.
func (s *Server) releaseVersion(ctx context.Context, v *objVersion) {
	if v == nil || v.Del {
		return
	}
	segs, _, err := s.loadSegs(ctx, v)
	if err != nil {
		s.log.WarnContext(ctx, "s3: release: load segments", "err", err)
		return
	}
	for _, sg := range segs {
		if err := s.data.Release(ctx, sg.Ref); err != nil {
			s.log.WarnContext(ctx, "s3: release", "err", err)
		}
	}
	if v.SegBlock != "" {
		if a, err := parseAddr(v.SegBlock); err == nil {
			_ = s.meta.Delete(ctx, a)
		}
	}
}

// retainSegs records new uses of existing data (copies).
func (s *Server) retainSegs(ctx context.Context, segs []segment) error {
	r, ok := s.data.(Retainer)
	if !ok {
		return nil
	}
	for _, sg := range segs {
		if err := r.Retain(ctx, sg.Ref); err != nil {
			return fmt.Errorf("s3: retain: %w", err)
		}
	}
	return nil
}

func parseAddr(h string) ([32]byte, error) {
	var a [32]byte
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return a, fmt.Errorf("%w: address %q", errCorruptMeta, h)
	}
	copy(a[:], b)
	return a, nil
}

// newVersionID returns a time-ordered id, so ids sort by creation.
// validVersionID reports whether id can name a version: none (""), the
// null version, or an id newVersionID makes. Any other id is refused as
// AWS does, rather than looked up and echoed back in a header.
func validVersionID(id string) bool {
	if id == "" || id == "null" {
		return true
	}
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

var errBadVersionID = s3err.Newf(s3err.InvalidArgument, "Invalid version id specified")

func newVersionID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	_, _ = rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

// putVersion adds v to e according to the bucket's versioning state and
// returns the versions it displaced.
// written returns the version in e that is v as written by this same
// request (see request.commit), nil if none. Mod is the writing server's
// clock in nanoseconds and the segments name the data just stored, so two
// distinct writes never match.
func (e *objEntry) written(v *objVersion) *objVersion {
	for _, x := range e.V {
		if x.Mod == v.Mod && x.Del == v.Del && x.ETag == v.ETag && x.Size == v.Size && sameSegments(x.Segs, v.Segs) {
			return x
		}
	}
	return nil
}

func sameSegments(a, b []segment) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Ref, b[i].Ref) || a[i].Off != b[i].Off || a[i].Len != b[i].Len {
			return false
		}
	}
	return true
}

func putVersion(e *objEntry, v *objVersion, versioning string) (removed []*objVersion) {
	if versioning == versioningEnabled {
		v.ID = newVersionID()
		e.V = append([]*objVersion{v}, e.V...)
		return nil
	}
	v.ID = ""
	kept := make([]*objVersion, 0, len(e.V)+1)
	kept = append(kept, v)
	for _, old := range e.V {
		if old.ID == "" {
			removed = append(removed, old)
			continue
		}
		kept = append(kept, old)
	}
	e.V = kept
	return removed
}

func (v *objVersion) modTime() time.Time { return time.Unix(0, v.Mod).UTC() }

// versionHeader is the x-amz-version-id value for v, or "" when the bucket
// never had versioning.
func versionHeader(v *objVersion, versioning string) string {
	if v.ID != "" {
		return v.ID
	}
	if versioning != "" {
		return "null"
	}
	return ""
}

func timeFromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }
