package dedup

import (
	"bytes"
	"testing"

	"shoal/shared/dedup/policy"
)

// The root set's shards, the journals' heads and their registry are read
// from mutable blocks any writer of the cluster could have written: a
// decoder refuses what it cannot read, never panics, and what it accepts
// encodes back to a form it reads the same.
func FuzzRootFormats(f *testing.F) {
	f.Add(encodeRoots(shardState{}), uint8(0))
	f.Add(encodeHead(head{}), uint8(1))
	f.Add(encodeRegistry(map[string]int64{"j": 1}), uint8(2))
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		switch which % 3 {
		case 0:
			roundTrip(t, "shard", b, decodeRoots, encodeRoots)
		case 1:
			roundTrip(t, "head", b, decodeHead, encodeHead)
		default:
			m, err := decodeRegistry(b)
			if err != nil {
				return
			}
			if _, err := decodeRegistry(encodeRegistry(m)); err != nil {
				t.Fatalf("re-encoded registry refused: %v", err)
			}
		}
	})
}

// roundTrip checks that what decode accepts encodes back to bytes it
// decodes to the same thing.
func roundTrip[T any](t *testing.T, what string, b []byte, decode func([]byte) (T, error), encode func(T) []byte) {
	t.Helper()
	v, err := decode(b)
	if err != nil {
		return
	}
	again, err := decode(encode(v))
	if err != nil {
		t.Fatalf("re-encoded %s refused: %v", what, err)
	}
	if !bytes.Equal(encode(again), encode(v)) {
		t.Fatalf("%s changed through a round trip", what)
	}
}

// A policy string comes from users (flags, S3 headers) and a binary policy
// from references: both are refused or round-trip.
func FuzzPolicy(f *testing.F) {
	f.Add("chunk=cdc:16k/64k/256k,compress=zstd:3,encrypt=on,redundancy=ec:4+2", []byte{})
	f.Add("redundancy=r:3/2", []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, s string, b []byte) {
		if p, err := policy.Parse(s); err == nil {
			q, err := policy.Parse(p.String())
			if err != nil || q != p {
				t.Fatalf("%q parsed to %v, whose string %q gives %v, %v", s, p, p.String(), q, err)
			}
			enc, err := p.AppendBinary(nil)
			if err != nil {
				t.Fatalf("%v does not encode: %v", p, err)
			}
			if r, n, err := policy.DecodeBinary(enc); err != nil || r != p || n != len(enc) {
				t.Fatalf("%v encoded and decoded to %v (%d of %d bytes), %v", p, r, n, len(enc), err)
			}
		}
		if p, n, err := policy.DecodeBinary(b); err == nil {
			if n <= 0 || n > len(b) {
				t.Fatalf("decoded %d of %d bytes", n, len(b))
			}
			if _, err := p.AppendBinary(nil); err != nil {
				t.Fatalf("decoded policy %v does not encode: %v", p, err)
			}
		}
	})
}
