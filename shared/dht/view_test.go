package dht

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

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

// A view without an address closes the client's connection to it and
// drops its batch queues; addresses still in the view keep theirs.
func TestViewPrunesGoneAddresses(t *testing.T) {
	c := &Client{changed: make(chan struct{}), view: &ppb.View{}, conns: map[string]*grpc.ClientConn{}}
	c.installView(viewOf(1, "a", "b"), false)
	for _, id := range []string{"a", "b"} {
		n := &ppb.Node{Id: id, Addr: id + ":1"}
		if _, err := c.client(n); err != nil {
			t.Fatal(err)
		}
		c.queue(n, opPut)
	}
	old := c.conns["a:1"]
	c.installView(viewOf(2, "b", "c"), false)
	if _, ok := c.conns["a:1"]; ok {
		t.Fatal("the connection to a node gone from the view was kept")
	}
	if old.GetState() != connectivity.Shutdown {
		t.Fatalf("the dropped connection is %v, not shut down", old.GetState())
	}
	if _, ok := c.conns["b:1"]; !ok {
		t.Fatal("the connection to a node still in the view was closed")
	}
	if _, ok := c.queues[queueKey{"a:1", opPut}]; ok {
		t.Fatal("the batch queue of a node gone from the view was kept")
	}
	if _, ok := c.queues[queueKey{"b:1", opPut}]; !ok {
		t.Fatal("the batch queue of a node still in the view was dropped")
	}
	for _, cc := range c.conns {
		_ = cc.Close()
	}
}
