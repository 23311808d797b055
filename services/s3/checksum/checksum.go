// Package checksum names the S3 additional checksum algorithms
// (x-amz-checksum-*) and builds their hashes. Values travel base64-encoded,
// big-endian for the CRCs, as AWS sends them.
package checksum

import (
	"crypto/sha1" //nolint:gosec // SHA-1 is an S3 checksum algorithm, not used for security.
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"hash/crc32"
	"strings"

	"github.com/minio/crc64nvme"
)

// Algorithm is one S3 checksum algorithm; None is the zero value.
type Algorithm int

// The supported algorithms.
const (
	None Algorithm = iota
	CRC32
	CRC32C
	SHA1
	SHA256
	CRC64NVME
)

// All lists the supported algorithms.
var All = []Algorithm{CRC32, CRC32C, SHA1, SHA256, CRC64NVME}

var names = [...]string{"", "CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Parse maps an algorithm name such as "crc32c" (any case) to an Algorithm.
func Parse(name string) (Algorithm, bool) {
	up := strings.ToUpper(strings.TrimSpace(name))
	for i, n := range names {
		if i > 0 && n == up {
			return Algorithm(i), true
		}
	}
	return None, false
}

// FromHeader maps a header name such as "x-amz-checksum-sha256" to its
// algorithm.
func FromHeader(h string) (Algorithm, bool) {
	rest, ok := strings.CutPrefix(strings.ToLower(h), "x-amz-checksum-")
	if !ok {
		return None, false
	}
	return Parse(rest)
}

// Name is the AWS spelling, e.g. "CRC32C".
func (a Algorithm) Name() string {
	if a < 0 || int(a) >= len(names) {
		return ""
	}
	return names[a]
}

// Header is the lowercase header carrying the value.
func (a Algorithm) Header() string { return "x-amz-checksum-" + strings.ToLower(a.Name()) }

// New returns a fresh hash, or nil for None.
func (a Algorithm) New() hash.Hash {
	switch a {
	case CRC32:
		return crc32.NewIEEE()
	case CRC32C:
		return crc32.New(castagnoli)
	case SHA1:
		return sha1.New() //nolint:gosec // see import
	case SHA256:
		return sha256.New()
	case CRC64NVME:
		return crc64nvme.New()
	}
	return nil
}

// Encode renders a digest as S3 sends it.
func Encode(sum []byte) string { return base64.StdEncoding.EncodeToString(sum) }

// Valid reports whether v decodes to a digest of the algorithm's size.
func (a Algorithm) Valid(v string) bool {
	b, err := base64.StdEncoding.DecodeString(v)
	h := a.New()
	return err == nil && h != nil && len(b) == h.Size()
}
