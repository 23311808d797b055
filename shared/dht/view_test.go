package dht

import (
	"testing"

	ppb "shoal/proto/placementpb"
)

func viewOf(epoch uint64, ids ...string) *ppb.View {
	v := &ppb.View{Epoch: epoch}
	for _, id := range ids {
		v.Nodes = append(v.Nodes, &ppb.Node{Id: id, Addr: id + ":1", State: ppb.NodeState_NODE_STATE_UP})
	}
	return v
}

// A GetView answer that arrives after a newer Watch update must not
// replace it; a lower epoch on the Watch stream (a failover to another
// placement replica) still does.
func TestFetchedViewNeverReplacesNewer(t *testing.T) {
	c := &Client{changed: make(chan struct{}), view: &ppb.View{}}
	c.installView(viewOf(5, "a", "b", "c"), false)
	c.installView(viewOf(4, "a", "b"), true)
	if got := c.View(); got.Epoch != 5 || len(got.Nodes) != 3 {
		t.Fatalf("a stale fetched view replaced the newer one: epoch %d, %d nodes", got.Epoch, len(got.Nodes))
	}
	c.installView(viewOf(5, "a", "b", "c", "d"), true)
	if got := c.View(); len(got.Nodes) != 4 {
		t.Fatalf("a fetched view of the same epoch was dropped: %d nodes", len(got.Nodes))
	}
	c.installView(viewOf(2, "a", "b"), false)
	if got := c.View(); got.Epoch != 2 {
		t.Fatalf("the Watch stream's view was dropped after a failover: epoch %d", got.Epoch)
	}
}

// Before any view arrived, a fetched view is taken whatever its epoch.
func TestFirstFetchedViewIsTaken(t *testing.T) {
	c := &Client{changed: make(chan struct{}), view: &ppb.View{}}
	c.installView(viewOf(0, "a"), true)
	if got := c.View(); len(got.Nodes) != 1 {
		t.Fatalf("first view not installed: %d nodes", len(got.Nodes))
	}
}
