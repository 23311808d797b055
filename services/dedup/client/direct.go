package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"shoal/shared/block"
	"shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dht"
)

// direct is the state of ReadDirect.
type direct struct {
	r *dedup.Reader
	// reads counts the reads served from the nodes (for tests).
	reads atomic.Int64
}

// ReadDirect makes Read fetch unencrypted streams from the storage nodes
// itself, with the tier's own reader (shared/dedup) on store, a DHT client
// of this process: the bytes then cross one hop (node → here) instead of
// two (node → dedup tier → here). Blocks are verified against their
// addresses and erasure-coded chunks rebuilt from any k shards, as the
// tier does. Encrypted streams are still read through the tier, which
// holds the volume keys, and so is everything when the nodes cannot be
// reached from here, or a read fails before its first bytes: only the
// tier's answer decides that the data is gone. Call it before use.
func (c *Client) ReadDirect(store dedup.BlockStore) error {
	r, err := dedup.NewReader(store, dedup.ReaderConfig{})
	if err != nil {
		return err
	}
	c.direct = &direct{r: r}
	return nil
}

// DirectReads is how many reads ReadDirect's path served.
func (c *Client) DirectReads() int64 {
	if c.direct == nil {
		return 0
	}
	return c.direct.reads.Load()
}

// readDirect reads an unencrypted stream from the nodes; ok=false means
// the caller should go through the tier. The first bytes are read before
// it returns, and any failure up to there leaves the answer to the tier
// (which tells a forged reference from lost data, and may reach nodes
// this process cannot); a failure after them is the stream's error.
func (c *Client) readDirect(ctx context.Context, b []byte, off, n int64) (io.ReadCloser, bool) {
	ref, err := manifest.ParseRef(b)
	if err != nil || ref.Policy.Encrypt || off < 0 || off > ref.Size {
		return nil, false
	}
	rc, err := c.direct.r.ReadFirst(ctx, ref, off, n, 64<<10, directErr)
	if err != nil {
		return nil, false
	}
	c.direct.reads.Add(1)
	return rc, true
}

// directErr maps the reader's errors to this package's sentinels.
func directErr(err error) error {
	for _, m := range []struct{ from, to error }{
		{block.ErrNotFound, ErrNotFound},
		{dedup.ErrCorrupt, ErrCorrupt},
		{dedup.ErrRange, ErrRange},
		{dht.ErrNoView, ErrUnavailable},
		{dht.ErrNoNodes, ErrUnavailable},
		{dht.ErrQuorum, ErrUnavailable},
	} {
		if errors.Is(err, m.from) {
			return fmt.Errorf("dedup: read: %w: %w", m.to, err)
		}
	}
	return fmt.Errorf("dedup: read: %w", err)
}
