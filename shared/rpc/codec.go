package rpc

import (
	"fmt"
	"slices"
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
	if anyInPlace.Load() {
		if f, ok := inPlace.Load(m.ProtoReflect().Descriptor().FullName()); ok {
			return f.(func(proto.Message) (mem.BufferSlice, error))(m)
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
	// The pooled decoders read the frames' buffers in place (wireReader).
	if r, ok := v.(*Reused); ok {
		return r.decode(newWireReader(data))
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rpc: cannot unmarshal into %T: not a proto.Message", v)
	}
	if anyPooled.Load() {
		if dec, ok := pooledDecoders.Load(m.ProtoReflect().Descriptor().FullName()); ok {
			return dec.(decoder)(newWireReader(data), m)
		}
	}
	buf := data.MaterializeToBuffer(messagePool)
	defer buf.Free()
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

func (r *Reused) decode(w *wireReader) error {
	if r.Bytes == nil {
		if p, ok := reusedPool.Get().(*[]byte); ok {
			r.Bytes = *p
		}
	}
	r.Bytes = r.Bytes[:0]
	rest, err := w.partition(w.size, r.Field, r.rest[:0], func(w *wireReader, n int) error {
		r.Bytes = slices.Grow(r.Bytes[:0], n)[:n] // the last one, as proto does
		return w.read(r.Bytes)
	})
	r.rest = rest
	if err != nil {
		return err
	}
	return proto.Unmarshal(r.rest, r.Msg)
}

// pooledDecoders holds, by message name, the decoders PoolField and
// PoolItems register; pooled maps each message PoolField decoded to its
// buffer until Release.
var (
	pooledDecoders sync.Map // protoreflect.FullName → decoder
	anyPooled      atomic.Bool
	pooled         sync.Map // proto.Message → *[]byte
)

type decoder = func(*wireReader, proto.Message) error

func registerDecoder(m proto.Message, dec decoder) {
	pooledDecoders.Store(m.ProtoReflect().Descriptor().FullName(), dec)
	anyPooled.Store(true)
}

// readPooled reads the next n bytes into a buffer of the message pool;
// old, when not nil, is a previous value of the same field (proto keeps
// the last one), given back.
func readPooled(w *wireReader, n int, old *[]byte) (*[]byte, error) {
	if old != nil {
		messagePool.Put(old)
	}
	buf := messagePool.Get(n)
	return buf, w.read(*buf)
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
	registerDecoder(m, func(w *wireReader, m proto.Message) error { return unmarshalPooled(w, m, fd) })
}

// Release gives back the buffer of a message the codec decoded under
// PoolField; other messages are left alone. m's pooled field must no
// longer be used.
func Release(m proto.Message) {
	if b, ok := pooled.LoadAndDelete(m); ok {
		messagePool.Put(b.(*[]byte))
	}
}

func unmarshalPooled(w *wireReader, m proto.Message, fd protoreflect.FieldDescriptor) error {
	var buf *[]byte
	rest, err := w.partition(w.size, fd.Number(), nil, func(w *wireReader, n int) (err error) {
		buf, err = readPooled(w, n, buf)
		return err
	})
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	if buf == nil {
		return nil
	}
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
	lf := listField(m.ProtoReflect().Descriptor(), list)
	f := itemFields{lf, bytesField(lf.Message(), data), set}
	registerDecoder(m, func(w *wireReader, m proto.Message) error { return unmarshalItems(w, m, f) })
}

// listField is d's repeated message field named name; it panics if there
// is none (a registration's mistake, caught at start-up).
func listField(d protoreflect.MessageDescriptor, name protoreflect.Name) protoreflect.FieldDescriptor {
	lf := d.Fields().ByName(name)
	if lf == nil || lf.Kind() != protoreflect.MessageKind || !lf.IsList() {
		panic(fmt.Sprintf("rpc: %s has no repeated message field %q", d.FullName(), name))
	}
	return lf
}

func unmarshalItems(w *wireReader, m proto.Message, f itemFields) error {
	type item struct {
		rest []byte  // the item's other fields
		data *[]byte // its data field's value, pooled
	}
	var items []item
	rest, err := w.partition(w.size, f.list.Number(), nil, func(w *wireReader, n int) (err error) {
		var it item
		it.rest, err = w.partition(w.pos+n, f.data.Number(), nil, func(w *wireReader, n int) (err error) {
			it.data, err = readPooled(w, n, it.data)
			return err
		})
		items = append(items, it)
		return err
	})
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	list := m.ProtoReflect().Mutable(f.list).List()
	for _, it := range items {
		item := list.NewElement()
		if err := proto.Unmarshal(it.rest, item.Message().Interface()); err != nil {
			return err
		}
		if it.data != nil && len(*it.data) > 0 {
			f.set(item.Message().Interface(), *it.data)
		}
		list.Append(item)
	}
	return nil
}

// inPlace holds, by message name, the marshallers SendItemsInPlace
// registers.
var (
	inPlace    sync.Map // protoreflect.FullName → func(proto.Message) (mem.BufferSlice, error)
	anyInPlace atomic.Bool
)

// inPlaceMin is the smallest data sent in place; smaller data is copied
// into the message, where it costs less than a buffer of its own.
const inPlaceMin = 4 << 10

// SendItemsInPlace makes the codec send, in every message of m's type, the
// bytes field named data of each item of its repeated message field named
// list from where it lies, instead of copying it into the message's
// buffer: a storage node's block reads, each in a buffer from Buffer,
// which goes back to the pool once gRPC has written it (the copy was a
// tenth of a node's CPU serving reads). take returns an item's data and
// clears the field. Only for messages that nothing reads after they are
// sent (a handler's response): the codec takes their list and its data.
func SendItemsInPlace(m proto.Message, list, data protoreflect.Name, take func(item proto.Message) []byte) {
	d := m.ProtoReflect().Descriptor()
	lf := listField(d, list)
	f := itemFields{list: lf, data: bytesField(lf.Message(), data)}
	inPlace.Store(d.FullName(), func(m proto.Message) (mem.BufferSlice, error) { return marshalInPlace(m, f, take) })
	anyInPlace.Store(true)
}

// marshalInPlace encodes m as its other fields, then each item as its
// other fields followed by its data field, whose bytes are a buffer of the
// slice of their own: proto's wire format allows fields in any order and
// merges a repeated field's occurrences.
func marshalInPlace(m proto.Message, f itemFields, take func(proto.Message) []byte) (mem.BufferSlice, error) {
	r := m.ProtoReflect()
	list := r.Get(f.list).List()
	items := make([]proto.Message, list.Len())
	for i := range items {
		items[i] = list.Get(i).Message().Interface()
	}
	r.Clear(f.list)
	hdr, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out mem.BufferSlice
	var item []byte
	for _, it := range items {
		data := take(it)
		if item, err = (proto.MarshalOptions{}).MarshalAppend(item[:0], it); err != nil {
			return nil, err
		}
		size := len(item)
		if len(data) > 0 {
			size += protowire.SizeTag(f.data.Number()) + protowire.SizeBytes(len(data))
		}
		hdr = protowire.AppendTag(hdr, f.list.Number(), protowire.BytesType)
		hdr = append(protowire.AppendVarint(hdr, uint64(size)), item...)
		if len(data) == 0 {
			continue
		}
		hdr = protowire.AppendTag(hdr, f.data.Number(), protowire.BytesType)
		hdr = protowire.AppendVarint(hdr, uint64(len(data)))
		if len(data) < inPlaceMin {
			hdr = append(hdr, data...)
			FreeBuffer(&data)
			continue
		}
		out = append(out, mem.SliceBuffer(hdr), mem.NewBuffer(&data, messagePool))
		hdr = nil
	}
	if len(hdr) > 0 || len(out) == 0 {
		out = append(out, mem.SliceBuffer(hdr))
	}
	return out, nil
}
