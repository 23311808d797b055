package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	bpb "shoal/proto/blockstorepb"
	"shoal/shared/block"
)

func TestStatusRoundTrip(t *testing.T) {
	for _, sentinel := range []error{block.ErrNotFound, block.ErrTooLarge, block.ErrHashMismatch, block.ErrBadAddress, ErrFull} {
		wrapped := fmt.Errorf("%w: detail", sentinel)
		back := FromStatus(ToStatus(wrapped))
		if !errors.Is(back, sentinel) {
			t.Errorf("%v did not survive the round trip: %v", sentinel, back)
		}
	}
	if st, _ := status.FromError(ToStatus(ErrFull)); st.Code() != codes.ResourceExhausted {
		t.Errorf("ErrFull maps to %v", st.Code())
	}
	if st, _ := status.FromError(ToStatus(context.DeadlineExceeded)); st.Code() != codes.DeadlineExceeded {
		t.Errorf("deadline maps to %v", st.Code())
	}
	if st, _ := status.FromError(ToStatus(errors.New("boom"))); st.Code() != codes.Internal {
		t.Errorf("unknown maps to %v", st.Code())
	}
}

func TestBufferPoolTiers(t *testing.T) {
	p := &bufferPool{}
	for _, tc := range []struct{ n, cap int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {4096, 4096}, {40_000, 65536},
		{300 << 10, 512 << 10}, {1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {4<<20 + 100, 5 << 20},
		{64 << 20, 64 << 20}, {64<<20 + 1, 64<<20 + 1},
	} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Fatalf("Get(%d): len %d cap %d, want cap %d", tc.n, len(*b), cap(*b), tc.cap)
		}
		p.Put(b)
		if again := p.Get(tc.n); len(*again) != tc.n || cap(*again) != tc.cap {
			t.Fatalf("Get(%d) again: len %d cap %d", tc.n, len(*again), cap(*again))
		}
	}
	odd := make([]byte, 1000) // not a class size: dropped, never handed out short
	p.Put(&odd)
	if b := p.Get(1000); cap(*b) != 1024 {
		t.Fatalf("Get(1000) after a stray Put: cap %d", cap(*b))
	}
}

// The codec gRPC uses is ours, and round-trips messages of every size
// class, pooled or not.
func TestCodecRegistered(t *testing.T) {
	c := encoding.GetCodecV2("proto")
	if _, ok := c.(codec); !ok {
		t.Fatalf("gRPC's proto codec is %T, not rpc.codec", c)
	}
	for _, n := range []int{0, 10, 5000, 300 << 10, 5 << 20} {
		in := &bpb.PutRequest{Address: []byte("addr"), Data: bytes.Repeat([]byte{7}, n)}
		data, err := c.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out := &bpb.PutRequest{}
		if err := c.Unmarshal(data, out); err != nil {
			t.Fatal(err)
		}
		data.Free()
		if !proto.Equal(in, out) {
			t.Fatalf("%d bytes: round trip differs", n)
		}
	}
}

// Reused decodes like proto.Unmarshal, the one field going to its buffer,
// which later messages overwrite in place and Release hands on.
func TestReusedDecodesLikeUnmarshal(t *testing.T) {
	r := Reused{Msg: &bpb.PutRequest{}, Field: 2}
	var storage *byte
	for i, m := range []*bpb.PutRequest{
		{Address: []byte("a1"), Data: bytes.Repeat([]byte{1}, 300<<10), Kind: bpb.BlockKind(1)},
		{Address: []byte("a2"), Data: []byte("small")},
		{Address: []byte("a3")},
	} {
		decodeAsReceived(t, m, &r)
		got := r.Msg.(*bpb.PutRequest)
		if !bytes.Equal(r.Bytes, m.Data) || !bytes.Equal(got.Address, m.Address) || got.Kind != m.Kind || got.Data != nil {
			t.Fatalf("message %d decoded as %q/%d bytes/%v", i, got.Address, len(r.Bytes), got.Kind)
		}
		if i == 0 {
			storage = &r.Bytes[:1][0]
		} else if &r.Bytes[:1][0] != storage {
			t.Fatalf("message %d got new storage", i)
		}
	}
	// A repeated occurrence of the field: the last one wins, as in proto;
	// a malformed message is an error.
	wire := []byte{0x12, 5, 'f', 'i', 'r', 's', 't', 0x12, 1, 'x'}
	if err := r.decode(wireOf(wire, 3)); err != nil || string(r.Bytes) != "x" {
		t.Fatalf("repeated field: %q, %v", r.Bytes, err)
	}
	if err := r.decode(wireOf([]byte{0x12, 9, 'x'}, 1)); err == nil {
		t.Fatal("a truncated field decoded")
	}
	r.Release()
	if r.Bytes != nil {
		t.Fatal("Release kept the buffer")
	}
}

