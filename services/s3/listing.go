package s3

import (
	"context"
	"strings"
)

// pager yields the index in key order, one shard at a time.
type pager interface {
	page(ctx context.Context, start string) (keys []string, vals [][]byte, next string, more bool, err error)
}

// listItem is one result: a key's sub-item (e.g. one version) or a common
// prefix.
type listItem struct {
	key    string
	val    []byte
	sub    int
	prefix string
}

type listing struct {
	items     []listItem
	truncated bool
}

// listSpec says what to list. Items are counted per key by count (0 hides
// the key); skip says how many sub-items of the first key to skip.
type listSpec struct {
	prefix    string
	delimiter string
	start     string // first index key considered (inclusive)
	max       int
	count     func(key string, val []byte) (int, error)
	skip      func(key string, val []byte) int
	// keyOf maps an index key to the name prefixes and delimiters apply
	// to (uploads are stored as key\x00uploadID).
	keyOf func(indexKey string) string
}

// prefixEnd is the smallest string greater than every string starting with
// p, or "" if there is none.
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// list walks the index from spec.start. It reads only the shards holding
// the range it returns, and jumps over each rolled-up common prefix with a
// fresh lookup instead of reading every key under it.
func list(ctx context.Context, p pager, spec listSpec) (listing, error) {
	var out listing
	if spec.max <= 0 {
		return out, nil
	}
	keyOf := spec.keyOf
	if keyOf == nil {
		keyOf = func(k string) string { return k }
	}
	start := max(spec.start, spec.prefix)
	first := spec.start
	for {
		keys, vals, next, more, err := p.page(ctx, start)
		if err != nil {
			return out, err
		}
		jumped := false
		for i, ik := range keys {
			k := keyOf(ik)
			if !strings.HasPrefix(k, spec.prefix) {
				if k > spec.prefix {
					return out, nil // past the prefix range: done
				}
				continue
			}
			n, err := spec.count(ik, vals[i])
			if err != nil {
				return out, err
			}
			if n == 0 {
				continue
			}
			if spec.delimiter != "" {
				rest := k[len(spec.prefix):]
				if j := strings.Index(rest, spec.delimiter); j >= 0 {
					cp := spec.prefix + rest[:j+len(spec.delimiter)]
					if len(out.items) == spec.max {
						out.truncated = true
						return out, nil
					}
					out.items = append(out.items, listItem{prefix: cp})
					start = prefixEnd(cp)
					if start == "" {
						return out, nil
					}
					jumped = true
					break
				}
			}
			from := 0
			if ik == first && spec.skip != nil {
				from = spec.skip(ik, vals[i])
			}
			for sub := from; sub < n; sub++ {
				if len(out.items) == spec.max {
					out.truncated = true
					return out, nil
				}
				out.items = append(out.items, listItem{key: ik, val: vals[i], sub: sub})
			}
		}
		if jumped {
			continue
		}
		if !more {
			return out, nil
		}
		start = next
	}
}

// afterMarker returns the first index key to consider after an exclusive
// marker. A marker inside a rolled-up common prefix skips the whole prefix,
// which was already returned.
func afterMarker(marker, prefix, delimiter string) string {
	if marker == "" {
		return ""
	}
	start := marker + "\x00"
	if delimiter != "" && strings.HasPrefix(marker, prefix) {
		rest := marker[len(prefix):]
		if j := strings.Index(rest, delimiter); j >= 0 {
			if end := prefixEnd(prefix + rest[:j+len(delimiter)]); end != "" {
				start = max(start, end)
			} else {
				return "\xff\xff\xff\xff" // nothing can follow
			}
		}
	}
	return start
}
