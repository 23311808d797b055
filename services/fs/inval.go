package fs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/nats-io/nats.go"

	"shoal/shared/block"
)

// Invalidations (optional, Config.NATS): every inode change a mount makes
// is announced on shoal.fs.inval.VOLUME as (mount id, address, version).
// Other mounts holding that inode mark their copy stale and tell their
// kernel to drop what it cached: the inode's attributes and pages, and for
// a directory the names whose entries changed. Changes are then seen at
// once rather than after the attribute and entry timeouts. Messages are
// best effort (NATS core, at most once): a lost one leaves the timeouts
// and the revalidation at open as the guarantee.

const invalLen = 8 + block.AddressSize + 8

func invalSubject(volume string) string { return "shoal.fs.inval." + volume }

func newMountID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1
}

// register makes n the node of its address in this mount (see liveNode).
func (f *FS) register(n *node) {
	f.mu.Lock()
	f.nodes[n.addr] = n
	f.mu.Unlock()
}

// liveNode returns the node this mount has for addr, or registers and
// returns a new one. A lookup must answer with the attributes of the node
// the kernel already has for an inode: go-fuse keeps one node per inode
// and discards a new one made for a known inode, but only after the lookup
// has filled in the new one's attributes. Those lack the open files'
// unflushed writes, and the kernel took their size: a file being written
// shrank to its last flushed size for its own readers and for stat.
func (f *FS) liveNode(addr block.Address) *node {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.nodes[addr]; n != nil {
		return n
	}
	n := &node{fsys: f, addr: addr}
	f.nodes[addr] = n
	return n
}

// OnForget drops a node the kernel forgot from the invalidation index.
func (n *node) OnForget() {
	f := n.fsys
	f.mu.Lock()
	if f.nodes[n.addr] == n {
		delete(f.nodes, n.addr)
	}
	f.mu.Unlock()
}

// announce publishes a change this mount made.
func (f *FS) announce(addr block.Address, version uint64) {
	if f.cfg.NATS == nil {
		return
	}
	b := make([]byte, 0, invalLen)
	b = binary.LittleEndian.AppendUint64(b, f.id)
	b = append(b, addr[:]...)
	b = binary.LittleEndian.AppendUint64(b, version)
	if err := f.cfg.NATS.Publish(invalSubject(f.name), b); err != nil {
		f.log.Warn("fs: publishing an invalidation", "err", err)
	}
}

// subscribe starts receiving other mounts' announcements.
func (f *FS) subscribe() (*nats.Subscription, error) {
	return f.cfg.NATS.Subscribe(invalSubject(f.name), func(m *nats.Msg) {
		if len(m.Data) != invalLen || binary.LittleEndian.Uint64(m.Data) == f.id {
			return
		}
		addr, _ := block.FromBytes(m.Data[8 : 8+block.AddressSize])
		version := binary.LittleEndian.Uint64(m.Data[8+block.AddressSize:])
		// Off the delivery goroutine: invalidating may read the cluster
		// and waits for the kernel.
		go f.invalidate(addr, version)
	})
}

// invalidate handles another mount's change of addr to version. It holds
// no lock while it notifies the kernel (go-fuse's rule against deadlock).
func (f *FS) invalidate(addr block.Address, version uint64) {
	f.mu.Lock()
	n := f.nodes[addr]
	f.mu.Unlock()
	if n == nil {
		return
	}
	n.mu.Lock()
	old := n.ino
	if old == nil || n.ver >= version {
		n.mu.Unlock()
		return
	}
	n.fetched = time.Time{}
	n.mu.Unlock()
	if old.Kind == KindDir {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cur, err := n.load(ctx, 0)
		cancel()
		if err != nil {
			cur = &Inode{} // gone or unreadable: drop every name
		}
		for name, e := range old.Entries {
			if ne, ok := cur.Entries[name]; !ok || ne != e {
				_ = n.NotifyEntry(name)
			}
		}
	}
	_ = n.NotifyContent(0, 0)
}
