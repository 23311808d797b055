package placement

import (
	ppb "shoal/proto/placementpb"
)

// Placed reports whether a node in this state takes part in placement. A
// node that is down but not yet evicted keeps its place: its replicas are
// expected back, and moving them on every blip would cost a rebuild.
func Placed(s ppb.NodeState) bool {
	return s == ppb.NodeState_NODE_STATE_UP || s == ppb.NodeState_NODE_STATE_DOWN
}

// FromView builds the placement table of a view.
func FromView(v *ppb.View) *Table {
	var nodes []Node
	for _, n := range v.GetNodes() {
		if Placed(n.State) {
			nodes = append(nodes, Node{ID: n.Id, Zone: n.Zone, Weight: n.Weight})
		}
	}
	return NewTable(nodes)
}
