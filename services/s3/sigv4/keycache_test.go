package sigv4

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// A cached signing key is used only for the secret it was derived from:
// once the key's secret is another, the same signature no longer passes.
func TestKeyCacheFollowsTheSecret(t *testing.T) {
	var keys KeyCache
	v := docVerifier(docTime)
	v.Keys = &keys
	for i := range 2 { // derived, then cached
		if _, err := v.Verify(context.Background(), docHeaderRequest()); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
	}
	if len(keys.keys) != 1 {
		t.Fatalf("%d keys cached, want 1", len(keys.keys))
	}
	v.Lookup = func(context.Context, string) (string, error) { return docSecret + "x", nil }
	if _, err := v.Verify(context.Background(), docHeaderRequest()); !errors.Is(err, ErrSignatureMismatch) {
		t.Fatalf("another secret: %v", err)
	}
}

func TestKeyCacheBounded(t *testing.T) {
	var keys KeyCache
	for i := range 3 * maxCachedKeys {
		want := signingKey(fmt.Sprint("secret", i), "20130524", "us-east-1", "s3")
		if got := keys.get(fmt.Sprint("secret", i), "20130524", "us-east-1", "s3"); string(got) != string(want) {
			t.Fatalf("key %d differs from its derivation", i)
		}
		if len(keys.keys) > maxCachedKeys {
			t.Fatalf("%d keys cached, bound %d", len(keys.keys), maxCachedKeys)
		}
	}
}

// The header check of a GET, deriving the signing key each time or taking
// it from a KeyCache.
func BenchmarkVerifyHeader(b *testing.B) {
	for _, cached := range []bool{false, true} {
		b.Run(fmt.Sprintf("cached=%v", cached), func(b *testing.B) {
			v := docVerifier(docTime.Add(time.Minute))
			if cached {
				v.Keys = &KeyCache{}
			}
			r := docHeaderRequest()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(context.Background(), r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
