package rpc

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registered first, so ours replaces it
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// codec is gRPC's protobuf codec with Shoal's message buffer pool in place
// of gRPC's default one: the default pool's Get zeroes the whole buffer,
// and the codec gets one per message above 1 KiB, for marshalling and for
// gathering a received message's frames (10% of a storage node's CPU under
// batched 4 KiB puts). gRPC gives no option for the codec's pool, only for
// the transport's, so the codec is registered under gRPC's own name.
type codec struct{}

func init() { encoding.RegisterCodecV2(codec{}) }

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("rpc: cannot marshal %T: not a proto.Message", v)
	}
	size := proto.Size(m)
	// UseCachedSize reuses the Size just computed (m is not being mutated).
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := messagePool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		messagePool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, messagePool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rpc: cannot unmarshal into %T: not a proto.Message", v)
	}
	buf := data.MaterializeToBuffer(messagePool)
	defer buf.Free()
	// proto.Unmarshal copies what it keeps, so the buffer can go back.
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
