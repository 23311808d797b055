package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	dpb "shoal/proto/dedupb"
	"shoal/shared/block"
	"shoal/shared/cpus"
	"shoal/shared/dedup"
	"shoal/shared/dedup/chunker"
	"shoal/shared/dedup/policy"
)

// An offering write cuts the stream into windows of chunks, hashes them
// here, offers each window by hash and sends only the chunks the tier
// asks for. Memory per write is at most offersAhead + 7 windows.
const (
	// offerMin: streams shorter than this go through Write, whose single
	// round trip a small object cannot win back.
	offerMin = 1 << 20
	// offerBytes is read into each window (plus the previous window's
	// uncut tail).
	offerBytes = 4 << 20
	// offersAhead is how many windows are offered before the first of
	// them is answered, so the tier's lookups overlap the hashing here.
	offersAhead = 3
)

// WriteOffered is Write for data that may already be stored (a file put
// again, a copy, a backup): it cuts and hashes the stream here, with the
// policy's own chunker, offers the chunks by hash, and sends only those
// the cluster lacks. Data already stored then costs a hash per byte here
// and no transfer. New data would cost one SHA-256 pass more than Write
// (the tier checks every byte it receives against the hash offered for
// it), so once offers keep coming back all needed, windows are pushed
// whole and unhashed for a while (see learn). Same arguments, result and
// retain as Write.
func (c *Client) WriteOffered(ctx context.Context, pol, volume string, r io.Reader) (ref []byte, size int64, etag string, err error) {
	p := policy.Default()
	if pol != "" {
		if p, err = policy.Parse(pol); err != nil {
			return nil, 0, "", fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	head := make([]byte, offerMin)
	n, rerr := io.ReadFull(r, head)
	if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
		return c.Write(ctx, pol, volume, bytes.NewReader(head[:n]))
	}
	if rerr != nil {
		return nil, 0, "", fmt.Errorf("dedup: reading the stream: %w", rerr)
	}
	cut, err := dedup.NewCutter(p.Chunking)
	if err != nil {
		return nil, 0, "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := c.api.WriteOffered(ctx)
	if err != nil {
		return nil, 0, "", fromStatus(err)
	}
	// Cutting (one core: FastCDC is sequential) overlaps hashing (all
	// cores) and the offers.
	cutDone := make(chan *window, 1)
	ready := make(chan *window, 1)
	prodErr := make(chan error, 1)
	free := make(chan []byte, offersAhead+7)
	for range cap(free) {
		free <- nil // allocated on first use, then reused
	}
	go func() {
		defer close(cutDone)
		prodErr <- produceWindows(ctx, io.MultiReader(bytes.NewReader(head), r), cut, free, cutDone)
	}()
	o := &offerer{stream: stream, first: &dpb.OfferRequest{Policy: p.String(), Volume: volume}, prodErr: prodErr}
	go func() {
		defer close(ready)
		for w := range cutDone {
			if !o.pushing.Load() {
				w.hash()
			}
			ready <- w // run drains ready before it returns
		}
	}()
	ref, size, etag, err = o.run(ready, free)
	c.pushed.Add(o.pushed)
	if err != nil {
		cancel(err) // aborts the stream: the server stores no reference
		for range ready {
		}
		return nil, 0, "", err
	}
	return ref, size, etag, nil
}

// window is a run of chunks, their bytes back to back in buf.
type window struct {
	buf   []byte
	lens  []uint32
	sums  []byte // 32 bytes per chunk
	whole []byte // the buffer buf is part of, to reuse
}

// produceWindows cuts the stream into windows, handing them to ready in
// order. A goroutine of its own reads ahead, so this one only cuts
// (FastCDC is sequential: the one stage that cannot use every core). Each
// window buffer is read into past a gap of one largest chunk, where the
// previous window's uncut tail goes: the stream is copied only by read.
func produceWindows(ctx context.Context, r io.Reader, cut chunker.Cutter, free chan []byte, ready chan<- *window) error {
	maxLen := cut.MaxLen()
	type piece struct {
		buf []byte // read into buf[maxLen:maxLen+n]
		n   int
		err error
	}
	pieces := make(chan piece, 1)
	rctx, stop := context.WithCancel(ctx)
	readDone := make(chan struct{})
	defer func() {
		// The caller owns r again once the write returns: no read may be
		// left running.
		stop()
		<-readDone
	}()
	go func() {
		defer close(readDone)
		defer close(pieces)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-rctx.Done():
				return
			}
			if b == nil {
				b = make([]byte, maxLen+offerBytes)
			}
			n, err := io.ReadFull(r, b[maxLen:maxLen+offerBytes])
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			select {
			case pieces <- piece{b, n, err}:
			case <-rctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var carry []byte // read and not cut: less than one largest chunk
	for eof := false; !eof; {
		var p piece
		var ok bool
		select {
		case p, ok = <-pieces:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if !ok {
			return context.Cause(ctx)
		}
		if errors.Is(p.err, io.EOF) {
			eof = true
		} else if p.err != nil {
			return fmt.Errorf("dedup: reading the stream: %w", p.err)
		}
		from := maxLen - len(carry)
		copy(p.buf[from:], carry)
		buf := p.buf[from : maxLen+p.n]
		// Cut only with a largest chunk's worth of bytes ahead (or at the
		// end), as chunker.Chunker does: the cuts are the tier's own.
		w := &window{}
		pos := 0
		for len(buf)-pos >= maxLen || eof && pos < len(buf) {
			n := cut.Cut(buf[pos:])
			w.lens = append(w.lens, uint32(n))
			pos += n
		}
		carry = append(carry[:0], buf[pos:]...)
		if len(w.lens) == 0 {
			free <- p.buf
			continue
		}
		w.buf = buf[:pos]
		w.whole = p.buf
		select {
		case ready <- w:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// hash fills w.sums, spreading the chunks over the cores.
func (w *window) hash() {
	w.sums = make([]byte, len(w.lens)*len(block.Address{}))
	offs := make([]int, len(w.lens)+1)
	for i, n := range w.lens {
		offs[i+1] = offs[i] + int(n)
	}
	workers := min(cpus.N(), len(w.lens))
	var wg sync.WaitGroup
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < len(w.lens); i += workers {
				s := block.Sum(w.buf[offs[i]:offs[i+1]])
				copy(w.sums[i*len(s):], s[:])
			}
		}()
	}
	wg.Wait()
}

// offerer is the sending side of one WriteOffered call.
type offerer struct {
	stream dpb.Dedup_WriteOfferedClient
	first  *dpb.OfferRequest // the policy and volume, sent with the first offer
	// prodErr has the producer's outcome once ready is closed.
	prodErr <-chan error
	// New data is pushed, not offered: pushing tells the hasher to skip
	// the windows it would only waste hashes on, pushLeft counts the
	// windows still to push before offering again, newInARow the answers
	// in a row that asked for (nearly) everything, pushed the windows
	// pushed.
	pushing   atomic.Bool
	pushLeft  int
	newInARow int
	pushed    int64
}

// An answer asking for at least newShare of a window's bytes means new
// data; after pushAfter of them in a row the next pushRun windows are
// pushed (sent whole, unhashed, unasked: what Write costs), then offers
// resume, to notice data that is stored again.
const (
	newShare  = 0.9
	pushAfter = 2
	pushRun   = 16
)

func (o *offerer) send(m *dpb.OfferRequest) error {
	if o.first != nil {
		m.Policy, m.Volume = o.first.Policy, o.first.Volume
		o.first = nil
	}
	if err := o.stream.Send(m); err != nil {
		if errors.Is(err, io.EOF) {
			// The server ended the call: its status says why.
			for err == io.EOF || err == nil {
				_, err = o.stream.Recv()
			}
		}
		return fromStatus(err)
	}
	return nil
}

// run offers the windows ready yields, keeping up to offersAhead answers
// outstanding, and sends each answered window's needed chunks.
func (o *offerer) run(ready <-chan *window, free chan<- []byte) ([]byte, int64, string, error) {
	var offered []*window
	done := false
	for {
		// Bytes go in stream order: a window is pushed only once every
		// window offered before it is answered and its bytes sent.
		for !done && len(offered) < offersAhead && (o.pushLeft == 0 || len(offered) == 0) {
			var w *window
			var ok bool
			if len(offered) == 0 {
				w, ok = <-ready
			} else {
				waiting := false
				select {
				case w, ok = <-ready:
				default:
					waiting = true
				}
				if waiting {
					break // nothing ready yet: take the outstanding answers first
				}
			}
			if !ok {
				// The producer is done; a reading error must not end the
				// write as if the stream were complete.
				if err := <-o.prodErr; err != nil {
					return nil, 0, "", err
				}
				done = true
				break
			}
			if o.pushLeft > 0 {
				if err := o.push(w); err != nil {
					return nil, 0, "", err
				}
				if o.pushLeft--; o.pushLeft == 0 {
					o.pushing.Store(false)
				}
				free <- w.whole
				continue
			}
			if w.sums == nil {
				w.hash() // cut while pushing
			}
			if err := o.send(&dpb.OfferRequest{Sums: w.sums, Lengths: w.lens}); err != nil {
				return nil, 0, "", err
			}
			offered = append(offered, w)
		}
		if len(offered) == 0 {
			break
		}
		resp, err := o.stream.Recv()
		if err != nil {
			return nil, 0, "", fromStatus(err)
		}
		if resp.Result != nil {
			return nil, 0, "", fmt.Errorf("dedup: the tier finished the write before its last offer was answered")
		}
		w := offered[0]
		offered = offered[1:]
		o.learn(w, resp.Need)
		if err := o.sendNeeded(w, resp.Need); err != nil {
			return nil, 0, "", err
		}
		free <- w.whole
	}
	if o.first != nil {
		// Nothing was offered: WriteOffered sends streams this short
		// through Write, so this is a stream that failed to read.
		return nil, 0, "", errors.New("dedup: nothing to offer")
	}
	if err := o.stream.CloseSend(); err != nil {
		return nil, 0, "", fromStatus(err)
	}
	resp, err := o.stream.Recv()
	if err != nil {
		return nil, 0, "", fromStatus(err)
	}
	if resp.Result == nil {
		return nil, 0, "", fmt.Errorf("dedup: the tier answered an offer it was not sent")
	}
	return resp.Result.Ref, resp.Result.Size, resp.Result.Etag, nil
}

// learn notes how much of w the tier needed, and starts pushing after
// pushAfter windows of new data in a row.
func (o *offerer) learn(w *window, need []uint32) {
	var needed int64
	for _, i := range need {
		if int(i) < len(w.lens) {
			needed += int64(w.lens[i])
		}
	}
	if float64(needed) < newShare*float64(len(w.buf)) {
		o.newInARow = 0
		return
	}
	if o.newInARow++; o.newInARow >= pushAfter {
		o.newInARow, o.pushLeft = 0, pushRun
		o.pushing.Store(true)
	}
}

// push sends w whole, unasked.
func (o *offerer) push(w *window) error {
	if err := o.send(&dpb.OfferRequest{Lengths: w.lens, Push: true}); err != nil {
		return err
	}
	o.pushed++
	all := make([]uint32, len(w.lens))
	for i := range all {
		all[i] = uint32(i)
	}
	return o.sendNeeded(w, all)
}

// sendNeeded sends the chunks of w the tier asked for, in order, in
// messages of about writeChunk bytes.
func (o *offerer) sendNeeded(w *window, need []uint32) error {
	offs := make([]int, len(w.lens)+1)
	for i, n := range w.lens {
		offs[i+1] = offs[i] + int(n)
	}
	var pending []byte // needed chunks adjacent in buf go in one message
	flush := func() error {
		for len(pending) > 0 {
			n := min(len(pending), writeChunk)
			if err := o.send(&dpb.OfferRequest{Data: pending[:n]}); err != nil {
				return err
			}
			pending = pending[n:]
		}
		return nil
	}
	prev := -1
	for _, i := range need {
		if int(i) >= len(w.lens) || int(i) <= prev {
			return fmt.Errorf("dedup: the tier asked for chunk %d of %d out of order", i, len(w.lens))
		}
		b := w.buf[offs[i]:offs[i+1]]
		if len(pending) > 0 && &pending[len(pending)-1] == &w.buf[offs[i]-1] {
			pending = pending[:len(pending)+len(b)]
		} else {
			if err := flush(); err != nil {
				return err
			}
			pending = b
		}
		prev = int(i)
	}
	return flush()
}
