package s3_test

import (
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"shoal/shared/randtest"
)

// TestListingMatchesModel lists a bucket of random keys (a small alphabet
// with slashes, some sharing prefixes, some with characters that need
// escaping) with random ListObjects V1 and V2 requests (prefix, delimiter,
// max-keys, marker or start-after, encoding-type=url), following every
// page to the end, and requires what the pages hold together to be what
// S3 returns: the keys under the prefix after the start, in byte order,
// those with the delimiter after the prefix rolled up into common
// prefixes, each once; no page holds more than max-keys entries, and a
// page says it is truncated exactly when more follow.
func TestListingMatchesModel(t *testing.T) {
	seed := randtest.Seed(t, "SHOAL_S3_MODEL_SEED")
	rng := rand.New(rand.NewPCG(seed, 13))
	e := newEnv(t, nil, nil, nil)
	mustCreateBucket(t, e, "lmodel", nil)
	alphabet := []string{"a", "b", "/", "a/", "é", " ", "+", "%", "z"}
	keySet := map[string]bool{}
	for len(keySet) < 150 {
		var k strings.Builder
		for range 1 + rng.IntN(6) {
			k.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		keySet[k.String()] = true
	}
	keys := make([]string, 0, len(keySet))
	for k := range keySet {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if resp, body := e.do(signS3(t, e, "PUT", "/lmodel/"+escapeKey(k), []byte(k), nil)); resp.StatusCode != 200 {
			t.Fatalf("put %q: %d %s", k, resp.StatusCode, body)
		}
	}
	for round := range 150 {
		prefix := ""
		if rng.IntN(2) == 0 {
			prefix = alphabet[rng.IntN(len(alphabet))]
		}
		delim := []string{"", "", "/", "a", "a/", "é"}[rng.IntN(6)]
		maxKeys := []int{0, 1, 2, 3, 7, 1000}[rng.IntN(6)]
		start := ""
		if rng.IntN(3) == 0 {
			start = keys[rng.IntN(len(keys))]
		}
		v2 := rng.IntN(2) == 0
		encode := rng.IntN(2) == 0

		// The model.
		var want []string
		seenPrefix := map[string]bool{}
		for _, k := range keys {
			if !strings.HasPrefix(k, prefix) || k <= start {
				continue
			}
			if delim != "" {
				if i := strings.Index(k[len(prefix):], delim); i >= 0 {
					cp := k[:len(prefix)+i+len(delim)]
					if !seenPrefix[cp] {
						seenPrefix[cp] = true
						if cp > start {
							want = append(want, "P "+cp)
						}
					}
					continue
				}
			}
			want = append(want, "K "+k)
		}

		what := fmt.Sprintf("round %d (seed %d): v2 %v prefix %q delimiter %q max-keys %d start %q url %v", round, seed, v2, prefix, delim, maxKeys, start, encode)
		var got []string
		marker, token := start, ""
		for page := 0; ; page++ {
			if page > len(keys)+2 {
				t.Fatalf("%s: no end after %d pages", what, page)
			}
			q := url.Values{}
			q.Set("prefix", prefix)
			q.Set("delimiter", delim)
			q.Set("max-keys", strconv.Itoa(maxKeys))
			if encode {
				q.Set("encoding-type", "url")
			}
			if v2 {
				q.Set("list-type", "2")
				if token != "" {
					q.Set("continuation-token", token)
				} else if start != "" {
					q.Set("start-after", start)
				}
			} else if marker != "" {
				q.Set("marker", marker)
			}
			resp, body := e.do(signS3(t, e, "GET", "/lmodel?"+q.Encode(), nil, nil))
			if resp.StatusCode != 200 {
				t.Fatalf("%s: page %d: %d %s", what, page, resp.StatusCode, body)
			}
			var r struct {
				IsTruncated    bool                      `xml:"IsTruncated"`
				NextMarker     string                    `xml:"NextMarker"`
				NextToken      string                    `xml:"NextContinuationToken"`
				KeyCount       int                       `xml:"KeyCount"`
				Contents       []struct{ Key string }    `xml:"Contents"`
				CommonPrefixes []struct{ Prefix string } `xml:"CommonPrefixes"`
			}
			if err := xml.Unmarshal(body, &r); err != nil {
				t.Fatalf("%s: page %d: %v", what, page, err)
			}
			dec := func(s string) string {
				if !encode {
					return s
				}
				d, err := url.QueryUnescape(s)
				if err != nil {
					t.Fatalf("%s: %q is not URL-encoded: %v", what, s, err)
				}
				return d
			}
			var entries []string
			for _, c := range r.Contents {
				entries = append(entries, "K "+dec(c.Key))
			}
			for _, p := range r.CommonPrefixes {
				entries = append(entries, "P "+dec(p.Prefix))
			}
			// Keys and prefixes come in two lists; in the listing they
			// interleave in byte order.
			slices.SortFunc(entries, func(a, b string) int { return strings.Compare(a[2:], b[2:]) })
			if len(entries) > maxKeys {
				t.Fatalf("%s: page %d holds %d entries", what, page, len(entries))
			}
			if v2 && r.KeyCount != len(entries) {
				t.Fatalf("%s: page %d: KeyCount %d for %d entries", what, page, r.KeyCount, len(entries))
			}
			got = append(got, entries...)
			if !r.IsTruncated {
				break
			}
			if len(entries) == 0 {
				t.Fatalf("%s: page %d is empty and truncated", what, page)
			}
			if v2 {
				if r.NextToken == "" {
					t.Fatalf("%s: page %d is truncated without a continuation token", what, page)
				}
				token = r.NextToken
			} else {
				// NextMarker is given with a delimiter; without one the
				// next marker is the last key.
				last := entries[len(entries)-1][2:]
				if delim != "" {
					if r.NextMarker == "" {
						t.Fatalf("%s: page %d is truncated without NextMarker", what, page)
					}
					last = dec(r.NextMarker)
				}
				marker = last
			}
		}
		if maxKeys == 0 {
			if len(got) != 0 {
				t.Fatalf("%s: max-keys 0 listed %v", what, got)
			}
			continue
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s:\ngot  %q\nwant %q", what, got, want)
		}
	}
}
