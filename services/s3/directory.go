package s3

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"
)

// The directory of a bucket index is a tree of hint blocks over its shards.
// A level-0 node lists (lo, shard address) pairs; a node of level n > 0
// lists (lo, node address) pairs of level n-1, each child's first entry
// being the lo its parent lists it under. The root's address is the
// index's and never changes. A lookup descends by the greatest lo <= key at
// each level and lands on a shard whose lo <= key, from which right links
// lead to the shard covering the key: any entry is correct to follow, so
// the tree is only a hint, cached per server, and no change to it has to be
// atomic with another.
//
// A node over dirSplitBytes splits: a new right sibling takes the upper
// half of its entries, the parent lists it, then the node drops that half.
// The root instead moves its entries into two new children and goes up a
// level, so its address stays. A shard listed in a node between a split's
// copy and its cut drops out of the directory; the first lookup that
// reaches it through a right link lists it again (repair), as it does
// for a shard whose split stopped before listing it.
//
// One level held ~3,500 shards of keys ~250 bytes long (the block limit):
// 10 million keys of 1 KiB would have needed 40,000.

const (
	// dirSplitBytes is the size above which a directory node splits.
	dirSplitBytes = 128 << 10
	// maxDirBytes keeps directory blocks under the ~1 MiB block limit while
	// a split is pending: an insert beyond it is refused (and repaired
	// later).
	maxDirBytes = 900 << 10
	// maxDirDepth bounds the tree, so a corrupt one cannot loop a lookup.
	// Each level multiplies the shards reachable by hundreds.
	maxDirDepth = 8
)

type directory struct {
	level int // 0: entries name shards; n: directory nodes of level n-1
	los   []string
	addrs [][32]byte
}

// find returns the entry with the greatest lo <= k.
func (d *directory) find(k string) [32]byte {
	i := sort.SearchStrings(d.los, k)
	if i < len(d.los) && d.los[i] == k {
		return d.addrs[i]
	}
	if i == 0 { // cannot happen: a node is listed under its first lo
		return d.addrs[0]
	}
	return d.addrs[i-1]
}

// insert adds (lo, a) in order; false if lo is listed already.
func (d *directory) insert(lo string, a [32]byte) bool {
	i, found := slices.BinarySearch(d.los, lo)
	if found {
		return false
	}
	d.los = slices.Insert(d.los, i, lo)
	d.addrs = slices.Insert(d.addrs, i, a)
	return true
}

// encode writes level-0 nodes in the original one-level format, which
// every version reads; higher levels add their level.
func (d *directory) encode() []byte {
	b := []byte{dirMagic, 1}
	if d.level > 0 {
		b = []byte{dirMagic, 2}
		b = binary.AppendUvarint(b, uint64(d.level))
	}
	b = binary.AppendUvarint(b, uint64(len(d.los)))
	for i := range d.los {
		b = appendStr(b, d.los[i])
		b = append(b, d.addrs[i][:]...)
	}
	return b
}

func decodeDir(b []byte) (*directory, error) {
	if len(b) < 2 || b[0] != dirMagic || (b[1] != 1 && b[1] != 2) {
		return nil, errCorruptMeta
	}
	dec := &decoder{b: b[2:]}
	d := &directory{}
	if b[1] == 2 {
		lv := dec.uvarint()
		if lv == 0 || lv > maxDirDepth {
			return nil, errCorruptMeta
		}
		d.level = int(lv)
	}
	n := dec.uvarint()
	if n > uint64(len(b)) {
		return nil, errCorruptMeta
	}
	for i := uint64(0); i < n && dec.err == nil; i++ {
		d.los = append(d.los, dec.str())
		var a [32]byte
		copy(a[:], dec.bytes(32))
		d.addrs = append(d.addrs, a)
	}
	if dec.err != nil || len(d.los) == 0 || !sort.StringsAreSorted(d.los) {
		return nil, errCorruptMeta
	}
	return d, nil
}

// dirCache keeps decoded directory nodes per address, shared by all
// indexes of one server. Entries are hints, refreshed when lookups find them
// stale, so there is no invalidation protocol between servers.
type dirCache struct {
	mu   sync.Mutex
	dirs map[[32]byte]*directory
}

func newDirCache() *dirCache { return &dirCache{dirs: map[[32]byte]*directory{}} }

func (c *dirCache) get(a [32]byte) *directory {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dirs[a]
}

func (c *dirCache) put(a [32]byte, d *directory) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.dirs) > 4096 { // many buckets: drop everything rather than track use
		clear(c.dirs)
	}
	c.dirs[a] = d
}

func (c *dirCache) drop(a [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.dirs, a)
}

// dirStep is one node on the way from the root to a shard.
type dirStep struct {
	addr [32]byte
	d    *directory
}

