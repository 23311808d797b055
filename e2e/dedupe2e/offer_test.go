package dedupe2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"shoal/proto/dedupb"
	"shoal/services/dedup/client"
	"shoal/shared/block"
	sdedup "shoal/shared/dedup"
	"shoal/shared/dedup/policy"
	"shoal/shared/rpc"
)

// sentBytes counts the payload bytes a connection sends.
type sentBytes struct{ n atomic.Int64 }

func (s *sentBytes) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (s *sentBytes) HandleRPC(_ context.Context, st stats.RPCStats) {
	if p, ok := st.(*stats.OutPayload); ok {
		s.n.Add(int64(p.Length))
	}
}
func (s *sentBytes) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (s *sentBytes) HandleConn(context.Context, stats.ConnStats)                       {}

// TestWriteOffered: an offering write over real gRPC stores what Write
// would (size, digest, bytes), a second one of the same data sends no
// chunk bytes (under 2% of the stream: hashes and lengths), an edited copy
// sends only the chunks around the edit, and a stream whose reader fails
// stores nothing and returns the reader's error. Every policy shape.
func TestWriteOffered(t *testing.T) {
	_, d := start(t, 3)
	ctx := ctxT(t, 3*time.Minute)
	sent := &sentBytes{}
	cl, err := client.Dial(d.Service.Addr(), grpc.WithStatsHandler(sent))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	var data []byte
	for i, tc := range []struct{ pol, vol string }{
		{"", ""}, {"compress=none", ""}, {"encrypt=on", "offers"}, {"redundancy=ec:2+1", ""}, {"chunk=fixed:64k", ""},
	} {
		// Random bytes with a compressible run, so compression both pays
		// and is skipped; new for each policy, so none finds another's.
		data = append(randBytes(byte(30+i), 5<<20), bytes.Repeat([]byte(fmt.Sprintf("offered chunks %d ", i)), 200000)...)
		t.Run(tc.pol, func(t *testing.T) {
			p, err := policy.Parse(tc.pol)
			if err != nil {
				t.Fatal(err)
			}
			digest, err := sdedup.Digest(p.Chunking, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			put := func(b []byte) ([]byte, int64) {
				t.Helper()
				before := sent.n.Load()
				ref, size, etag, err := cl.WriteOffered(ctx, tc.pol, tc.vol, bytes.NewReader(b))
				if err != nil {
					t.Fatalf("offered write: %v", err)
				}
				if size != int64(len(b)) {
					t.Fatalf("size %d, wrote %d", size, len(b))
				}
				if got := read(t, ctx, cl, ref, tc.vol, 0, -1); !bytes.Equal(got, b) {
					t.Fatalf("read back %d bytes, not what was written", len(got))
				}
				if &b[0] == &data[0] && etag != hex.EncodeToString(digest[:]) {
					t.Fatalf("etag %s, want the stream's digest %x", etag, digest)
				}
				return ref, sent.n.Load() - before
			}
			_, first := put(data)
			if first < int64(len(data)) && p.Compression.Algo == policy.NoCompression {
				t.Fatalf("first write sent %d bytes of %d", first, len(data))
			}
			_, again := put(data)
			if again > int64(len(data))/50 {
				t.Fatalf("second write of the same data sent %d bytes of %d", again, len(data))
			}
			edited := append([]byte(nil), data...)
			copy(edited[3<<20:], "an edit")
			_, edit := put(edited)
			if edit > 3*int64(p.Chunking.MaxLen())+int64(len(data))/50 {
				t.Fatalf("an edit sent %d bytes", edit)
			}
			t.Logf("%q: sent %d, then %d, then %d after an edit, of %d", tc.pol, first, again, edit, len(data))
		})
	}

	// Many windows, each needing some of its chunks: a 48 MiB stream
	// stored, then offered again with every third MiB changed.
	big := randBytes(40, 48<<20)
	bigRef, _, _, err := cl.WriteOffered(ctx, "", "", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	// New data: after two windows asked for whole, the rest is pushed.
	if n := cl.PushedWindows(); n < 4 {
		t.Fatalf("48 MiB of new data: %d windows pushed", n)
	}
	if got := read(t, ctx, cl, bigRef, "", 0, -1); !bytes.Equal(got, big) {
		t.Fatal("pushed stream read back wrong")
	}
	pushed := cl.PushedWindows()
	for i := 0; i < len(big); i += 3 << 20 {
		big[i] ^= 0xff
	}
	before := sent.n.Load()
	ref, size, _, err := cl.WriteOffered(ctx, "", "", bytes.NewReader(big))
	if err != nil || size != int64(len(big)) {
		t.Fatalf("patched stream: %d bytes, %v", size, err)
	}
	if n := sent.n.Load() - before; n > int64(len(big))/4 {
		t.Fatalf("patched stream sent %d bytes of %d", n, len(big))
	}
	if got := read(t, ctx, cl, ref, "", 0, -1); !bytes.Equal(got, big) {
		t.Fatal("patched stream read back wrong")
	}
	if n := cl.PushedWindows() - pushed; n != 0 {
		t.Fatalf("stored data pushed: %d windows", n)
	}

	// A failing reader, or a cancelled call, aborts the write with its own
	// error and publishes no reference.
	usage, err := cl.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("client-side failure")
	_, _, _, err = cl.WriteOffered(ctx, "", "", io.MultiReader(bytes.NewReader(randBytes(41, 9<<20)), errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("failing reader: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	_, _, _, err = cl.WriteOffered(cctx, "", "", io.MultiReader(bytes.NewReader(randBytes(42, 9<<20)), cancelReader{cctx, cancel}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write: %v", err)
	}
	if after, err := cl.Usage(ctx); err != nil || after.Logical != usage.Logical {
		t.Fatalf("aborted writes changed the live bytes: %d → %d (%v)", usage.Logical, after.Logical, err)
	}
	// Short streams go through Write, whatever their policy says.
	small := randBytes(22, 100<<10)
	ref = write(t, ctx, cl, "", "", small)
	if got := read(t, ctx, cl, ref, "", 0, -1); !bytes.Equal(got, small) {
		t.Fatal("small stream read back wrong")
	}
	if _, _, _, err := cl.WriteOffered(ctx, "bogus", "", bytes.NewReader(small)); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("bad policy: %v", err)
	}
}

// TestWriteOfferedBadInput: a client breaking the offer protocol gets
// InvalidArgument (lengths the policy cannot cut, hashes and lengths that
// disagree, bytes nobody asked for, bytes that do not match their hash,
// bytes missing at the end), never a stored stream; the tier keeps
// serving.
func TestWriteOfferedBadInput(t *testing.T) {
	_, d := start(t, 3)
	ctx := ctxT(t, time.Minute)
	conn, err := rpc.Dial(d.Service.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	api := dedupb.NewDedupClient(conn)
	chunk := randBytes(23, 64<<10)
	sum := block.Sum(chunk)
	fixed := "chunk=fixed:64k"
	one := func(m ...*dedupb.OfferRequest) error {
		s, err := api.WriteOffered(ctx)
		if err != nil {
			return err
		}
		for _, x := range m {
			if err := s.Send(x); err != nil {
				break // the server ended the call; Recv says why
			}
		}
		_ = s.CloseSend()
		for {
			r, err := s.Recv()
			if err != nil {
				return err
			}
			if r.Result != nil {
				return nil
			}
		}
	}
	cases := map[string][]*dedupb.OfferRequest{
		"no length for a hash":  {{Policy: fixed, Sums: sum[:]}},
		"hash short":            {{Policy: fixed, Sums: sum[:31], Lengths: []uint32{64 << 10}}},
		"length over the max":   {{Policy: fixed, Sums: append(sum[:], sum[:]...), Lengths: []uint32{64<<10 + 1, 64 << 10}}},
		"short chunk then more": {{Policy: fixed, Sums: sum[:], Lengths: []uint32{100}}, {Sums: sum[:], Lengths: []uint32{64 << 10}}},
		"bytes not asked for":   {{Policy: fixed, Data: chunk}},
		"bytes not the hash":    {{Policy: fixed, Sums: sum[:], Lengths: []uint32{64 << 10}}, {Data: randBytes(24, 64<<10)}},
		"bytes missing":         {{Policy: fixed, Sums: sum[:], Lengths: []uint32{64 << 10}}, {Data: chunk[:1000]}},
		"bad policy":            {{Policy: "chunk=fixed:1", Sums: sum[:], Lengths: []uint32{1}}},
		"pushed with hashes":    {{Policy: fixed, Sums: sum[:], Lengths: []uint32{64 << 10}, Push: true}, {Data: chunk}},
		"pushed bytes missing":  {{Policy: fixed, Lengths: []uint32{64 << 10}, Push: true}, {Data: chunk[:100]}},
	}
	// Offers far ahead of their bytes: refused past a bound, not held.
	var ahead []*dedupb.OfferRequest
	for i := range 40 {
		s := block.Sum([]byte{byte(i), 1, 2, 3})
		ahead = append(ahead, &dedupb.OfferRequest{Policy: fixed, Sums: s[:], Lengths: []uint32{64 << 10}})
	}
	if err := one(ahead...); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "ahead of their bytes") {
		t.Errorf("40 offers ahead of their bytes: %v", err)
	}
	for name, msgs := range cases {
		if err := one(msgs...); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	// The protocol done right, by hand: offer, be asked, send; and push.
	if err := one(&dedupb.OfferRequest{Policy: fixed, Sums: sum[:], Lengths: []uint32{64 << 10}}, &dedupb.OfferRequest{Data: chunk}); err != nil {
		t.Fatalf("a well-formed offered write: %v", err)
	}
	if err := one(&dedupb.OfferRequest{Policy: fixed, Lengths: []uint32{64 << 10}, Push: true}, &dedupb.OfferRequest{Data: chunk}); err != nil {
		t.Fatalf("a well-formed pushed write: %v", err)
	}
}

// cancelReader cancels its call when reached, and then fails as a source
// whose context ended would.
type cancelReader struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func (c cancelReader) Read([]byte) (int, error) {
	c.cancel()
	<-c.ctx.Done()
	return 0, c.ctx.Err()
}
