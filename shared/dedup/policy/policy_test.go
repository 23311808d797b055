package policy

import (
	"errors"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	for _, s := range []string{
		"chunk=cdc:16k/64k/256k,compress=zstd:3,encrypt=on,redundancy=rep:3/2",
		"chunk=fixed:4m,compress=none,encrypt=off,redundancy=ec:4+2",
		"chunk=fixed:4k,compress=zstd:19,encrypt=off,redundancy=rep",
		"chunk=cdc:1k/2k/3000,compress=none,encrypt=on,redundancy=ec:10+4",
	} {
		p, err := Parse(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if p.String() != s {
			t.Errorf("String() = %s, want %s", p.String(), s)
		}
		b, err := p.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		q, n, err := DecodeBinary(b)
		if err != nil || n != len(b) || q != p {
			t.Errorf("%s: binary round trip gave %v, %d/%d, %v", s, q, n, len(b), err)
		}
		for i := range b {
			if _, _, err := DecodeBinary(b[:i]); err == nil {
				t.Errorf("%s: truncated to %d bytes accepted", s, i)
			}
		}
	}
}

func TestParseDefaultsAndShortForms(t *testing.T) {
	p, err := Parse("redundancy=ec:4+2")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Redundancy = Redundancy{Mode: Erasure, Data: 4, Parity: 2}
	want.Chunking = ErasureChunking // EC without a chunk key
	if p != want {
		t.Fatalf("got %v", p)
	}
	if p, err = Parse("redundancy=ec:4+2,chunk=cdc:16k/64k/256k"); err != nil || p.Chunking != Default().Chunking {
		t.Fatalf("EC with its own chunking: %v, %v", p, err)
	}
	if p, err = Parse("redundancy=rep:3/2"); err != nil || p.Chunking != Default().Chunking {
		t.Fatalf("replicated: %v, %v", p, err)
	}
	if p, err = Parse("compress=zstd,chunk=fixed:64KiB"); err != nil || p.Compression.Level != 3 || p.Chunking.Size != 64<<10 {
		t.Fatalf("got %v, %v", p, err)
	}
	if p, err = Parse(""); err != nil || p != Default() {
		t.Fatalf("empty policy: %v, %v", p, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{
		"chunk=fixed:1k",                     // too small
		"chunk=fixed:8m",                     // too large
		"chunk=cdc:64k/16k/256k",             // min > avg
		"chunk=cdc:16k/48k/256k",             // avg not a power of two
		"chunk=cdc:16k/64k",                  // missing max
		"compress=zstd:0",                    // level
		"compress=zstd:23",                   // level
		"compress=lz4",                       // unknown
		"encrypt=maybe",                      // bool
		"redundancy=rep:2/3",                 // W > R
		"redundancy=ec:0+2",                  // k
		"redundancy=ec:4+0",                  // m
		"redundancy=ec:60+10",                // too many shards
		"redundancy=ec:4",                    // syntax
		"chunk=fixed:64k,chunk=cdc:1k/2k/4k", // duplicate
		"colour=blue",                        // unknown key
		"chunk",                              // no value
		"chunk=fixed:-4k",                    // negative
	} {
		_, err := Parse(s)
		if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: got %v", s, err)
		}
	}
}

func TestTextMarshal(t *testing.T) {
	var p Policy
	if err := p.UnmarshalText([]byte("chunk=fixed:128k,encrypt=on")); err != nil {
		t.Fatal(err)
	}
	b, err := p.MarshalText()
	if err != nil || string(b) != "chunk=fixed:128k,compress=zstd:3,encrypt=on,redundancy=rep" {
		t.Fatalf("%s, %v", b, err)
	}
	if _, err := (Policy{}).MarshalText(); err == nil {
		t.Fatal("zero policy marshalled")
	}
}
