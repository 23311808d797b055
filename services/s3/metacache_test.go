package s3

import (
	"testing"
	"time"
)

func TestMetaCacheExpiresAndDrops(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newMetaCache(time.Second, func() time.Time { return now })
	kt := &keyTable{}
	b := &bucket{}
	if c.getKeys() != nil || c.getBucket("b") != nil {
		t.Fatal("empty cache answered")
	}
	c.putKeys(kt)
	c.putBucket("b", b)
	if c.getKeys() != kt || c.getBucket("b") != b {
		t.Fatal("fresh entries not served")
	}
	now = now.Add(999 * time.Millisecond)
	if c.getKeys() != kt || c.getBucket("b") != b {
		t.Fatal("entries expired early")
	}
	now = now.Add(time.Millisecond)
	if c.getKeys() != nil || c.getBucket("b") != nil {
		t.Fatal("entries served past the TTL")
	}
	c.putKeys(kt)
	c.putBucket("b", b)
	c.dropKeys()
	c.dropBucket("b")
	if c.getKeys() != nil || c.getBucket("b") != nil {
		t.Fatal("dropped entries served")
	}
	off := newMetaCache(0, func() time.Time { return now })
	off.putKeys(kt)
	off.putBucket("b", b)
	if off.getKeys() != nil || off.getBucket("b") != nil {
		t.Fatal("TTL 0 cached")
	}
}
