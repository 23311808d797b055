package s3

import (
	"context"
	"errors"
	"io"
)

// Sentinels the storage implementations wrap, so the frontend can tell
// "absent" and "already there" apart from failures without matching text.
var (
	ErrNotFound = errors.New("s3: not found")
	ErrExists   = errors.New("s3: already exists")
)

// DataStore holds object bytes (the dedup tier). Each Write produces an
// opaque reference; the frontend only keeps references in metadata.
type DataStore interface {
	// Write consumes r fully and returns a reference to the stored data and
	// its size. If r returns an error, Write must fail with an error that
	// wraps it and the reference must not be returned: that is how payload
	// verification (signatures, digests) stops bad data being committed.
	// volume is the bucket (the unit of encryption keys: a store that needs
	// it to read must keep it in the reference); policy is the bucket's
	// storage policy name ("" = default).
	Write(ctx context.Context, volume, policy string, r io.Reader) (ref []byte, size int64, err error)
	// Read streams [off, off+n) of the data behind ref; n < 0 reads to the end.
	Read(ctx context.Context, ref []byte, off, n int64) (io.ReadCloser, error)
	// Release says one use of ref by an object has ended. Space reclamation
	// happens elsewhere; the call may be a no-op. A reference may be used
	// by several objects (copies), so Release must not free shared data.
	Release(ctx context.Context, ref []byte) error
}

// Retainer is implemented by data stores that count uses of a reference.
// When present, the frontend calls Retain each time an existing reference
// gains a new use (CopyObject, UploadPartCopy), pairing with Release.
type Retainer interface {
	Retain(ctx context.Context, ref []byte) error
}

// MetaStore holds mutable, linearizable blocks of at most ~1 MiB each.
type MetaStore interface {
	// ResolveName returns the address of a named root, or an error wrapping
	// ErrNotFound.
	ResolveName(ctx context.Context, name string) (addr [32]byte, err error)
	// CreateNamed creates a named root; fails with an error wrapping
	// ErrExists when present.
	CreateNamed(ctx context.Context, name string, initial []byte) (addr [32]byte, err error)
	// DeleteName removes a named root.
	DeleteName(ctx context.Context, name string) error
	// CreateMutable creates an anonymous mutable block.
	CreateMutable(ctx context.Context, initial []byte) (addr [32]byte, err error)
	// Get returns the current value and version (ErrNotFound when absent).
	Get(ctx context.Context, addr [32]byte) (data []byte, version uint64, err error)
	// Update runs fn on the current value and writes its result as the next
	// version; on conflict it re-reads and calls fn again. An error from fn
	// aborts and is returned (wrapped or as is).
	Update(ctx context.Context, addr [32]byte, fn func(cur []byte) ([]byte, error)) (version uint64, err error)
	// Delete removes a block.
	Delete(ctx context.Context, addr [32]byte) error
}
