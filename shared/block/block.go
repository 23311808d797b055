// Package block defines what a Shoal block is: its 32-byte address, its kinds,
// and how a storage node validates a block before accepting it. It knows
// nothing about where blocks live; see shared/dht for that.
package block

import (
	"encoding/hex"
	"errors"
	"fmt"

	sha256 "github.com/minio/sha256-simd"
)

// AddressSize is the length of every block address.
const AddressSize = 32

// DefaultMaxSize is the largest block a user may store unless configured
// otherwise.
const DefaultMaxSize = 4 << 20

// MaxSealed is what storage nodes accept by default: a maximum-size chunk
// plus the few bytes compression framing and AES-GCM add to it.
const MaxSealed = DefaultMaxSize + 64<<10

// Address names a block. For immutable blocks it is the SHA-256 of the bytes.
type Address [AddressSize]byte

// Kind says how a block's address relates to its content.
type Kind uint8

const (
	// KindImmutable blocks are content-addressed: Address = SHA-256(data).
	KindImmutable Kind = 1
)

func (k Kind) String() string {
	switch k {
	case KindImmutable:
		return "immutable"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

var (
	// ErrNotFound means no replica holds the block.
	ErrNotFound = errors.New("block: not found")
	// ErrTooLarge means the block exceeds the maximum block size.
	ErrTooLarge = errors.New("block: too large")
	// ErrHashMismatch means the bytes do not hash to the address.
	ErrHashMismatch = errors.New("block: content does not match address")
	// ErrBadAddress means an address is malformed.
	ErrBadAddress = errors.New("block: malformed address")
	// ErrBadKind means the block kind is unknown.
	ErrBadKind = errors.New("block: unknown kind")
)

// Sum returns the content address of data.
func Sum(data []byte) Address {
	return Address(sha256.Sum256(data))
}

// String is the lowercase hex form used by the CLI.
func (a Address) String() string { return hex.EncodeToString(a[:]) }

// IsZero reports whether a is the all-zero address.
func (a Address) IsZero() bool { return a == Address{} }

// Parse reads a hex address.
func Parse(s string) (Address, error) {
	var a Address
	if len(s) != 2*AddressSize {
		return a, fmt.Errorf("%w: want %d hex characters, got %d", ErrBadAddress, 2*AddressSize, len(s))
	}
	if _, err := hex.Decode(a[:], []byte(s)); err != nil {
		return a, fmt.Errorf("%w: %v", ErrBadAddress, err)
	}
	return a, nil
}

// FromBytes converts a wire address.
func FromBytes(b []byte) (Address, error) {
	var a Address
	if len(b) != AddressSize {
		return a, fmt.Errorf("%w: want %d bytes, got %d", ErrBadAddress, AddressSize, len(b))
	}
	copy(a[:], b)
	return a, nil
}

// Validate checks a block before it is stored or after it is read. It is the
// "validation a posteriori" every storage node applies, so a faulty client
// cannot store bytes under an address they do not belong to.
func Validate(addr Address, kind Kind, data []byte, maxSize int) error {
	if maxSize > 0 && len(data) > maxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), maxSize)
	}
	switch kind {
	case KindImmutable:
		if Sum(data) != addr {
			return fmt.Errorf("%w: %s", ErrHashMismatch, addr)
		}
		return nil
	default:
		return fmt.Errorf("%w: %d", ErrBadKind, kind)
	}
}
