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
	c := encoding.GetCodecV2("proto")
	r := Reused{Msg: &bpb.PutRequest{}, Field: 2}
	var storage *byte
	for i, m := range []*bpb.PutRequest{
		{Address: []byte("a1"), Data: bytes.Repeat([]byte{1}, 300<<10), Kind: bpb.BlockKind(1)},
		{Address: []byte("a2"), Data: []byte("small")},
		{Address: []byte("a3")},
	} {
		wire, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Unmarshal(wire, &r); err != nil {
			t.Fatal(err)
		}
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
	if err := r.decode(wire); err != nil || string(r.Bytes) != "x" {
		t.Fatalf("repeated field: %q, %v", r.Bytes, err)
	}
	if err := r.decode([]byte{0x12, 9, 'x'}); err == nil {
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
	c := encoding.GetCodecV2("proto")
	m := &bpb.PutRequest{Address: []byte("addr"), Data: bytes.Repeat([]byte{7}, 200<<10), Kind: bpb.BlockKind(2)}
	wire, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := &bpb.PutRequest{}
	if err := c.Unmarshal(wire, got); err != nil {
		t.Fatal(err)
	}
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
	wire, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := &bpb.GetBatchResponse{}
	if err := c.Unmarshal(wire, got); err != nil {
		t.Fatal(err)
	}
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

// A message registered with ReleaseAfterMarshal is released once marshalled,
// and what was sent is what it held.
func TestReleaseAfterMarshal(t *testing.T) {
	var released []proto.Message
	ReleaseAfterMarshal(&bpb.PutResponse{}, func(m proto.Message) { released = append(released, m) })
	c := encoding.GetCodecV2("proto")
	m := &bpb.PutResponse{Existed: true}
	wire, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(released) != 1 || released[0] != m {
		t.Fatalf("released %d messages, want this one once", len(released))
	}
	got := &bpb.PutResponse{}
	if err := c.Unmarshal(wire, got); err != nil || !proto.Equal(got, m) {
		t.Fatalf("sent %v, decoded %v (%v)", m, got, err)
	}
	if _, err := c.Marshal(&bpb.PutRequest{}); err != nil || len(released) != 1 {
		t.Fatalf("another message type was released (%v)", err)
	}
}
