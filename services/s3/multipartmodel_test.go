package s3_test

import (
	"bytes"
	"crypto/md5" //nolint:gosec // S3's multipart ETag is MD5 of MD5s
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"

	"shoal/services/s3"
	"shoal/shared/randtest"
)

// TestMultipartMatchesModel runs random multipart uploads against a model
// of S3's rules: parts uploaded, overwritten and listed in number order
// with their MD5 ETags; a complete that names parts out of order
// (InvalidPartOrder), a part not uploaded or with another ETag
// (InvalidPart), or a non-last part under the minimum size
// (EntityTooSmall) fails and leaves the upload as it was; one that
// succeeds makes an object of the named parts in order, with ETag
// md5-of-md5s-N, and ends the upload (NoSuchUpload after); an abort ends
// it too. The seed is logged; SHOAL_S3_MODEL_SEED replays it.
func TestMultipartMatchesModel(t *testing.T) {
	seed := randtest.Seed(t, "SHOAL_S3_MODEL_SEED")
	rng := rand.New(rand.NewPCG(seed, 91))
	const minPart = 1000
	e := newEnv(t, nil, nil, func(c *s3.Config) { c.MinPartSize = minPart })
	mustCreateBucket(t, e, "mpmodel", nil)
	type part struct {
		data []byte
		etag string
	}
	type upload struct {
		key   string
		parts map[int]part
	}
	var ups []string
	model := map[string]*upload{}
	fail := func(step int, format string, args ...any) {
		t.Helper()
		t.Fatalf("step %d (seed %d): %s", step, seed, fmt.Sprintf(format, args...))
	}
	// pick returns an upload id: mostly one in progress, else any ever
	// made (ended ones must answer NoSuchUpload). Sorted, so a seed
	// replays the same run.
	pick := func() string {
		var live []string
		for id := range model {
			live = append(live, id)
		}
		sort.Strings(live)
		if len(live) > 0 && rng.IntN(5) != 0 {
			return live[rng.IntN(len(live))]
		}
		return ups[rng.IntN(len(ups))]
	}
	// keyOf is an upload's key; any key will do for one that ended.
	keyOf := func(u *upload) string {
		if u == nil {
			return "obj0"
		}
		return u.key
	}
	counts := map[string]int{}
	defer func() { t.Logf("outcomes: %v", counts) }()
	for step := range 400 {
		switch op := rng.IntN(10); {
		case op < 1 || len(ups) == 0: // create
			key := "obj" + strconv.Itoa(rng.IntN(3))
			resp, body := e.do(signS3(t, e, "POST", "/mpmodel/"+key+"?uploads", nil, nil))
			var r struct {
				UploadID string `xml:"UploadId"`
			}
			if resp.StatusCode != 200 || xml.Unmarshal(body, &r) != nil || r.UploadID == "" {
				fail(step, "create upload: %d %s", resp.StatusCode, body)
			}
			ups = append(ups, r.UploadID)
			model[r.UploadID] = &upload{key: key, parts: map[int]part{}}
		case op < 6: // upload a part (maybe again)
			id := pick()
			u := model[id]
			key := keyOf(u)
			n := 1 + rng.IntN(6)
			size := minPart + rng.IntN(500)
			if rng.IntN(3) == 0 {
				size = rng.IntN(minPart) // too small, unless last
			}
			data := bytes.Repeat([]byte{byte(step), byte(n)}, size/2+1)[:size]
			resp, body := e.do(signS3(t, e, "PUT", fmt.Sprintf("/mpmodel/%s?partNumber=%d&uploadId=%s", key, n, id), data, nil))
			if u == nil {
				if resp.StatusCode != 404 {
					fail(step, "part of an ended upload: %d %s", resp.StatusCode, body)
				}
				continue
			}
			sum := md5.Sum(data) //nolint:gosec
			etag := hex.EncodeToString(sum[:])
			if resp.StatusCode != 200 || strings.Trim(resp.Header.Get("ETag"), `"`) != etag {
				fail(step, "upload part %d: %d, ETag %s, want %s: %s", n, resp.StatusCode, resp.Header.Get("ETag"), etag, body)
			}
			u.parts[n] = part{data, etag}
			counts["part"]++
		case op < 7: // list parts
			id := pick()
			u := model[id]
			key := keyOf(u)
			resp, body := e.do(signS3(t, e, "GET", "/mpmodel/"+key+"?uploadId="+id, nil, nil))
			if u == nil {
				if resp.StatusCode != 404 {
					fail(step, "list parts of an ended upload: %d %s", resp.StatusCode, body)
				}
				continue
			}
			var r struct {
				Parts []struct {
					PartNumber int    `xml:"PartNumber"`
					ETag       string `xml:"ETag"`
					Size       int    `xml:"Size"`
				} `xml:"Part"`
			}
			if resp.StatusCode != 200 || xml.Unmarshal(body, &r) != nil {
				fail(step, "list parts: %d %s", resp.StatusCode, body)
			}
			var got, want []string
			for _, p := range r.Parts {
				got = append(got, fmt.Sprintf("%d %s %d", p.PartNumber, strings.Trim(p.ETag, `"`), p.Size))
			}
			nums := make([]int, 0, len(u.parts))
			for n := range u.parts {
				nums = append(nums, n)
			}
			sort.Ints(nums)
			for _, n := range nums {
				want = append(want, fmt.Sprintf("%d %s %d", n, u.parts[n].etag, len(u.parts[n].data)))
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				fail(step, "list parts: %v, want %v", got, want)
			}
		case op < 9: // complete with a random selection
			id := pick()
			u := model[id]
			if u == nil {
				continue
			}
			var all, nums []int
			for n := range u.parts {
				all = append(all, n)
			}
			sort.Ints(all)
			for _, n := range all {
				if rng.IntN(4) != 0 {
					nums = append(nums, n)
				}
			}
			if rng.IntN(6) == 0 {
				nums = append(nums, 1+rng.IntN(8)) // maybe missing, maybe out of order
			}
			if len(nums) > 1 && rng.IntN(6) == 0 {
				nums[0], nums[1] = nums[1], nums[0]
			}
			var doc strings.Builder
			doc.WriteString("<CompleteMultipartUpload>")
			var etags []string
			for i, n := range nums {
				etag := u.parts[n].etag
				if i == 0 && rng.IntN(8) == 0 {
					etag = strings.Repeat("0", 32)
				}
				etags = append(etags, etag)
				fmt.Fprintf(&doc, `<Part><PartNumber>%d</PartNumber><ETag>"%s"</ETag></Part>`, n, etag)
			}
			doc.WriteString("</CompleteMultipartUpload>")
			// The model's verdict, in S3's order of checks.
			wantCode := ""
			for i := 1; i < len(nums); i++ {
				if nums[i] <= nums[i-1] {
					wantCode = "InvalidPartOrder"
				}
			}
			if len(nums) == 0 {
				wantCode = "MalformedXML"
			}
			var whole []byte
			var md5s []byte
			for i, n := range nums {
				if wantCode != "" {
					break
				}
				p, ok := u.parts[n]
				switch {
				case !ok || etags[i] != p.etag:
					wantCode = "InvalidPart"
				case i < len(nums)-1 && len(p.data) < minPart:
					wantCode = "EntityTooSmall"
				}
				whole = append(whole, p.data...)
				sum, _ := hex.DecodeString(p.etag)
				md5s = append(md5s, sum...)
			}
			resp, body := e.do(signS3(t, e, "POST", "/mpmodel/"+u.key+"?uploadId="+id, []byte(doc.String()), nil))
			if wantCode != "" {
				expectErr(t, fmt.Sprintf("step %d (seed %d): complete %v", step, seed, nums), resp, body, 400, wantCode)
				counts["complete "+wantCode]++
				continue
			}
			var r struct {
				ETag string `xml:"ETag"`
			}
			sum := md5.Sum(md5s) //nolint:gosec
			wantETag := hex.EncodeToString(sum[:]) + "-" + strconv.Itoa(len(nums))
			if resp.StatusCode != 200 || xml.Unmarshal(body, &r) != nil || strings.Trim(r.ETag, `"`) != wantETag {
				fail(step, "complete %v: %d %s, want ETag %s", nums, resp.StatusCode, body, wantETag)
			}
			delete(model, id)
			counts["complete"]++
			resp, got := e.do(signS3(t, e, "GET", "/mpmodel/"+u.key, nil, nil))
			if resp.StatusCode != 200 || !bytes.Equal(got, whole) || strings.Trim(resp.Header.Get("ETag"), `"`) != wantETag {
				fail(step, "GET after complete: %d, %d bytes (want %d), ETag %s", resp.StatusCode, len(got), len(whole), resp.Header.Get("ETag"))
			}
		default: // abort
			id := pick()
			u := model[id]
			key := keyOf(u)
			resp, body := e.do(signS3(t, e, "DELETE", "/mpmodel/"+key+"?uploadId="+id, nil, nil))
			if u == nil {
				if resp.StatusCode != 404 {
					fail(step, "abort of an ended upload: %d %s", resp.StatusCode, body)
				}
				continue
			}
			if resp.StatusCode != 204 {
				fail(step, "abort: %d %s", resp.StatusCode, body)
			}
			delete(model, id)
			counts["abort"]++
		}
	}
}