// node returns the directory node at a, from the cache unless fresh; cached
// reports which.
func (ix *index) node(ctx context.Context, a [32]byte, fresh bool) (*directory, bool, error) {
	if !fresh {
		if d := ix.cache.get(a); d != nil {
			return d, true, nil
		}
	}
	b, _, err := ix.meta.Get(ctx, a)
	if errors.Is(err, ErrNotFound) {
		ix.cache.drop(a)
		return nil, false, errIndexGone
	}
	if err != nil {
		return nil, false, err
	}
	d, err := decodeDir(b)
	if err != nil {
		return nil, false, err
	}
	if a == ix.dir && d.los[0] != "" {
		return nil, false, errCorruptMeta
	}
	ix.cache.put(a, d)
	return d, false, nil
}

// path descends from the root to the level-0 node covering k, appending
// the nodes to steps. cached reports whether every node came from this
// server's cache (and so may be stale).
func (ix *index) path(ctx context.Context, k string, fresh bool, steps []dirStep) ([]dirStep, bool, error) {
	a, all, start := ix.dir, true, len(steps)
	for {
		d, cached, err := ix.node(ctx, a, fresh)
		if errors.Is(err, errIndexGone) && a != ix.dir && !fresh {
			return ix.path(ctx, k, true, steps[:start]) // a stale parent; nodes go only with the index
		}
		if err != nil {
			return nil, false, err
		}
		all = all && cached
		if n := len(steps) - start; n > maxDirDepth || (n > 0 && d.level != steps[len(steps)-1].d.level-1) {
			if !fresh {
				return ix.path(ctx, k, true, steps[:start])
			}
			return nil, false, errCorruptMeta
		}
		steps = append(steps, dirStep{addr: a, d: d})
		if d.level == 0 {
			return steps, all, nil
		}
		a = d.find(k)
	}
}

// route returns the shard the directory names for k (lo <= k; right links
// lead on from it). Every GET and PUT routes, so its path stays on the
// stack.
func (ix *index) route(ctx context.Context, k string, fresh bool) ([32]byte, bool, error) {
	var buf [maxDirDepth + 2]dirStep
	p, cached, err := ix.path(ctx, k, fresh, buf[:0])
	if err != nil {
		return [32]byte{}, false, err
	}
	return p[len(p)-1].d.find(k), cached, nil
}

func (ix *index) dirSplit() int {
	if ix.dirSplitBytes > 0 {
		return ix.dirSplitBytes
	}
	return dirSplitBytes
}

// publish lists a shard in the directory (the last step of a split, or a
// repair) and splits the node if it grew too large. Failing here is
// harmless: the shard is reachable through right links.
func (ix *index) publish(ctx context.Context, lo string, a [32]byte) error {
	for attempt := 0; attempt < 3; attempt++ {
		path, _, err := ix.path(ctx, lo, true, nil)
		if err != nil {
			return err
		}
		leaf := path[len(path)-1]
		var nd *directory
		var size int
		_, err = ix.meta.Update(ctx, leaf.addr, func(cur []byte) ([]byte, error) {
			d, out, werr := withEntry(cur, 0, lo, a)
			nd, size = d, len(out)
			return out, werr
		})
		if nd != nil {
			ix.cache.put(leaf.addr, nd)
		}
		switch {
		case errors.Is(err, errSplitRace):
			continue // the root went up a level since
		case errors.Is(err, errNoSplit):
			return nil // listed already
		case err != nil:
			return err
		}
		if size > ix.dirSplit() {
			return ix.splitNode(ctx, path, len(path)-1)
		}
		return nil
	}
	return nil
}

// withEntry returns the node cur encodes with (lo, a) listed, and its
// encoding: errSplitRace if the node is not at level, errNoSplit (with the
// node) if lo is listed already, errDirFull if it would be too large.
func withEntry(cur []byte, level int, lo string, a [32]byte) (*directory, []byte, error) {
	d, err := decodeDir(cur)
	if err != nil {
		return nil, nil, err
	}
	if d.level != level {
		return nil, nil, errSplitRace
	}
	if !d.insert(lo, a) {
		return d, nil, errNoSplit
	}
	out := d.encode()
	if len(out) > maxDirBytes {
		return nil, nil, errDirFull
	}
	return d, out, nil
}

