package s3

import (
	"sync"
	"time"
)

// metaCache keeps what nearly every request reads and almost nothing
// writes: the access-key table (for the signature check) and bucket
// records. Without it a small GET costs three quorum reads before its
// data; with it, one. Entries live Config.MetaCacheTTL and are dropped at
// once when this server changes them; only successful reads are kept, so
// a bucket created elsewhere is seen on the next request.
type metaCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	keys    *keyTable
	keysAt  time.Time
	buckets map[string]cachedBucket
}

type cachedBucket struct {
	b  *bucket
	at time.Time
}

// maxCachedBuckets bounds the bucket map; past it the map starts over.
const maxCachedBuckets = 10_000

func newMetaCache(ttl time.Duration, now func() time.Time) *metaCache {
	return &metaCache{ttl: ttl, now: now, buckets: map[string]cachedBucket{}}
}

func (c *metaCache) fresh(at time.Time) bool {
	return c.ttl > 0 && !at.IsZero() && c.now().Sub(at) < c.ttl
}

func (c *metaCache) getKeys() *keyTable {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys != nil && c.fresh(c.keysAt) {
		return c.keys
	}
	return nil
}

func (c *metaCache) putKeys(t *keyTable) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys, c.keysAt = t, c.now()
}

func (c *metaCache) dropKeys() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = nil
}

func (c *metaCache) getBucket(name string) *bucket {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.buckets[name]; ok && c.fresh(e.at) {
		return e.b
	}
	return nil
}

func (c *metaCache) putBucket(name string, b *bucket) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buckets) >= maxCachedBuckets {
		c.buckets = map[string]cachedBucket{}
	}
	c.buckets[name] = cachedBucket{b, c.now()}
}

func (c *metaCache) dropBucket(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.buckets, name)
}
