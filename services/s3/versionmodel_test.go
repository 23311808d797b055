package s3_test

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"shoal/shared/randtest"
)

// TestVersioningMatchesModel runs random PUTs, DELETEs (plain and of a
// version), GETs and HEADs (latest and by version) and ListObjectVersions
// on a versioned bucket and checks each answer against a model of S3's
// versioning: a PUT adds the latest version, a plain DELETE adds a delete
// marker, a DELETE of a version removes it (a later one becoming latest),
// a GET of a key whose latest is a marker is 404 with x-amz-delete-marker,
// a GET of a marker by id is 405, of an unknown id 404 NoSuchVersion; the
// listing holds every version and marker, newest first, the first of each
// key latest. Versioning is suspended and enabled again now and then: a
// suspended bucket's PUT or DELETE makes the "null" version, replacing the
// previous null one. The seed is logged; SHOAL_S3_MODEL_SEED replays it.
func TestVersioningMatchesModel(t *testing.T) {
	seed := randtest.Seed(t, "SHOAL_S3_MODEL_SEED")
	rng := rand.New(rand.NewPCG(seed, 77))
	e := newEnv(t, nil, nil, nil)
	mustCreateBucket(t, e, "vmodel", nil)
	if resp, body := e.do(e.signed("PUT", "/vmodel?versioning", []byte(`<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>`), nil, "", time.Time{})); resp.StatusCode != 200 {
		t.Fatalf("enable versioning: %d %s", resp.StatusCode, body)
	}
	type version struct {
		id     string
		marker bool
		data   []byte
	}
	model := map[string][]version{} // newest first
	keys := []string{"k1", "k2", "dir/k3"}
	var ids []string // every id handed out, for DELETEs and GETs of old ones
	suspended := false
	// add puts v first, replacing a null version when v is one (what a
	// suspended bucket's PUT and DELETE do).
	add := func(key string, v version) {
		vs := model[key]
		kept := []version{v}
		for _, old := range vs {
			if v.id != "null" || old.id != "null" {
				kept = append(kept, old)
			}
		}
		model[key] = kept
		if !slices.Contains(ids, v.id) {
			ids = append(ids, v.id)
		}
	}
	fail := func(step int, format string, args ...any) {
		t.Helper()
		t.Fatalf("step %d (seed %d): %s", step, seed, fmt.Sprintf(format, args...))
	}
	for step := range 600 {
		key := keys[rng.IntN(len(keys))]
		vs := model[key]
		switch op := rng.IntN(41); {
		case op == 40: // switch versioning between Enabled and Suspended
			suspended = !suspended
			status := map[bool]string{false: "Enabled", true: "Suspended"}[suspended]
			conf := "<VersioningConfiguration><Status>" + status + "</Status></VersioningConfiguration>"
			if resp, body := e.do(signS3(t, e, "PUT", "/vmodel?versioning", []byte(conf), nil)); resp.StatusCode != 200 {
				fail(step, "versioning %s: %d %s", status, resp.StatusCode, body)
			}
		case op < 12: // PUT
			data := bytes.Repeat([]byte{byte(step)}, rng.IntN(3000))
			resp, body := e.do(signS3(t, e, "PUT", "/vmodel/"+key, data, nil))
			id := resp.Header.Get("X-Amz-Version-Id")
			if resp.StatusCode != 200 || id == "" || (id == "null") != suspended {
				fail(step, "PUT %s (suspended %v): %d, version %q: %s", key, suspended, resp.StatusCode, id, body)
			}
			add(key, version{id: id, data: data})
		case op < 16: // plain DELETE: a marker
			resp, body := e.do(signS3(t, e, "DELETE", "/vmodel/"+key, nil, nil))
			id := resp.Header.Get("X-Amz-Version-Id")
			if resp.StatusCode != 204 || resp.Header.Get("X-Amz-Delete-Marker") != "true" || id == "" || (id == "null") != suspended {
				fail(step, "DELETE %s (suspended %v): %d, marker %q, version %q: %s", key, suspended, resp.StatusCode, resp.Header.Get("X-Amz-Delete-Marker"), id, body)
			}
			add(key, version{id: id, marker: true})
		case op < 20 && len(ids) > 0: // DELETE of a version (maybe another key's)
			id := ids[rng.IntN(len(ids))]
			resp, body := e.do(signS3(t, e, "DELETE", "/vmodel/"+key+"?versionId="+id, nil, nil))
			if resp.StatusCode != 204 {
				fail(step, "DELETE %s version %s: %d %s", key, id, resp.StatusCode, body)
			}
			for i, v := range vs {
				if v.id == id {
					if got := resp.Header.Get("X-Amz-Delete-Marker") == "true"; got != v.marker {
						fail(step, "DELETE %s version %s (marker %v): x-amz-delete-marker %v", key, id, v.marker, got)
					}
					model[key] = append(vs[:i:i], vs[i+1:]...)
					break
				}
			}
		case op < 32: // GET or HEAD, latest or by id
			method := "GET"
			if rng.IntN(3) == 0 {
				method = "HEAD"
			}
			path, want := "/vmodel/"+key, (*version)(nil)
			byID := len(ids) > 0 && rng.IntN(2) == 0
			if byID {
				id := ids[rng.IntN(len(ids))]
				path += "?versionId=" + id
				for i := range vs {
					if vs[i].id == id {
						want = &vs[i]
					}
				}
			} else if len(vs) > 0 {
				want = &vs[0]
			}
			resp, body := e.do(signS3(t, e, method, path, nil, nil))
			switch {
			case want == nil:
				if resp.StatusCode != 404 {
					fail(step, "%s %s of nothing: %d %s", method, path, resp.StatusCode, body)
				}
			case want.marker && byID:
				if resp.StatusCode != 405 || resp.Header.Get("X-Amz-Delete-Marker") != "true" {
					fail(step, "%s %s of a marker: %d, marker %q", method, path, resp.StatusCode, resp.Header.Get("X-Amz-Delete-Marker"))
				}
			case want.marker:
				if resp.StatusCode != 404 || resp.Header.Get("X-Amz-Delete-Marker") != "true" {
					fail(step, "%s %s whose latest is a marker: %d, marker %q", method, path, resp.StatusCode, resp.Header.Get("X-Amz-Delete-Marker"))
				}
			default:
				if resp.StatusCode != 200 || resp.Header.Get("X-Amz-Version-Id") != want.id ||
					resp.Header.Get("Content-Length") != strconv.Itoa(len(want.data)) || method == "GET" && !bytes.Equal(body, want.data) {
					fail(step, "%s %s: %d version %q length %s, want version %s of %d bytes", method, path, resp.StatusCode,
						resp.Header.Get("X-Amz-Version-Id"), resp.Header.Get("Content-Length"), want.id, len(want.data))
				}
			}
		default: // list every version
			resp, body := e.do(signS3(t, e, "GET", "/vmodel?versions", nil, nil))
			if resp.StatusCode != 200 {
				fail(step, "ListObjectVersions: %d %s", resp.StatusCode, body)
			}
			var lr struct {
				Entries []struct {
					XMLName   xml.Name
					Key       string `xml:"Key"`
					VersionID string `xml:"VersionId"`
					IsLatest  bool   `xml:"IsLatest"`
					Size      int    `xml:"Size"`
				} `xml:",any"`
			}
			if err := xml.Unmarshal(body, &lr); err != nil {
				fail(step, "ListObjectVersions: %v", err)
			}
			var got, want []string
			for _, en := range lr.Entries {
				switch en.XMLName.Local {
				case "Version":
					got = append(got, fmt.Sprintf("%s %s %v %d", en.Key, en.VersionID, en.IsLatest, en.Size))
				case "DeleteMarker":
					got = append(got, fmt.Sprintf("%s %s %v marker", en.Key, en.VersionID, en.IsLatest))
				}
			}
			for _, k := range []string{"dir/k3", "k1", "k2"} { // key order
				for i, v := range model[k] {
					if v.marker {
						want = append(want, fmt.Sprintf("%s %s %v marker", k, v.id, i == 0))
					} else {
						want = append(want, fmt.Sprintf("%s %s %v %d", k, v.id, i == 0, len(v.data)))
					}
				}
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				fail(step, "ListObjectVersions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
	}
}
