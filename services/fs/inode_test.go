package fs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"shoal/shared/block"
)

func addr(b byte) block.Address {
	var a block.Address
	for i := range a {
		a[i] = b + byte(i)
	}
	return a
}

func sampleInodes() map[string]*Inode {
	entries := map[string]Entry{}
	for i := range 300 {
		entries[fmt.Sprintf("name-%03d", i)] = Entry{Addr: addr(byte(i)), Kind: Kind(i%3 + 1)}
	}
	entries[strings.Repeat("x", MaxNameLen)] = Entry{Addr: addr(7), Kind: KindFile}
	inline := make([]byte, InlineMax)
	_, _ = rand.Read(inline)
	return map[string]*Inode{
		"empty file": {Kind: KindFile, Mode: 0o644, Nlink: 1},
		"inline file": {Kind: KindFile, Mode: 0o600, UID: 1000, GID: 100, Nlink: 1, Size: InlineMax, Data: inline,
			Atime: -1, Mtime: math.MaxInt64, Ctime: math.MinInt64},
		"ref file":  {Kind: KindFile, Mode: 0o7777, UID: math.MaxUint32, GID: 0, Nlink: 1, Size: 1 << 40, Ref: bytes.Repeat([]byte{9}, 160)},
		"symlink":   {Kind: KindSymlink, Mode: 0o777, Nlink: 1, Size: 7, Target: "../a/b c"},
		"empty dir": {Kind: KindDir, Mode: 0o755, Nlink: 2, Entries: map[string]Entry{}},
		"dir":       {Kind: KindDir, Flags: flagRemoved, Mode: 0o1777, Nlink: 2, Mtime: 1234567890123456789, Entries: entries},
	}
}

func TestInodeRoundTrip(t *testing.T) {
	for name, in := range sampleInodes() {
		t.Run(name, func(t *testing.T) {
			b, err := in.Encode()
			if err != nil {
				t.Fatal(err)
			}
			out, err := DecodeInode(b)
			if err != nil {
				t.Fatal(err)
			}
			if in.Kind == KindDir && len(in.Entries) == 0 {
				in.Entries = map[string]Entry{} // decoded as empty, not nil
			}
			if !reflect.DeepEqual(in, out) {
				t.Fatalf("round trip:\n in %+v\nout %+v", in, out)
			}
			again, _ := out.Encode()
			if !bytes.Equal(b, again) {
				t.Fatal("encoding is not deterministic")
			}
		})
	}
}

func TestInodeCompact(t *testing.T) {
	b, _ := sampleInodes()["empty file"].Encode()
	if len(b) > 24 {
		t.Fatalf("an empty file's inode takes %d bytes", len(b))
	}
	d := &Inode{Kind: KindDir, Entries: map[string]Entry{}}
	for i := range 1000 {
		d.Entries[fmt.Sprintf("file-%04d.go", i)] = Entry{Addr: addr(1), Kind: KindFile}
	}
	b, _ = d.Encode()
	if per := len(b) / 1000; per > 12+1+block.AddressSize+1+1 {
		t.Fatalf("%d bytes per directory entry", per)
	}
}

func TestInodeRefusesInvalid(t *testing.T) {
	bad := map[string]*Inode{
		"no kind":           {},
		"mode bits":         {Kind: KindFile, Mode: 0o10000},
		"negative size":     {Kind: KindFile, Size: -1},
		"inline and ref":    {Kind: KindFile, Size: 1, Data: []byte{1}, Ref: []byte{2}},
		"inline size":       {Kind: KindFile, Size: 2, Data: []byte{1}},
		"inline too large":  {Kind: KindFile, Size: InlineMax + 1, Data: make([]byte, InlineMax+1)},
		"data on a dir":     {Kind: KindDir, Data: []byte{1}},
		"entries on a file": {Kind: KindFile, Entries: map[string]Entry{"a": {Kind: KindFile}}},
		"empty target":      {Kind: KindSymlink},
		"target with NUL":   {Kind: KindSymlink, Target: "a\x00b"},
		"slash in a name":   {Kind: KindDir, Entries: map[string]Entry{"a/b": {Kind: KindFile}}},
		"dot name":          {Kind: KindDir, Entries: map[string]Entry{"..": {Kind: KindDir}}},
		"long name":         {Kind: KindDir, Entries: map[string]Entry{strings.Repeat("n", 256): {Kind: KindFile}}},
		"entry kind":        {Kind: KindDir, Entries: map[string]Entry{"a": {Kind: 9}}},
	}
	for name, in := range bad {
		if _, err := in.Encode(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: encoded (%v)", name, err)
		}
	}
	huge := &Inode{Kind: KindDir, Entries: map[string]Entry{}}
	for i := 0; i < MaxInodeBytes/100+1000; i++ {
		huge.Entries[fmt.Sprintf("%060d", i)] = Entry{Addr: addr(0), Kind: KindFile}
	}
	if _, err := huge.Encode(); !errors.Is(err, errTooLarge) {
		t.Errorf("an oversize directory encoded: %v", err)
	}
}

