// Package placement computes where a block lives from a membership view:
// weighted rendezvous (highest-random-weight) hashing, with replicas spread
// over distinct zones. It is a pure function of (view, address) so every
// client computes the same answer without asking anyone; it keeps no state
// and does no I/O.
package placement

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"sort"
)

// Node is what placement needs to know about a storage node.
type Node struct {
	ID     string
	Zone   string
	Weight float64 // relative capacity; <= 0 is treated as 1
}

// Table is a prepared view: per-node hash seeds are computed once so that
// placing a key costs one mix and one log per node.
type Table struct {
	nodes []Node
	seeds []uint64
}

// NewTable prepares nodes for placement. The order of nodes does not matter.
func NewTable(nodes []Node) *Table {
	t := &Table{nodes: append([]Node(nil), nodes...)}
	sort.Slice(t.nodes, func(i, j int) bool { return t.nodes[i].ID < t.nodes[j].ID })
	t.seeds = make([]uint64, len(t.nodes))
	for i, n := range t.nodes {
		h := fnv.New64a()
		h.Write([]byte(n.ID))
		t.seeds[i] = h.Sum64()
	}
	return t
}

// Len is the number of nodes in the table.
func (t *Table) Len() int { return len(t.nodes) }

// Nodes returns the table's nodes in ID order.
func (t *Table) Nodes() []Node { return t.nodes }

// mix is splitmix64's finalizer: a cheap bijection with full avalanche, so
// the score of (key, node) is independent across nodes.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// score is the weighted rendezvous score -w/ln(u), u uniform in (0,1): the
// node with the highest score wins with probability proportional to w, and
// adding a node only takes keys from others (never shuffles them).
func score(key, seed uint64, w float64) float64 {
	h := mix(key ^ seed)
	u := (float64(h>>11) + 0.5) / (1 << 53)
	if w <= 0 {
		w = 1
	}
	return -w / math.Log(u)
}

// KeyOf folds a block address (already uniformly distributed) into 64 bits.
func KeyOf(addr []byte) uint64 {
	if len(addr) >= 8 {
		return binary.LittleEndian.Uint64(addr) ^ binary.LittleEndian.Uint64(addr[len(addr)-8:])
	}
	h := fnv.New64a()
	h.Write(addr)
	return h.Sum64()
}

// Rank returns every node ordered by preference for key, with distinct zones
// first: the first min(R, zones) entries are in distinct zones, so taking a
// prefix of length R spreads replicas over zones whenever there are at least
// R zones. Entries past the zone-spread prefix follow plain score order, which
// is where reads look for a block whose placement moved.
func (t *Table) Rank(key uint64) []Node {
	idx := t.order(key)
	out := make([]Node, len(idx))
	for i, j := range idx {
		out[i] = t.nodes[j]
	}
	return out
}

// Pick returns the first r nodes of Rank(key).
func (t *Table) Pick(key uint64, r int) []Node {
	if r > len(t.nodes) {
		r = len(t.nodes)
	}
	return t.Rank(key)[:r]
}

func (t *Table) order(key uint64) []int {
	n := len(t.nodes)
	type cand struct {
		i int
		s float64
	}
	c := make([]cand, n)
	for i := range t.nodes {
		c[i] = cand{i, score(key, t.seeds[i], t.nodes[i].Weight)}
	}
	sort.Slice(c, func(a, b int) bool { return c[a].s > c[b].s })
	out := make([]int, 0, n)
	used := make([]bool, n)
	zones := map[string]bool{}
	// First pass: the best node of each zone, in score order.
	for _, x := range c {
		z := t.nodes[x.i].Zone
		if !zones[z] {
			zones[z] = true
			used[x.i] = true
			out = append(out, x.i)
		}
	}
	for _, x := range c {
		if !used[x.i] {
			out = append(out, x.i)
		}
	}
	return out
}
