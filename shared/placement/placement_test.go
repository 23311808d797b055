package placement

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func keys(n int, seed uint64) []uint64 {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]uint64, n)
	for i := range out {
		out[i] = r.Uint64()
	}
	return out
}

func equalNodes(n int, zones int) []Node {
	out := make([]Node, n)
	for i := range out {
		z := "z1"
		if zones > 0 {
			z = fmt.Sprintf("z%d", i%zones+1)
		}
		out[i] = Node{ID: fmt.Sprintf("node-%03d", i), Zone: z, Weight: 1}
	}
	return out
}

// top1 is the primary owner without zone spreading; with one zone Rank's
// first entry equals it.
func top1(t *Table, k uint64) int {
	best, bs := -1, math.Inf(-1)
	for i := range t.nodes {
		if s := score(k, t.seeds[i], t.nodes[i].Weight); s > bs {
			best, bs = i, s
		}
	}
	return best
}

func TestBalance1MKeys100Nodes(t *testing.T) {
	const nk = 1_000_000
	tab := NewTable(equalNodes(100, 0))
	counts := make([]int, 100)
	for _, k := range keys(nk, 1) {
		counts[top1(tab, k)]++
	}
	mean := float64(nk) / 100
	for i, c := range counts {
		if d := math.Abs(float64(c)-mean) / mean; d > 0.10 {
			t.Errorf("node %d holds %d keys, %.1f%% off the mean %.0f", i, c, 100*d, mean)
		}
	}
}

func TestMovementOnAdd(t *testing.T) {
	const nk = 200_000
	for _, n := range []int{3, 10, 50} {
		before := NewTable(equalNodes(n, 0))
		after := NewTable(append(equalNodes(n, 0), Node{ID: "newcomer", Zone: "z1", Weight: 1}))
		moved, movedElsewhere := 0, 0
		for _, k := range keys(nk, uint64(n)) {
			a, b := before.nodes[top1(before, k)].ID, after.nodes[top1(after, k)].ID
			if a != b {
				moved++
				if b != "newcomer" {
					movedElsewhere++
				}
			}
		}
		want := float64(nk) / float64(n+1)
		if d := math.Abs(float64(moved)-want) / want; d > 0.05 {
			t.Errorf("n=%d: %d keys moved, want about %.0f", n, moved, want)
		}
		if movedElsewhere != 0 {
			t.Errorf("n=%d: %d keys moved between old nodes", n, movedElsewhere)
		}
	}
}

func TestReplicaSetMovementOnAdd(t *testing.T) {
	// With R=3 a key's replica set changes only by taking in the newcomer.
	before := NewTable(equalNodes(12, 0))
	after := NewTable(append(equalNodes(12, 0), Node{ID: "newcomer", Zone: "z1", Weight: 1}))
	for _, k := range keys(20_000, 7) {
		a, b := before.Pick(k, 3), after.Pick(k, 3)
		old := map[string]bool{}
		for _, x := range a {
			old[x.ID] = true
		}
		for _, x := range b {
			if !old[x.ID] && x.ID != "newcomer" {
				t.Fatalf("key %x: %s joined the replica set without being new", k, x.ID)
			}
		}
	}
}

func TestZoneSpread(t *testing.T) {
	tab := NewTable(equalNodes(9, 3))
	for _, k := range keys(10_000, 3) {
		seen := map[string]bool{}
		for _, n := range tab.Pick(k, 3) {
			if seen[n.Zone] {
				t.Fatalf("key %x: two replicas in zone %s", k, n.Zone)
			}
			seen[n.Zone] = true
		}
	}
	// Fewer zones than replicas: still R distinct nodes.
	tab = NewTable(equalNodes(4, 2))
	for _, k := range keys(1000, 4) {
		p := tab.Pick(k, 3)
		ids := map[string]bool{}
		for _, n := range p {
			ids[n.ID] = true
		}
		if len(ids) != 3 {
			t.Fatalf("want 3 distinct nodes, got %v", p)
		}
	}
}

func TestWeights(t *testing.T) {
	nodes := []Node{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}, {ID: "c", Weight: 1}}
	tab := NewTable(nodes)
	counts := map[string]int{}
	const nk = 300_000
	for _, k := range keys(nk, 5) {
		counts[tab.nodes[top1(tab, k)].ID]++
	}
	if r := float64(counts["b"]) / float64(counts["a"]); math.Abs(r-2) > 0.1 {
		t.Errorf("weight-2 node got %.2f× the keys of a weight-1 node (counts %v)", r, counts)
	}
}

func TestKeyOf(t *testing.T) {
	a := make([]byte, 32)
	binary.LittleEndian.PutUint64(a, 42)
	if KeyOf(a) != 42 {
		t.Fatalf("KeyOf = %d", KeyOf(a))
	}
	if KeyOf([]byte("ab")) == KeyOf([]byte("ba")) {
		t.Fatal("short keys collide")
	}
}
