package rpc

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// wireReader reads a received message where gRPC left it: in the buffers
// of its HTTP/2 frames (16 KiB each), not gathered into one. The pooled
// decoders copy a large bytes field from there straight into its pooled
// buffer; gathering the frames first was a second copy of every byte
// (a tenth of `shoal get`'s CPU, as much again in a storage node).
type wireReader struct {
	bufs [][]byte // what is left; bufs[0] may be partly read
	pos  int      // bytes read so far
	size int      // bytes in all
}

var errWireTruncated = errors.New("rpc: truncated message")

func newWireReader(data mem.BufferSlice) *wireReader {
	r := &wireReader{bufs: make([][]byte, 0, len(data))}
	for _, b := range data {
		if d := b.ReadOnlyData(); len(d) > 0 {
			r.bufs = append(r.bufs, d)
			r.size += len(d)
		}
	}
	return r
}

// readByte, read and newWireReader keep bufs free of empty buffers.
func (r *wireReader) readByte() (byte, error) {
	if len(r.bufs) == 0 {
		return 0, errWireTruncated
	}
	c := r.bufs[0][0]
	if r.bufs[0] = r.bufs[0][1:]; len(r.bufs[0]) == 0 {
		r.bufs = r.bufs[1:]
	}
	r.pos++
	return c, nil
}

func (r *wireReader) varint() (uint64, error) {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		c, err := r.readByte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, protowire.ParseError(-3) // varint overflow, as protowire says it
}

// read fills dst.
func (r *wireReader) read(dst []byte) error {
	for len(dst) > 0 {
		if len(r.bufs) == 0 {
			return errWireTruncated
		}
		n := copy(dst, r.bufs[0])
		r.bufs[0], dst, r.pos = r.bufs[0][n:], dst[n:], r.pos+n
		if len(r.bufs[0]) == 0 {
			r.bufs = r.bufs[1:]
		}
	}
	return nil
}

// appendN appends the next n bytes to dst.
func (r *wireReader) appendN(dst []byte, n int) ([]byte, error) {
	if n > r.size-r.pos {
		return dst, errWireTruncated
	}
	l := len(dst)
	dst = slices.Grow(dst, n)[:l+n]
	return dst, r.read(dst[l:])
}

// partition reads the fields of a message up to end: it calls each with
// every length-delimited value of field (each reads exactly n bytes), in
// order, and appends every other field to rest.
func (r *wireReader) partition(end int, field protowire.Number, rest []byte, each func(r *wireReader, n int) error) ([]byte, error) {
	for r.pos < end {
		tag, err := r.varint()
		if err != nil {
			return rest, err
		}
		num, typ := protowire.DecodeTag(tag)
		if num < protowire.MinValidNumber || num > protowire.MaxValidNumber {
			return rest, fmt.Errorf("rpc: bad field number %d", num)
		}
		switch typ {
		case protowire.VarintType:
			v, err := r.varint()
			if err != nil {
				return rest, err
			}
			rest = protowire.AppendVarint(protowire.AppendTag(rest, num, typ), v)
		case protowire.Fixed32Type:
			rest, err = r.appendN(protowire.AppendTag(rest, num, typ), 4)
		case protowire.Fixed64Type:
			rest, err = r.appendN(protowire.AppendTag(rest, num, typ), 8)
		case protowire.BytesType:
			var n uint64
			if n, err = r.varint(); err != nil {
				return rest, err
			}
			if n > uint64(end-r.pos) {
				return rest, errWireTruncated
			}
			if num == field {
				start := r.pos
				if err = each(r, int(n)); err == nil && r.pos != start+int(n) {
					err = fmt.Errorf("rpc: field %d: read %d of its %d bytes", num, r.pos-start, n)
				}
			} else {
				rest, err = r.appendN(protowire.AppendVarint(protowire.AppendTag(rest, num, typ), n), int(n))
			}
		default: // groups: none in Shoal's messages
			return rest, fmt.Errorf("rpc: field %d: unsupported wire type %d", num, typ)
		}
		if err != nil {
			return rest, err
		}
	}
	if r.pos != end {
		return rest, errWireTruncated
	}
	return rest, nil
}
