package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"shoal/shared/block"
)

// Kind is what an inode is.
type Kind uint8

// Inode kinds.
const (
	KindFile    Kind = 1
	KindDir     Kind = 2
	KindSymlink Kind = 3
)

func (k Kind) valid() bool { return k >= KindFile && k <= KindSymlink }

// Limits of the encoding.
const (
	// InlineMax is the largest file kept inside its inode; larger files
	// live in the dedup tier and the inode holds their reference.
	InlineMax = 4 << 10
	// MaxNameLen is the longest entry name (bytes), as on Linux.
	MaxNameLen = 255
	// MaxInodeBytes bounds an encoded inode. A directory whose entries
	// would exceed it refuses new ones with ENOSPC (v1: directories are
	// one block; sharded directories are future work). At ~40 bytes of
	// overhead per entry that is about 10,000 entries of 12-byte names.
	MaxInodeBytes = 512 << 10
	maxRefLen     = 4 << 10
	maxTargetLen  = 4 << 10
)

// flagRemoved marks a directory being removed (rmdir fenced it empty);
// creating in it fails with ENOENT.
const flagRemoved = 1

// Entry is one name in a directory.
type Entry struct {
	Addr block.Address
	Kind Kind
}

// Inode is the payload of an inode's mutable block.
type Inode struct {
	Kind  Kind
	Flags uint8
	Mode  uint32 // permission bits (07777)
	UID   uint32
	GID   uint32
	Nlink uint32
	Size  int64
	// Times in nanoseconds since the Unix epoch.
	Atime, Mtime, Ctime int64
	// A file's data: inline (Size ≤ InlineMax) or a dedup reference.
	Data []byte
	Ref  []byte
	// A symlink's target.
	Target string
	// A directory's entries.
	Entries map[string]Entry
}

// clone returns a deep copy, safe to change.
func (i *Inode) clone() *Inode {
	c := *i
	c.Data = slices.Clone(i.Data)
	c.Ref = slices.Clone(i.Ref)
	if i.Entries != nil {
		c.Entries = maps.Clone(i.Entries)
	}
	return &c
}

// ErrCorrupt means an inode payload failed to decode.
var ErrCorrupt = errors.New("fs: corrupt inode")

const encodingVersion = 1

// checkName refuses names no directory may hold.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w: bad name %q", ErrCorrupt, name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name of %d bytes", ErrCorrupt, len(name))
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q holds / or NUL", ErrCorrupt, name)
	}
	return nil
}

func (i *Inode) validate() error {
	if !i.Kind.valid() {
		return fmt.Errorf("%w: kind %d", ErrCorrupt, i.Kind)
	}
	if i.Mode&^07777 != 0 || i.Size < 0 {
		return fmt.Errorf("%w: mode %o size %d", ErrCorrupt, i.Mode, i.Size)
	}
	if i.Kind != KindFile && (len(i.Data) > 0 || len(i.Ref) > 0) {
		return fmt.Errorf("%w: data on a non-file", ErrCorrupt)
	}
	if i.Kind != KindSymlink && i.Target != "" {
		return fmt.Errorf("%w: target on a non-symlink", ErrCorrupt)
	}
	if i.Kind != KindDir && len(i.Entries) > 0 {
		return fmt.Errorf("%w: entries on a non-directory", ErrCorrupt)
	}
	switch i.Kind {
	case KindFile:
		if len(i.Data) > 0 && len(i.Ref) > 0 {
			return fmt.Errorf("%w: both inline data and a reference", ErrCorrupt)
		}
		if len(i.Ref) == 0 && int64(len(i.Data)) != i.Size {
			return fmt.Errorf("%w: inline data of %d bytes, size %d", ErrCorrupt, len(i.Data), i.Size)
		}
		if len(i.Data) > InlineMax || len(i.Ref) > maxRefLen {
			return fmt.Errorf("%w: data or reference too large", ErrCorrupt)
		}
	case KindSymlink:
		if i.Target == "" || len(i.Target) > maxTargetLen || strings.IndexByte(i.Target, 0) >= 0 {
			return fmt.Errorf("%w: symlink target", ErrCorrupt)
		}
	case KindDir:
		for name, e := range i.Entries {
			if err := checkName(name); err != nil {
				return err
			}
			if !e.Kind.valid() {
				return fmt.Errorf("%w: entry %q of kind %d", ErrCorrupt, name, e.Kind)
			}
		}
	}
	return nil
}