// splitNode splits path[i], which is over the limit: its upper half goes
// to a new right sibling listed in the parent, and the parent splits in turn
// if that makes it too large. The root grows instead.
func (ix *index) splitNode(ctx context.Context, path []dirStep, i int) error {
	if i == 0 {
		return ix.growRoot(ctx)
	}
	at, parent := path[i].addr, path[i-1].addr
	d, _, err := ix.node(ctx, at, true)
	if err != nil {
		return err
	}
	if len(d.encode()) <= ix.dirSplit() || len(d.los) < 2 {
		return nil
	}
	mid := len(d.los) / 2
	right := &directory{level: d.level, los: slices.Clone(d.los[mid:]), addrs: slices.Clone(d.addrs[mid:])}
	ra, err := ix.meta.CreateMutable(ctx, right.encode())
	if err != nil {
		return err
	}
	var np *directory
	var psize int
	_, err = ix.meta.Update(ctx, parent, func(cur []byte) ([]byte, error) {
		p, out, werr := withEntry(cur, d.level+1, right.los[0], ra)
		np, psize = p, len(out)
		return out, werr
	})
	if err != nil {
		if refused(err) {
			_ = ix.meta.Delete(ctx, ra)
		}
		if errors.Is(err, errSplitRace) || errors.Is(err, errNoSplit) {
			return nil // the root grew, or another server split this node
		}
		return err
	}
	ix.cache.put(parent, np)
	ix.cache.put(ra, right)
	var nd *directory
	_, err = ix.meta.Update(ctx, at, func(cur []byte) ([]byte, error) {
		nd = nil
		n, err := decodeDir(cur)
		if err != nil {
			return nil, err
		}
		j := sort.SearchStrings(n.los, right.los[0])
		if j == 0 || j == len(n.los) {
			return nil, errNoSplit // cut already
		}
		n.los, n.addrs = n.los[:j], n.addrs[:j]
		nd = n
		return n.encode(), nil
	})
	if nd != nil {
		ix.cache.put(at, nd)
	}
	if err != nil && !errors.Is(err, errNoSplit) {
		return err
	}
	if psize > ix.dirSplit() {
		return ix.splitNode(ctx, path, i-1)
	}
	return nil
}

// growRoot moves the root's entries into two new children and makes the
// root list them, one level up, if the root is unchanged meanwhile (if not,
// the next publish tries again).
func (ix *index) growRoot(ctx context.Context) error {
	b, _, err := ix.meta.Get(ctx, ix.dir)
	if err != nil {
		return err
	}
	d, err := decodeDir(b)
	if err != nil {
		return err
	}
	if len(b) <= ix.dirSplit() || len(d.los) < 2 || d.level >= maxDirDepth {
		return nil
	}
	mid := len(d.los) / 2
	left := &directory{level: d.level, los: d.los[:mid], addrs: d.addrs[:mid]}
	right := &directory{level: d.level, los: d.los[mid:], addrs: d.addrs[mid:]}
	la, err := ix.meta.CreateMutable(ctx, left.encode())
	if err != nil {
		return err
	}
	ra, err := ix.meta.CreateMutable(ctx, right.encode())
	if err != nil {
		_ = ix.meta.Delete(ctx, la)
		return err
	}
	root := &directory{level: d.level + 1, los: []string{"", right.los[0]}, addrs: [][32]byte{la, ra}}
	_, err = ix.meta.Update(ctx, ix.dir, func(cur []byte) ([]byte, error) {
		if !bytes.Equal(cur, b) {
			return nil, errSplitRace
		}
		return root.encode(), nil
	})
	if err != nil {
		if refused(err) {
			_ = ix.meta.Delete(ctx, la)
			_ = ix.meta.Delete(ctx, ra)
		}
		if errors.Is(err, errSplitRace) {
			return nil
		}
		return err
	}
	ix.cache.put(la, left)
	ix.cache.put(ra, right)
	ix.cache.put(ix.dir, root)
	return nil
}

// repair lists a shard that a lookup reached only through a right link, if
// a fresh look at the directory confirms it is missing: in the background,
// once at a time per shard and server.
func (ix *index) repair(addr [32]byte, lo string) {
	if ix.repairing == nil || ix.bg == nil {
		return
	}
	if _, busy := ix.repairing.LoadOrStore(addr, true); busy {
		return
	}
	started := ix.bg.run(10*time.Second, func(ctx context.Context) {
		defer ix.repairing.Delete(addr)
		if got, _, err := ix.route(ctx, lo, true); err != nil || got == addr {
			return
		}
		_ = ix.publish(ctx, lo, addr)
	})
	if !started {
		ix.repairing.Delete(addr) // shutting down: a later lookup repairs it
	}
}

// dirNodes returns the addresses of every directory node below the root.
func (ix *index) dirNodes(ctx context.Context) ([][32]byte, error) {
	seen := map[[32]byte]bool{}
	var out [][32]byte
	level := [][32]byte{ix.dir}
	for depth := 0; len(level) > 0 && depth <= maxDirDepth; depth++ {
		var next [][32]byte
		for _, a := range level {
			d, _, err := ix.node(ctx, a, true)
			if errors.Is(err, errIndexGone) && a != ix.dir {
				continue
			}
			if err != nil {
				return nil, err
			}
			if d.level == 0 {
				continue
			}
			for _, c := range d.addrs {
				if !seen[c] {
					seen[c] = true
					out = append(out, c)
					next = append(next, c)
				}
			}
		}
		level = next
	}
	return out, nil
}
