package dedup

import (
	"context"
	"errors"
	"fmt"
	"io"

	dpb "shoal/proto/dedupb"
	"shoal/shared/block"
	"shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
	"shoal/shared/rpc"
)

// Limits on what an offering client may have outstanding: chunks per
// offer (16,384: 8 MiB of the smallest CDC chunks, twice what the client
// puts in one), and offers answered but not yet consumed (a client waits
// for an answer before it sends that offer's bytes, so a few are enough;
// the client offers three ahead). A stream holds at most ~12 MiB of
// offers; its bytes wait in gRPC's flow-control window, not here.
const (
	maxOfferChunks = 1 << 14
	maxOfferAhead  = 16
)

// WriteOffered is Write for a client that cuts and hashes the stream
// itself (see dpb.OfferRequest and dedup.Writer.Resolve): each offer is
// answered with the chunks whose bytes are needed, and the stream is
// stored from the chunks found and the bytes sent. Like Write, it
// registers the reference as a live root before it returns.
func (s *Service) WriteOffered(stream dpb.Dedup_WriteOfferedServer) error {
	ctx := stream.Context()
	src := &offerSource{ctx: ctx, stream: stream}
	src.in = rpc.ReuseField(&src.msg, "data")
	// WriteChunks has stopped calling src.next when it returns.
	defer src.in.Release()
	w, err := s.firstWriter(&src.msg, src.recv())
	if err != nil {
		return toStatus(err)
	}
	src.w, src.chunking, src.pending = w, w.Policy().Chunking, true
	ref, bin, err := s.publishWrite(ctx, src.msg.Volume, func(publish func(context.Context, manifest.Ref) error) (manifest.Ref, bool, error) {
		return w.WriteChunks(ctx, src.next, publish)
	})
	if err != nil {
		return toStatus(err)
	}
	return stream.Send(&dpb.OfferResponse{Result: &dpb.WriteResponse{Ref: bin, Size: ref.Size, Etag: ref.ETagHex()}})
}

// offerWindow is one answered offer whose chunks are not all consumed.
type offerWindow struct {
	sums  []block.Address // nil for a pushed window
	lens  []uint32
	known []*dedup.KnownChunk
}

// offerSource turns an offering client's messages into the stream's
// chunks, for dedup.Writer.WriteChunks. It runs in the write's producer,
// the only goroutine that receives or sends on the stream until the write
// is over: it answers each offer as it arrives (the client sends an
// offer's bytes only once answered, so offers run ahead of bytes) and
// hands out chunks in order, a known one at once, a needed one once its
// bytes are in.
type offerSource struct {
	ctx      context.Context
	w        *dedup.Writer
	chunking policy.Chunking
	stream   dpb.Dedup_WriteOfferedServer
	in       rpc.Reused       // each message's data, in one pooled buffer
	msg      dpb.OfferRequest // the rest of it
	pending  bool             // msg and in are received, not yet handled

	windows []*offerWindow
	pos     int    // next chunk of windows[0]
	acc     []byte // holds buf: data moves here as it arrives
	buf     []byte // received bytes not yet handed out
	owed    int64  // bytes asked for and not yet received
	short   bool   // the last chunk offered was shorter than the policy cuts
	eof     bool
}

