package app

import (
	"slices"
	"testing"
)

func TestDependencyGraph(t *testing.T) {
	for s, ds := range deps {
		for _, d := range ds {
			if _, ok := deps[d]; !ok {
				t.Errorf("%s depends on unknown service %s", s, d)
			}
		}
	}
	all := map[string]bool{}
	for s := range deps {
		all[s] = true
	}
	got, err := order(all)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, s := range got {
		pos[s] = i
	}
	for s, ds := range deps {
		for _, d := range ds {
			if pos[d] > pos[s] {
				t.Errorf("%s starts before its dependency %s: %v", s, d, got)
			}
		}
	}
}

func TestParseTargets(t *testing.T) {
	got, err := ParseTargets("blockstore,placement")
	if err != nil || !slices.Equal(got, []string{Placement, Blockstore}) {
		t.Fatalf("got %v %v", got, err)
	}
	got, err = ParseTargets("all")
	if err != nil || got[0] != NATS {
		t.Fatalf("all: %v %v", got, err)
	}
	if _, err := ParseTargets("bogus"); err == nil {
		t.Fatal("unknown target accepted")
	}
	if _, err := ParseTargets(""); err == nil {
		t.Fatal("empty target accepted")
	}
}