// TestDecodeHostile: truncations, bit flips, random bytes and crafted
// lengths are refused with an error, never a panic or a huge allocation.
func TestDecodeHostile(t *testing.T) {
	var valid [][]byte
	for _, in := range sampleInodes() {
		b, _ := in.Encode()
		valid = append(valid, b)
	}
	for _, b := range valid {
		for n := range len(b) {
			if _, err := DecodeInode(b[:n]); err == nil {
				t.Fatalf("a %d-byte prefix of a %d-byte inode decoded", n, len(b))
			}
		}
		if _, err := DecodeInode(append(bytes.Clone(b), 0)); err == nil {
			t.Fatal("trailing byte accepted")
		}
		for i := 0; i < len(b) && i < 2000; i++ {
			c := bytes.Clone(b)
			c[i] ^= 0xff
			_, _ = DecodeInode(c) // may decode (a flipped mode bit is valid); must not panic
		}
	}
	for range 2000 {
		n := make([]byte, 1)
		_, _ = rand.Read(n)
		junk := make([]byte, int(n[0]))
		_, _ = rand.Read(junk)
		_, _ = DecodeInode(junk)
		if len(junk) > 0 {
			junk[0] = encodingVersion
			_, _ = DecodeInode(junk)
		}
	}
	crafted := map[string][]byte{
		"empty":           nil,
		"version":         {9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"kind":            {1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"huge count":      {1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
		"huge data len":   {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3},
		"varint overflow": {1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"uid over 32 bit": {1, 1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0, 0, 0, 0, 0, 0},
		"oversize":        make([]byte, MaxInodeBytes+1),
	}
	for name, b := range crafted {
		if _, err := DecodeInode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	// A duplicate name, spliced by hand.
	d := &Inode{Kind: KindDir, Entries: map[string]Entry{"a": {Addr: addr(1), Kind: KindFile}, "b": {Addr: addr(2), Kind: KindFile}}}
	b, _ := d.Encode()
	dup := bytes.Replace(b, []byte{1, 'b'}, []byte{1, 'a'}, 1)
	if _, err := DecodeInode(dup); !errors.Is(err, ErrCorrupt) {
		t.Errorf("duplicate entry: %v", err)
	}
}

func FuzzDecodeInode(f *testing.F) {
	for _, in := range sampleInodes() {
		b, _ := in.Encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := DecodeInode(b)
		if err != nil {
			return
		}
		again, err := in.Encode()
		if err != nil {
			t.Fatalf("decoded but does not encode: %v", err)
		}
		if _, err := DecodeInode(again); err != nil {
			t.Fatalf("re-encoded inode does not decode: %v", err)
		}
	})
}

func TestSpool(t *testing.T) {
	s := &spool{dir: t.TempDir()}
	defer s.Close()
	want := []byte{}
	write := func(p []byte, off int) {
		t.Helper()
		if _, err := s.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
		if end := off + len(p); end > len(want) {
			want = append(want, make([]byte, end-len(want))...)
		}
		copy(want[off:], p)
	}
	check := func() {
		t.Helper()
		got := make([]byte, s.size)
		if n, err := s.ReadAt(got, 0); n != len(want) || (err != nil && n < len(got)) || !bytes.Equal(got, want) {
			t.Fatalf("spool of %d bytes differs (n %d, err %v)", len(want), n, err)
		}
	}
	write([]byte("hello"), 0)
	write([]byte("world"), 10) // a hole of zeros
	check()
	if err := s.Truncate(3); err != nil {
		t.Fatal(err)
	}
	want = want[:3]
	check()
	if err := s.Truncate(8); err != nil { // grows with zeros, not old bytes
		t.Fatal(err)
	}
	want = append(want, 0, 0, 0, 0, 0)
	check()
	big := make([]byte, spoolMemMax)
	_, _ = rand.Read(big)
	write(big, 100) // moves to a file
	if s.f == nil {
		t.Fatal("a large spool stayed in memory")
	}
	check()
	if err := s.Truncate(50); err != nil {
		t.Fatal(err)
	}
	want = want[:50]
	check()
}
