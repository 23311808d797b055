// Package sizedcache is a map bounded by the bytes its values stand for,
// for caches of decoded blocks whose sizes vary by orders of magnitude
// (a 100-byte record next to a 256 KiB index shard), where a count bound
// would be meaningless. Past the budget it drops entries at random: the
// callers' hot sets are small next to the budget, so recency bookkeeping
// would cost more on every hit than it saves.
package sizedcache

import "sync"

// Cache maps K to V within a byte budget. The zero value is not usable;
// use New. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	mu     sync.Mutex
	m      map[K]entry[V]
	bytes  int
	budget int
}

type entry[V any] struct {
	v    V
	size int
}

// New returns an empty cache holding at most budget bytes.
func New[K comparable, V any](budget int) *Cache[K, V] {
	return &Cache[K, V]{m: map[K]entry[V]{}, budget: budget}
}

// Get returns k's value.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	return e.v, ok
}

// Put sets k's value, which stands for size bytes, and drops entries at
// random while the cache is over its budget.
func (c *Cache[K, V]) Put(k K, v V, size int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bytes += size - c.m[k].size
	c.m[k] = entry[V]{v, size}
	for key, e := range c.m { // map order is random
		if c.bytes <= c.budget {
			break
		}
		c.bytes -= e.size
		delete(c.m, key)
	}
}

// Drop removes k.
func (c *Cache[K, V]) Drop(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bytes -= c.m[k].size
	delete(c.m, k)
}

// Bytes is the size the cached values stand for.
func (c *Cache[K, V]) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