// A PoolField message decodes as proto.Unmarshal would, its field in a
// pooled buffer that Release gives back; other messages are left alone.
func TestPoolField(t *testing.T) {
	PoolField(&bpb.PutRequest{}, "data")
	m := &bpb.PutRequest{Address: []byte("addr"), Data: bytes.Repeat([]byte{7}, 200<<10), Kind: bpb.BlockKind(2)}
	got := &bpb.PutRequest{}
	decodeAsReceived(t, m, got)
	if !proto.Equal(got, m) {
		t.Fatal("a pooled decode differs from the message sent")
	}
	if _, ok := pooled.Load(got); !ok {
		t.Fatal("the decoded message holds no pooled buffer")
	}
	Release(got)
	Release(m) // not decoded here: nothing happens
	if _, ok := pooled.Load(got); ok {
		t.Fatal("Release kept the buffer")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("PoolField accepted a field that is not bytes")
		}
	}()
	PoolField(&bpb.PutRequest{}, "kind")
}

// PoolItems decodes like proto.Unmarshal, each item's bytes in a buffer of
// the message pool.
func TestPoolItems(t *testing.T) {
	setData := func(m proto.Message, b []byte) { m.(*bpb.BatchResult).Data = b }
	PoolItems(&bpb.GetBatchResponse{}, "results", "data", setData)
	c := encoding.GetCodecV2("proto")
	m := &bpb.GetBatchResponse{Results: []*bpb.BatchResult{
		{Data: bytes.Repeat([]byte{1}, 300<<10), Kind: bpb.BlockKind(1)},
		{Code: 5, Message: "not found"},
		{Data: []byte("small"), Existed: true},
	}}
	got := &bpb.GetBatchResponse{}
	decodeAsReceived(t, m, got)
	if !proto.Equal(got, m) {
		t.Fatalf("a pooled decode differs from the message sent: %v", got)
	}
	for i, r := range got.Results {
		if d := r.Data; len(d) > 0 {
			if _, want := (&bufferPool{}).class(len(d)); cap(d) != want {
				t.Fatalf("item %d: %d bytes in a buffer of %d, not one of the pool's", i, len(d), cap(d))
			}
			FreeBuffer(&d)
		}
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 5, 0x22, 9})}, &bpb.GetBatchResponse{}); err == nil {
		t.Fatal("a truncated item decoded")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("PoolItems accepted a field that is not a list of messages")
		}
	}()
	PoolItems(&bpb.GetBatchRequest{}, "addresses", "data", setData)
}

