package nbde2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"testing"
	"time"

	"shoal/e2e/framework"
	"shoal/services/dedup"
	"shoal/services/nbd"
	"shoal/services/nbd/wire"
	"shoal/shared/block"
	"shoal/shared/dht"
)

// inProcess is an in-process cluster with a dedup server and a volume
// registry.
func inProcess(t *testing.T) (*framework.Cluster, *framework.Dedup, *nbd.Registry) {
	t.Helper()
	c := framework.Start(t, framework.Options{Nodes: 3, MaxBlockSize: block.MaxSealed})
	d := c.StartDedup(dedup.Config{})
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	return c, d, nbd.NewRegistry(c.Client(dht.Config{CallTimeout: 10 * time.Second}), key)
}

func manager(t *testing.T, reg *nbd.Registry, d *framework.Dedup, id string) *nbd.Manager {
	return nbd.NewManager(reg, d.Client, nbd.Config{ID: id, LeaseTTL: 30 * time.Second, FlushInterval: time.Second}, framework.Logger(t))
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// TestLeaseFencing: one server at a time writes a volume. A second server
// is refused while the lease is held; once the lease is broken (its holder
// presumed dead) the second server takes the volume, and the first, still
// alive, can neither commit over the newer head nor keep serving reads.
func TestLeaseFencing(t *testing.T) {
	_, d, reg := inProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := reg.Create(ctx, "f", 4<<20, "chunk=fixed:64k,compress=none"); err != nil {
		t.Fatal(err)
	}
	a, b := manager(t, reg, d, "server-a"), manager(t, reg, d, "server-b")
	va, _, err := a.Open(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if err := va.WriteAt(ctx, fill(0x11, 64<<10), 0, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Open(ctx, "f"); !errors.Is(err, wire.ErrBusy) {
		t.Fatalf("second server opened a leased volume: %v", err)
	}
	if in, err := reg.Stat(ctx, "f"); err != nil || in.Holder != "server-a" {
		t.Fatalf("stat: %+v %v", in, err)
	}
	if was, err := reg.BreakLease(ctx, "f"); err != nil || was != "server-a" {
		t.Fatalf("break lease: %q %v", was, err)
	}
	vb, _, err := b.Open(ctx, "f")
	if err != nil {
		t.Fatalf("open after the lease was broken: %v", err)
	}
	got := make([]byte, 64<<10)
	if err := vb.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, fill(0x11, 64<<10)) {
		t.Fatalf("b does not see a's committed write: %v", err)
	}
	if err := vb.WriteAt(ctx, fill(0x22, 64<<10), 64<<10, true); err != nil {
		t.Fatal(err)
	}
	// a, fenced: its write is buffered, but the commit must fail.
	if err := va.WriteAt(ctx, fill(0x33, 64<<10), 64<<10, false); err != nil {
		t.Fatalf("buffered write: %v", err)
	}
	if err := va.Flush(ctx); !errors.Is(err, wire.ErrShutdown) {
		t.Fatalf("fenced server's flush: %v, want ErrShutdown", err)
	}
	if err := va.ReadAt(ctx, got, 0); !errors.Is(err, wire.ErrShutdown) {
		t.Fatalf("fenced server still reads: %v", err)
	}
	_ = va.Close()
	if err := vb.ReadAt(ctx, got, 64<<10); err != nil || !bytes.Equal(got, fill(0x22, 64<<10)) {
		t.Fatalf("the fenced server's write leaked into the volume: %v", err)
	}
	if err := vb.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed cleanly: the lease is given back, a third server opens at once.
	if in, err := reg.Stat(ctx, "f"); err != nil || in.Holder != "" {
		t.Fatalf("lease not given back on close: %+v %v", in, err)
	}
	vc, _, err := manager(t, reg, d, "server-c").Open(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if err := vc.ReadAt(ctx, got, 64<<10); err != nil || !bytes.Equal(got, fill(0x22, 64<<10)) {
		t.Fatalf("third server reads %v", err)
	}
	_ = vc.Close()
}

// TestTrimReclaimsSpace: data written to a volume takes space on the
// nodes; trimming it all, then a collection, gives the space back, while
// data kept on another volume stays readable. Deleting a volume frees the
// rest.
func TestTrimReclaimsSpace(t *testing.T) {
	c, d, reg := inProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p0 := c.PhysicalBytes()
	const size = 16 << 20
	for _, v := range []string{"t", "keep"} {
		if err := reg.Create(ctx, v, size, "chunk=fixed:64k,compress=none"); err != nil {
			t.Fatal(err)
		}
	}
	m := manager(t, reg, d, "server")
	vt, _, err := m.Open(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := m.Open(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	_, _ = rand.Read(data)
	kept := make([]byte, 1<<20)
	_, _ = rand.Read(kept)
	if err := vt.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := vk.WriteAt(ctx, kept, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	if err := vt.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "the data on three replicas", func() bool {
		return c.PhysicalBytes()-p0 >= 3*size
	})
	if err := vt.Trim(ctx, 0, size); err != nil {
		t.Fatal(err)
	}
	if err := vt.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if err := vt.ReadAt(ctx, got, 5<<20); err != nil || !bytes.Equal(got, make([]byte, 1<<20)) {
		t.Fatalf("trimmed range does not read as zeros: %v", err)
	}
	framework.Eventually(t, 60*time.Second, "trimmed space reclaimed", func() bool {
		if _, err := d.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		return c.PhysicalBytes()-p0 < size
	})
	if err := vk.ReadAt(ctx, got, 1<<20); err != nil || !bytes.Equal(got, kept) {
		t.Fatalf("the other volume lost data to the collection: %v", err)
	}
	_ = vt.Close()
	_ = vk.Close()
	if err := reg.Delete(ctx, "keep", d.Client); err != nil {
		t.Fatal(err)
	}
	if err := reg.Delete(ctx, "t", d.Client); err != nil {
		t.Fatal(err)
	}
	if vols, err := reg.List(ctx); err != nil || len(vols) != 0 {
		t.Fatalf("after deleting both: %v %v", vols, err)
	}
	framework.Eventually(t, 60*time.Second, "deleted volumes reclaimed", func() bool {
		if _, err := d.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		return c.PhysicalBytes()-p0 < 3*(1<<20)
	})
}

// TestRandomIOMatchesModel: random reads, writes (aligned and not, within
// and across extents), trims and flushes against a byte-slice model, with
// a dirty bound small enough that commits also start on their own; the
// volume is closed and opened again by another server half way and at the
// end, and must read exactly as the model.
func TestRandomIOMatchesModel(t *testing.T) {
	_, d, reg := inProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const size = 4 << 20
	if err := reg.Create(ctx, "m", size, "chunk=fixed:16k,compress=zstd:1"); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	rnd := mrand.New(mrand.NewPCG(7, 7))
	open := func(id string) wire.Backend {
		m := nbd.NewManager(reg, d.Client, nbd.Config{ID: id, LeaseTTL: 30 * time.Second, FlushInterval: time.Second, MaxDirty: 1 << 20}, framework.Logger(t))
		b, _, err := m.Open(ctx, "m")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	verify := func(b wire.Backend, when string) {
		got := make([]byte, size)
		if err := b.ReadAt(ctx, got, 0); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if !bytes.Equal(got, model) {
			for i := range got {
				if got[i] != model[i] {
					t.Fatalf("%s: first difference at byte %d", when, i)
				}
			}
		}
	}
	b := open("s1")
	for round := range 2 {
		for op := range 400 {
			n := int64(1 + rnd.IntN(40<<10))
			if rnd.IntN(2) == 0 {
				n = (n + 511) / 512 * 512 // sector-aligned, the common case
			}
			off := rnd.Int64N(size - n + 1)
			if rnd.IntN(2) == 0 {
				off = off / 512 * 512
			}
			switch k := rnd.IntN(10); {
			case k < 5:
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(rnd.Uint32())
				}
				if err := b.WriteAt(ctx, p, off, rnd.IntN(20) == 0); err != nil {
					t.Fatalf("round %d op %d write: %v", round, op, err)
				}
				copy(model[off:], p)
			case k < 6:
				if err := b.Trim(ctx, off, n); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+n])
			case k < 9:
				got := make([]byte, n)
				if err := b.ReadAt(ctx, got, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, model[off:off+n]) {
					t.Fatalf("round %d op %d: read [%d, +%d) differs from the model", round, op, off, n)
				}
			default:
				if err := b.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		verify(b, fmt.Sprintf("round %d, same server", round))
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		b = open(fmt.Sprintf("s%d", round+2))
		verify(b, fmt.Sprintf("round %d, reopened by another server", round))
	}
	_ = b.Close()
}