func (o *offerSource) next() (dedup.Chunk, error) {
	for {
		if len(o.windows) > 0 {
			win := o.windows[0]
			if o.pos == len(win.lens) {
				o.windows[0] = nil
				o.windows, o.pos = o.windows[1:], 0
				continue
			}
			i := o.pos
			if k := win.known[i]; k != nil {
				o.pos++
				return dedup.Chunk{Known: k}, nil
			}
			if n := int(win.lens[i]); len(o.buf) >= n {
				c := dedup.Chunk{Plain: o.buf[:n:n]}
				if win.sums != nil {
					c.Sum, c.Claimed = win.sums[i], true
				}
				o.buf = o.buf[n:]
				o.pos++
				return c, nil
			}
		} else if o.eof {
			return dedup.Chunk{}, io.EOF
		}
		if o.eof {
			return dedup.Chunk{}, fmt.Errorf("%w: the stream ended before the bytes asked for", dedup.ErrOffer)
		}
		if !o.pending {
			err := o.recv()
			if errors.Is(err, io.EOF) {
				o.eof = true
				if len(o.buf) > 0 {
					return dedup.Chunk{}, fmt.Errorf("%w: %d bytes sent that were not asked for", dedup.ErrOffer, len(o.buf))
				}
				continue
			}
			if err != nil {
				return dedup.Chunk{}, err
			}
		}
		o.pending = false
		if err := o.handle(&o.msg, o.in.Bytes); err != nil {
			return dedup.Chunk{}, err
		}
	}
}

// recv receives the next message into o.msg, its data into o.in.
func (o *offerSource) recv() error { return o.stream.RecvMsg(&o.in) }

// handle takes in one message: bytes first, then an offer, which it
// answers.
func (o *offerSource) handle(m *dpb.OfferRequest, data []byte) error {
	if len(data) > 0 {
		if int64(len(data)) > o.owed {
			return fmt.Errorf("%w: bytes sent that were not asked for", dedup.ErrOffer)
		}
		o.owed -= int64(len(data))
		// The next message is decoded over data, so it moves to acc, behind
		// what is left of the previous ones (moved to the front: chunks
		// handed out before are copied by then).
		n := copy(o.acc[:len(o.buf)], o.buf)
		o.acc = append(o.acc[:n], data...)
		o.buf = o.acc
	}
	if len(m.Lengths) == 0 && len(m.Sums) == 0 {
		return nil
	}
	switch {
	case m.Push && len(m.Sums) > 0:
		return fmt.Errorf("%w: a pushed window carries no hashes", dedup.ErrOffer)
	case !m.Push && len(m.Sums) != len(m.Lengths)*len(block.Address{}):
		return fmt.Errorf("%w: %d bytes of hashes for %d chunks", dedup.ErrOffer, len(m.Sums), len(m.Lengths))
	case len(m.Lengths) > maxOfferChunks:
		return fmt.Errorf("%w: %d chunks in one offer (at most %d)", dedup.ErrOffer, len(m.Lengths), maxOfferChunks)
	case len(o.windows) >= maxOfferAhead:
		return fmt.Errorf("%w: more than %d offers ahead of their bytes", dedup.ErrOffer, maxOfferAhead)
	case o.short:
		return fmt.Errorf("%w: a chunk shorter than the policy cuts is not the last", dedup.ErrOffer)
	}
	if err := dedup.CheckLengths(o.chunking, m.Lengths, true); err != nil {
		return err
	}
	last := int(m.Lengths[len(m.Lengths)-1])
	o.short = o.chunking.Mode == policy.Fixed && last != o.chunking.Size || o.chunking.Mode == policy.CDC && last < o.chunking.Min
	if m.Push {
		for _, n := range m.Lengths {
			o.owed += int64(n)
		}
		o.windows = append(o.windows, &offerWindow{lens: m.Lengths, known: make([]*dedup.KnownChunk, len(m.Lengths))})
		return nil
	}
	sums := make([]block.Address, len(m.Lengths))
	for i := range sums {
		copy(sums[i][:], m.Sums[i*len(block.Address{}):])
	}
	known, err := o.w.Resolve(o.ctx, sums, m.Lengths)
	if err != nil {
		return err
	}
	var need []uint32
	for i, k := range known {
		if k == nil {
			need = append(need, uint32(i))
			o.owed += int64(m.Lengths[i])
		}
	}
	if err := o.stream.Send(&dpb.OfferResponse{Need: need}); err != nil {
		return err
	}
	o.windows = append(o.windows, &offerWindow{sums: sums, lens: m.Lengths, known: known})
	return nil
}