// A message registered with SendItemsInPlace is sent as proto would
// encode it, its items' large data in the slice as the very buffers (no
// copy), and the items' data taken.
func TestSendItemsInPlace(t *testing.T) {
	SendItemsInPlace(&bpb.GetBatchResponse{}, "results", "data", func(m proto.Message) []byte {
		r := m.(*bpb.BatchResult)
		d := r.Data
		r.Data = nil
		return d
	})
	pooled := func(b []byte) []byte {
		p := Buffer(len(b))
		copy(*p, b)
		return *p
	}
	big1, big2 := pooled(bytes.Repeat([]byte{1, 2, 3}, 100<<10)), pooled(bytes.Repeat([]byte{9}, inPlaceMin))
	m := &bpb.GetBatchResponse{Results: []*bpb.BatchResult{
		{Data: big1, Kind: bpb.BlockKind(1)},
		{Code: 5, Message: "not found"},
		{Data: pooled([]byte("small")), Kind: bpb.BlockKind(2)},
		{Data: big2},
		{},
	}}
	want := proto.Clone(m)
	c := encoding.GetCodecV2("proto")
	wire, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := &bpb.GetBatchResponse{}
	if err := proto.Unmarshal(wire.Materialize(), got); err != nil || !proto.Equal(got, want) {
		t.Fatalf("sent %v, decoded %v (%v)", want, got, err)
	}
	inSlice := map[*byte]bool{}
	for _, b := range wire {
		if d := b.ReadOnlyData(); len(d) > 0 {
			inSlice[&d[0]] = true
		}
	}
	if !inSlice[&big1[0]] || !inSlice[&big2[0]] {
		t.Fatal("large data was copied, not sent in place")
	}
	for i, r := range m.Results {
		if r.Data != nil {
			t.Fatalf("item %d kept its data after sending", i)
		}
	}
	wire.Free()
	empty, err := c.Marshal(&bpb.GetBatchResponse{})
	if err != nil || empty.Len() != 0 {
		t.Fatalf("an empty response: %d bytes, %v", empty.Len(), err)
	}
}

// decodeAsReceived decodes m's wire form with the codec into into. The
// wire is proto's own: a marshaller registered with the codec
// (SendItemsInPlace) takes what it sends from m.
func decodeAsReceived(t *testing.T, m proto.Message, into any) {
	t.Helper()
	wire, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := encoding.GetCodecV2("proto").Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, into); err != nil {
		t.Fatal(err)
	}
}

// wireOf is b as gRPC may hand it over: in pieces of at most n bytes.
func wireOf(b []byte, n int) *wireReader { return newWireReader(pieces(b, n)) }

func pieces(b []byte, n int) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return out
}

// The pooled decoders read a message in its frames' buffers, wherever they
// are cut (a varint or a field may straddle two), and agree with
// proto.Unmarshal on every prefix of a message: the same message, or an
// error for both.
func TestPooledDecodersAcrossFrames(t *testing.T) {
	PoolField(&bpb.PutRequest{}, "data")
	PoolItems(&bpb.GetBatchResponse{}, "results", "data", func(m proto.Message, b []byte) { m.(*bpb.BatchResult).Data = b })
	c := encoding.GetCodecV2("proto")
	msgs := []proto.Message{
		&bpb.PutRequest{Address: []byte("addr"), Data: bytes.Repeat([]byte("0123456789"), 5000), Kind: bpb.BlockKind(2)},
		&bpb.GetBatchResponse{Results: []*bpb.BatchResult{
			{Data: bytes.Repeat([]byte("abc"), 300), Kind: bpb.BlockKind(1)},
			{Code: 5, Message: "not found"},
			{Data: []byte("small"), Existed: true},
		}},
	}
	for _, m := range msgs {
		wire, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 2, 7, 300, 16 << 10} {
			for end := 0; end <= len(wire); end += max(1, end/50) {
				want := m.ProtoReflect().New().Interface()
				werr := proto.Unmarshal(wire[:end], want)
				got := m.ProtoReflect().New().Interface()
				gerr := c.Unmarshal(pieces(wire[:end], n), got)
				if (werr == nil) != (gerr == nil) {
					t.Fatalf("%T, %d of %d bytes in pieces of %d: proto says %v, the codec %v", m, end, len(wire), n, werr, gerr)
				}
				if werr == nil && !proto.Equal(got, want) {
					t.Fatalf("%T, %d of %d bytes in pieces of %d: decoded differently", m, end, len(wire), n)
				}
			}
			got := m.ProtoReflect().New().Interface()
			if err := c.Unmarshal(pieces(wire, n), got); err != nil || !proto.Equal(got, m) {
				t.Fatalf("%T in pieces of %d: %v", m, n, err)
			}
		}
	}
}
