// Package app assembles Shoal's services into one process: which services a
// -target selects, the order they start in, and the shared configuration
// (defaults, then an optional YAML file, then flags). It is the only place
// that knows about every service.
package app

import (
	"fmt"
	"sort"
	"strings"
)

// Service names usable in -target.
const (
	NATS       = "nats"
	Placement  = "placement"
	Blockstore = "blockstore"
	S3         = "s3"
	All        = "all"
)

// Dedup is the dedup tier (services/dedup).
const Dedup = "dedup"

// NBD is the block-device frontend (services/nbd).
const NBD = "nbd"

// Edge is a stack's CONNECT proxy into its overlay (services/edge). Not
// part of -target=all: the all-in-one has no overlay to enter.
const Edge = "edge"

// deps declares, for each service, the services that must be running before
// it starts when they are in the same process. A dependency outside the
// process is reached through its address flag instead.
var deps = map[string][]string{
	NATS:       nil,
	Placement:  {NATS},
	Blockstore: {NATS, Placement},
	// S3 needs storage nodes up before the all-in-one writes its first key.
	S3: {Placement, Blockstore, Dedup},

	// The dedup tier reaches storage nodes through placement's view.
	Dedup: {Placement},
	// Like S3: volume heads are written once storage nodes are up.
	NBD: {Placement, Blockstore, Dedup},
	// Forwards bytes only; what it reaches runs elsewhere.
	Edge: {},
}

// allTargets is what -target=all runs.
var allTargets = []string{NATS, Placement, Blockstore, S3,
	Dedup, NBD,
}

// ParseTargets expands a -target value into services in start order.
func ParseTargets(s string) ([]string, error) {
	want := map[string]bool{}
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
		case t == All:
			for _, a := range allTargets {
				want[a] = true
			}
		case deps[t] != nil || t == NATS:
			want[t] = true
		default:
			return nil, fmt.Errorf("unknown target %q (known: %s)", t, strings.Join(Known(), ", "))
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("empty -target")
	}
	return order(want)
}

// Known lists the service names.
func Known() []string {
	out := []string{All}
	for k := range deps {
		out = append(out, k)
	}
	sort.Strings(out[1:])
	return out
}

// order sorts the wanted services so each comes after its in-process
// dependencies (Kahn's algorithm, ties broken by name for a stable order).
func order(want map[string]bool) ([]string, error) {
	indeg := map[string]int{}
	for s := range want {
		indeg[s] += 0
		for _, d := range deps[s] {
			if want[d] {
				indeg[s]++
			}
		}
	}
	var out []string
	for len(indeg) > 0 {
		var ready []string
		for s, n := range indeg {
			if n == 0 {
				ready = append(ready, s)
			}
		}
		if len(ready) == 0 {
			return nil, fmt.Errorf("dependency cycle among %v", indeg)
		}
		sort.Strings(ready)
		for _, s := range ready {
			delete(indeg, s)
			out = append(out, s)
			for t := range indeg {
				for _, d := range deps[t] {
					if d == s {
						indeg[t]--
					}
				}
			}
		}
	}
	return out, nil
}
