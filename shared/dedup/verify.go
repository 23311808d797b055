package dedup

import (
	"context"
	"fmt"

	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
)

// VerifyReport summarizes a Verify pass.
type VerifyReport struct {
	Nodes  int64 // manifest nodes checked
	Chunks int64 // chunk references checked
	// Damaged counts unusable shards found; Repaired those rebuilt.
	Damaged  int64
	Repaired int64
	// Lost lists chunks that could not be read back at all.
	Lost []block.Address
}

// Verify reads every node and chunk of a stream and checks them; under
// erasure coding it fetches all k+m shards of every stripe and, with
// ReaderConfig.Repair, rebuilds the bad ones. It is the scrub the heal path
// runs; an ordinary Read only looks at parity when it must.
func (r *Reader) Verify(ctx context.Context, ref manifest.Ref) (VerifyReport, error) {
	var rep VerifyReport
	v, err := r.view(ref)
	if err != nil {
		return rep, err
	}
	root, err := r.root(ctx, v)
	if err != nil {
		return rep, err
	}
	count := func(d Damage) {
		rep.Damaged++
		if d.Repaired {
			rep.Repaired++
		}
		if r.cfg.OnDamage != nil {
			r.cfg.OnDamage(d)
		}
	}
	err = r.walk(ctx, v, root, nil, func(n *manifest.Node) error {
		rep.Nodes++
		for i := range n.Chunks {
			c := &n.Chunks[i]
			rep.Chunks++
			var err error
			if v.ec != nil {
				_, err = r.loadStripe(ctx, v, c, true, count)
			} else {
				var data []byte
				data, err = r.store.Get(ctx, c.Addr)
				if err == nil && (len(data) != c.Stored || block.Sum(data) != c.Addr) {
					err = ErrCorrupt
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rep.Lost = append(rep.Lost, c.Addr)
			}
		}
		return nil
	})
	return rep, err
}

// walk visits the nodes of a tree depth-first, parents first, holding one
// path of nodes. descend (nil: always) says whether to enter a child.
func (r *Reader) walk(ctx context.Context, v *view, n *manifest.Node, descend func(*manifest.Child) bool, enter func(*manifest.Node) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := enter(n); err != nil {
		return err
	}
	for i := range n.Children {
		ch := &n.Children[i]
		if descend != nil && !descend(ch) {
			continue
		}
		child, err := r.node(ctx, v, ch.Addr, ch.Seed, n.Level-1, ch.Logical, ch.Chunks)
		if err != nil {
			return err
		}
		if err := r.walk(ctx, v, child, descend, enter); err != nil {
			return err
		}
	}
	return nil
}

// Mark adds to the set every block that the given streams need: manifest
// nodes, chunk blocks, and erasure-coding shards (the stripe address of an
// erasure-coded chunk names no block and is not added). add reports whether
// an address was new; a node already present is not descended into again,
// since an immutable node's subtree was marked with it.
//
// Any error means the mark is incomplete and nothing may be swept.
func (r *Reader) Mark(ctx context.Context, refs []manifest.Ref, add func(block.Address) bool) error {
	for _, ref := range refs {
		v, err := r.view(ref)
		if err != nil {
			return err
		}
		// An inline root is no block: there is nothing to add for it, and
		// its subtree is walked every time.
		if ref.Inline == "" && !add(ref.Root) {
			continue
		}
		root, err := r.root(ctx, v)
		if err != nil {
			return err
		}
		// A node already marked was marked with everything below it (it is
		// immutable), so it is not fetched again. Marking before visiting
		// is safe because any failure aborts the whole mark.
		descend := func(ch *manifest.Child) bool { return add(ch.Addr) }
		err = r.walk(ctx, v, root, descend, func(n *manifest.Node) error {
			for i := range n.Chunks {
				c := &n.Chunks[i]
				if c.Shards == nil {
					add(c.Addr)
				}
				for _, s := range c.Shards {
					add(s)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("dedup: mark %s: %w", ref.Root, err)
		}
	}
	return nil
}

// Reachable returns every block the given streams need (see Mark). For
// large volumes prefer Mark with a set that is not all in memory.
func (r *Reader) Reachable(ctx context.Context, refs []manifest.Ref) (map[block.Address]struct{}, error) {
	set := map[block.Address]struct{}{}
	err := r.Mark(ctx, refs, func(a block.Address) bool {
		if _, ok := set[a]; ok {
			return false
		}
		set[a] = struct{}{}
		return true
	})
	return set, err
}
