package rpc

import (
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registered first, so ours replaces it
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
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
	if anyRelease.Load() {
		if f, ok := afterMarshal.Load(m.ProtoReflect().Descriptor().FullName()); ok {
			defer f.(func(proto.Message))(m)
		}
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
	if r, ok := v.(*Reused); ok {
		buf := data.MaterializeToBuffer(messagePool)
		defer buf.Free()
		return r.decode(buf.ReadOnlyData())
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rpc: cannot unmarshal into %T: not a proto.Message", v)
	}
	buf := data.MaterializeToBuffer(messagePool)
	defer buf.Free()
	if anyPooled.Load() {
		if dec, ok := pooledDecoders.Load(m.ProtoReflect().Descriptor().FullName()); ok {
			return dec.(func([]byte, proto.Message) error)(buf.ReadOnlyData(), m)
		}
	}
	// proto.Unmarshal copies what it keeps, so the buffer can go back.
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Reused receives a stream's messages whose one large bytes field (Field)
// goes into storage kept from one message to the next, for RecvMsg.
// proto.Unmarshal gives every bytes field a new slice, and a new 1 MiB
// slice per message is mostly pages the process touches for the first
// time: on this project's VMs a first touch costs ~10 µs a page, and the
// dedup tier's Write stream spent 2.5 ms per MiB received on it (nearly
// all the page faults of an S3 PUT at R=3).
//
// The storage comes from a pool shared by all streams (a stream is often
// one object: a buffer of its own would be fresh memory again), and goes
// back with Release.
type Reused struct {
	Msg   proto.Message    // the other fields; Field stays unset in it
	Field protowire.Number // a bytes field of Msg
	Bytes []byte           // Field's value, valid until the next decode
	rest  []byte
}

// ReuseField returns a Reused receiving m's bytes field named field.
func ReuseField(m proto.Message, field protoreflect.Name) Reused {
	return Reused{Msg: m, Field: bytesField(m.ProtoReflect().Descriptor(), field).Number()}
}

// bytesField is d's singular bytes field named name; it panics if there is
// none (a registration's mistake, caught at start-up).
func bytesField(d protoreflect.MessageDescriptor, name protoreflect.Name) protoreflect.FieldDescriptor {
	fd := d.Fields().ByName(name)
	if fd == nil || fd.Kind() != protoreflect.BytesKind || fd.Cardinality() == protoreflect.Repeated {
		panic(fmt.Sprintf("rpc: %s has no singular bytes field %q", d.FullName(), name))
	}
	return fd
}

var reusedPool sync.Pool // *[]byte

// Release gives the storage back; Bytes must no longer be used.
func (r *Reused) Release() {
	if cap(r.Bytes) > 0 {
		b := r.Bytes[:0]
		reusedPool.Put(&b)
	}
	r.Bytes = nil
}

func (r *Reused) decode(b []byte) error {
	if r.Bytes == nil {
		if p, ok := reusedPool.Get().(*[]byte); ok {
			r.Bytes = *p
		}
	}
	v, rest, err := split(b, r.Field, r.rest[:0])
	r.rest = rest
	if err != nil {
		return err
	}
	r.Bytes = append(r.Bytes[:0], v...)
	return proto.Unmarshal(r.rest, r.Msg)
}

// split returns the value of the bytes field numbered field in the wire
// message b (the last one, as proto does) and appends every other field to
// rest.
func split(b []byte, field protowire.Number, rest []byte) (value, _ []byte, _ error) {
	rest, err := partition(b, field, rest, func(v []byte) { value = v })
	return value, rest, err
}

// partition calls each with every length-delimited value of field in the
// wire message b, in order, and appends every other field to rest.
func partition(b []byte, field protowire.Number, rest []byte, each func([]byte)) ([]byte, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return rest, protowire.ParseError(n)
		}
		l := protowire.ConsumeFieldValue(num, typ, b[n:])
		if l < 0 {
			return rest, protowire.ParseError(l)
		}
		if num == field && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n:])
			each(v)
		} else {
			rest = append(rest, b[:n+l]...)
		}
		b = b[n+l:]
	}
	return rest, nil
}

// pooledDecoders holds, by message name, the decoders PoolField and
// PoolItems register; pooled maps each message PoolField decoded to its
// buffer until Release.
var (
	pooledDecoders sync.Map // protoreflect.FullName → func([]byte, proto.Message) error
	anyPooled      atomic.Bool
	pooled         sync.Map // proto.Message → *[]byte
)