// Encode returns the inode's compact binary form: a version byte, kind,
// flags, varint attributes, then the kind's body (file: inline data and
// reference; symlink: target; directory: entries sorted by name, each
// name, 32-byte address and kind).
func (i *Inode) Encode() ([]byte, error) {
	if err := i.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 64+len(i.Data)+len(i.Ref)+len(i.Target)+len(i.Entries)*48)
	b = append(b, encodingVersion, byte(i.Kind), i.Flags)
	for _, v := range []uint32{i.Mode, i.UID, i.GID, i.Nlink} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	for _, v := range []int64{i.Size, i.Atime, i.Mtime, i.Ctime} {
		b = binary.AppendVarint(b, v)
	}
	putBytes := func(p []byte) {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	switch i.Kind {
	case KindFile:
		putBytes(i.Data)
		putBytes(i.Ref)
	case KindSymlink:
		putBytes([]byte(i.Target))
	case KindDir:
		b = binary.AppendUvarint(b, uint64(len(i.Entries)))
		for _, name := range slices.Sorted(maps.Keys(i.Entries)) {
			e := i.Entries[name]
			putBytes([]byte(name))
			b = append(b, e.Addr[:]...)
			b = append(b, byte(e.Kind))
		}
	}
	if len(b) > MaxInodeBytes {
		return nil, errTooLarge
	}
	return b, nil
}

var errTooLarge = errors.New("fs: inode over its size limit")

// decoder reads the encoding with bounds checks; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or malformed %s", ErrCorrupt, what)
	}
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u32(what string) uint32 {
	v := d.uvarint(what)
	if v > 1<<32-1 {
		d.fail(what)
		return 0
	}
	return uint32(v)
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(what string, max int) []byte {
	n := d.uvarint(what)
	if d.err != nil || n > uint64(max) || n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// DecodeInode parses an encoded inode, refusing anything malformed.
func DecodeInode(b []byte) (*Inode, error) {
	if len(b) > MaxInodeBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(b))
	}
	d := &decoder{b: b}
	if v := d.byte1("version"); d.err == nil && v != encodingVersion {
		return nil, fmt.Errorf("%w: encoding version %d", ErrCorrupt, v)
	}
	i := &Inode{Kind: Kind(d.byte1("kind")), Flags: d.byte1("flags")}
	i.Mode, i.UID, i.GID, i.Nlink = d.u32("mode"), d.u32("uid"), d.u32("gid"), d.u32("nlink")
	i.Size, i.Atime, i.Mtime, i.Ctime = d.varint("size"), d.varint("atime"), d.varint("mtime"), d.varint("ctime")
	switch i.Kind {
	case KindFile:
		if p := d.bytes("data", InlineMax); len(p) > 0 {
			i.Data = slices.Clone(p)
		}
		if p := d.bytes("ref", maxRefLen); len(p) > 0 {
			i.Ref = slices.Clone(p)
		}
	case KindSymlink:
		i.Target = string(d.bytes("target", maxTargetLen))
	case KindDir:
		n := d.uvarint("entry count")
		// Each entry takes at least 34 bytes: refuse counts the payload
		// cannot hold before allocating for them.
		if d.err == nil && n > uint64(len(d.b))/34 {
			d.fail("entry count")
		}
		if d.err != nil {
			break
		}
		i.Entries = make(map[string]Entry, n)
		for range n {
			name := string(d.bytes("entry name", MaxNameLen))
			if d.err != nil || len(d.b) < block.AddressSize+1 {
				d.fail("entry")
				break
			}
			var e Entry
			copy(e.Addr[:], d.b)
			e.Kind = Kind(d.b[block.AddressSize])
			d.b = d.b[block.AddressSize+1:]
			if _, dup := i.Entries[name]; dup {
				return nil, fmt.Errorf("%w: duplicate entry %q", ErrCorrupt, name)
			}
			i.Entries[name] = e
		}
	default:
		d.fail("kind")
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	if err := i.validate(); err != nil {
		return nil, err
	}
	return i, nil
}