func registerDecoder(m proto.Message, dec func([]byte, proto.Message) error) {
	pooledDecoders.Store(m.ProtoReflect().Descriptor().FullName(), dec)
	anyPooled.Store(true)
}

// pooledCopy is v in a buffer of the message pool.
func pooledCopy(v []byte) *[]byte {
	buf := messagePool.Get(len(v))
	copy(*buf, v)
	return buf
}

// PoolField makes the codec decode the bytes field named field of every
// received message of m's type into a buffer from the message pool, for
// handlers that take a large payload and are done with it when they
// return: a buffer of its own per message is mostly fresh pages (see
// Reused). Such a handler calls Release(req) when nothing refers to the
// field any more; a message it never releases keeps its buffer from the
// pool until it does.
func PoolField(m proto.Message, field protoreflect.Name) {
	fd := bytesField(m.ProtoReflect().Descriptor(), field)
	registerDecoder(m, func(b []byte, m proto.Message) error { return unmarshalPooled(b, m, fd) })
}

// Release gives back the buffer of a message the codec decoded under
// PoolField; other messages are left alone. m's pooled field must no
// longer be used.
func Release(m proto.Message) {
	if b, ok := pooled.LoadAndDelete(m); ok {
		messagePool.Put(b.(*[]byte))
	}
}

func unmarshalPooled(b []byte, m proto.Message, fd protoreflect.FieldDescriptor) error {
	v, rest, err := split(b, fd.Number(), nil)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	buf := pooledCopy(v)
	m.ProtoReflect().Set(fd, protoreflect.ValueOfBytes(*buf))
	pooled.Store(m, buf)
	return nil
}

type itemFields struct {
	list, data protoreflect.FieldDescriptor
	set        func(item proto.Message, data []byte)
}

// PoolItems makes the codec decode, in every received message of m's
// type, the bytes field named data of each item of its repeated message
// field named list into a buffer from the message pool: a block read's
// bytes, which would otherwise be a new slice of fresh pages per block
// (see Reused). Each buffer is the receiver's own, which gives it back
// with FreeBuffer once nothing refers to it, or drops it. set stores an
// item's data in it (protoreflect would drop the buffer's capacity, which
// FreeBuffer needs).
func PoolItems(m proto.Message, list, data protoreflect.Name, set func(item proto.Message, data []byte)) {
	d := m.ProtoReflect().Descriptor()
	lf := d.Fields().ByName(list)
	if lf == nil || lf.Kind() != protoreflect.MessageKind || !lf.IsList() {
		panic(fmt.Sprintf("rpc: %s has no repeated message field %q", d.FullName(), list))
	}
	f := itemFields{lf, bytesField(lf.Message(), data), set}
	registerDecoder(m, func(b []byte, m proto.Message) error { return unmarshalItems(b, m, f) })
}

func unmarshalItems(b []byte, m proto.Message, f itemFields) error {
	var items [][]byte
	rest, err := partition(b, f.list.Number(), nil, func(v []byte) { items = append(items, v) })
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	list := m.ProtoReflect().Mutable(f.list).List()
	for _, it := range items {
		v, irest, err := split(it, f.data.Number(), nil)
		if err != nil {
			return err
		}
		item := list.NewElement()
		if err := proto.Unmarshal(irest, item.Message().Interface()); err != nil {
			return err
		}
		if len(v) > 0 {
			f.set(item.Message().Interface(), *pooledCopy(v))
		}
		list.Append(item)
	}
	return nil
}

// afterMarshal holds, by message name, what to do with a sent message once
// marshalled (ReleaseAfterMarshal).
var (
	afterMarshal sync.Map // protoreflect.FullName → func(proto.Message)
	anyRelease   atomic.Bool
)

// ReleaseAfterMarshal makes the codec call release on every message of
// m's type once it has marshalled it: a server whose responses carry
// pooled buffers (a node's block reads) gives them back there, since its
// handler returns before the response is marshalled. Only for messages
// that nothing reads after they are sent.
func ReleaseAfterMarshal(m proto.Message, release func(proto.Message)) {
	afterMarshal.Store(m.ProtoReflect().Descriptor().FullName(), release)
	anyRelease.Store(true)
}
