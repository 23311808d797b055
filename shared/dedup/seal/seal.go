// Package seal turns a plaintext chunk into the bytes that are stored and
// back: zstd compression (skipped when it does not pay) and convergent
// AES-256-GCM encryption under a volume key. It knows nothing of addresses,
// manifests or the network.
//
// Convergence: a chunk's key and nonce are HMAC-SHA256(volumeKey, label ||
// SHA-256(plaintext)). Equal plaintexts in one volume seal to equal bytes, so
// they dedupe; under another volume key they share nothing. Reusing a
// (key, nonce) pair is safe here because each key only ever encrypts the one
// plaintext it was derived from. The price, as with any convergent scheme, is
// that someone holding the volume key can confirm whether a guessed chunk is
// stored in that volume.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	sha256 "github.com/minio/sha256-simd"

	"shoal/shared/block"
	"shoal/shared/cpus"
	"shoal/shared/dedup/policy"
)

var (
	// ErrKey means the volume key is missing or has the wrong size.
	ErrKey = errors.New("seal: volume key must be 32 bytes")
	// ErrAuth means a chunk failed GCM authentication: wrong key or tampering.
	ErrAuth = errors.New("seal: authentication failed")
	// ErrCorrupt means a chunk did not decode to its recorded length.
	ErrCorrupt = errors.New("seal: corrupt chunk")
)

// KeySize is the size of a volume key.
const KeySize = 32

// Overhead is the most sealing adds to a chunk (the GCM tag); compression
// is skipped whenever it would not shrink the chunk.
const Overhead = 16

// maxDecoded bounds what one chunk may decompress to, so a forged chunk
// cannot make us allocate more than a real one.
const maxDecoded = policy.MaxChunkSize

var (
	labelKey   = []byte("shoal/dedup/v1 chunk key\x00")
	labelNonce = []byte("shoal/dedup/v1 chunk nonce\x00")
	aad        = []byte("shoal/dedup/v1")
)

// Sealer seals and opens chunks for one volume and compression setting. It
// is safe for concurrent use.
type Sealer struct {
	comp policy.Compression
	key  []byte
	enc  *zstd.Encoder
}

// New returns a Sealer. volumeKey is nil for an unencrypted volume.
func New(comp policy.Compression, volumeKey []byte) (*Sealer, error) {
	if volumeKey != nil && len(volumeKey) != KeySize {
		return nil, ErrKey
	}
	s := &Sealer{comp: comp, key: volumeKey}
	if comp.Algo == policy.Zstd {
		var err error
		if s.enc, err = encoder(comp.Level); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Encrypted reports whether the Sealer encrypts.
func (s *Sealer) Encrypted() bool { return s.key != nil }

// Seal returns the stored form of plain, reusing dst's storage when it is
// large enough. seed is SHA-256(plain) when encrypting (the reader needs it
// to derive the key) and zero otherwise. When neither compression nor
// encryption applies, the result is plain itself.
func (s *Sealer) Seal(dst, plain []byte) (stored []byte, seed block.Address, compressed bool, err error) {
	var sum block.Address
	if s.key != nil {
		sum = block.Sum(plain)
	}
	return s.SealSum(dst, plain, sum)
}

// SealSum is Seal for a caller that already has sum = SHA-256(plain) (it is
// only used when encrypting).
func (s *Sealer) SealSum(dst, plain []byte, sum block.Address) (stored []byte, seed block.Address, compressed bool, err error) {
	body := plain
	if s.enc != nil && len(plain) >= 64 && s.mayPay(dst, plain) {
		out := s.enc.EncodeAll(plain, dst[:0])
		if pays(len(plain), len(out)) {
			body, compressed = out, true
			dst = out
		}
	}
	if s.key == nil {
		return body, seed, compressed, nil
	}
	seed = sum
	aead, nonce, err := s.aead(seed)
	if err != nil {
		return nil, seed, false, err
	}
	if compressed {
		// Seal in place over the compressed bytes.
		return aead.Seal(body[:0], nonce, body, aad), seed, true, nil
	}
	if cap(dst) < len(plain)+Overhead {
		dst = make([]byte, 0, len(plain)+Overhead)
	}
	return aead.Seal(dst[:0], nonce, plain, aad), seed, false, nil
}

// Compressing a chunk only to find that it does not pay (media, archives,
// encrypted or random data) cost 10% of the cluster's CPU on an
// erasure-coded put of such data: zstd searches every block for matches,
// then copies it out raw. A large chunk is therefore compressed only if its
// first probeBytes compress (as ZFS aborts early); a chunk whose head is
// incompressible and whose rest is not is stored as it is. A chunk that is
// compressed is compressed whole, exactly as before, so its stored bytes,
// and its address, do not change.
const (
	probeBytes = 32 << 10
	minProbed  = 4 * probeBytes
)

// pays reports whether compressing in bytes to out bytes is worth keeping.
func pays(in, out int) bool { return out <= in-in/16 }

// mayPay reports whether plain's compression may pay: false only for a
// large chunk whose head does not compress. dst is scratch space.
func (s *Sealer) mayPay(dst, plain []byte) bool {
	if len(plain) < minProbed {
		return true
	}
	return pays(probeBytes, len(s.enc.EncodeAll(plain[:probeBytes], dst[:0])))
}

// Open reverses Seal. stored must already be verified against its address;
// Open checks authenticity and that the result is exactly logical bytes.
func (s *Sealer) Open(dst, stored []byte, seed block.Address, compressed bool, logical int) ([]byte, error) {
	if logical < 0 || logical > maxDecoded {
		return nil, fmt.Errorf("%w: length %d", ErrCorrupt, logical)
	}
	body := stored
	if s.key != nil {
		aead, nonce, err := s.aead(seed)
		if err != nil {
			return nil, err
		}
		var buf []byte
		if !compressed {
			buf = dst[:0]
		}
		body, err = aead.Open(buf, nonce, stored, aad)
		if err != nil {
			return nil, ErrAuth
		}
	}
	if !compressed {
		if len(body) != logical {
			return nil, fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, len(body), logical)
		}
		return body, nil
	}
	if cap(dst) < logical {
		dst = make([]byte, 0, logical)
	}
	dec, err := decoder()
	if err != nil {
		return nil, err
	}
	out, err := dec.DecodeAll(body, dst[:0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(out) != logical {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, len(out), logical)
	}
	return out, nil
}

func (s *Sealer) aead(seed block.Address) (cipher.AEAD, []byte, error) {
	mac := hmac.New(sha256.New, s.key)
	mac.Write(labelKey)
	mac.Write(seed[:])
	key := mac.Sum(nil)
	mac.Reset()
	mac.Write(labelNonce)
	mac.Write(seed[:])
	nonce := mac.Sum(nil)[:12]
	c, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	aead, err := cipher.NewGCM(c)
	if err != nil {
		return nil, nil, err
	}
	return aead, nonce, nil
}

// Encoders are shared per level: EncodeAll is safe for concurrent use and an
// encoder carries sizeable tables.
var (
	encMu    sync.Mutex
	encoders = map[int]*zstd.Encoder{}
	decOnce  sync.Once
	dec      *zstd.Decoder
	decErr   error
)

func encoder(level int) (*zstd.Encoder, error) {
	encMu.Lock()
	defer encMu.Unlock()
	if e := encoders[level]; e != nil {
		return e, nil
	}
	e, err := zstd.NewWriter(nil,
		// A chunk is one frame and at most 4 MiB. Setting the window
		// first keeps the level from choosing the block size: level 1
		// would take 64 KiB blocks, and a chunk above that went through
		// the encoder's slower multi-block path (3% of one core on text).
		zstd.WithWindowSize(4<<20),
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderConcurrency(cpus.N()),
		zstd.WithEncoderCRC(false), // the block address already covers the bytes
	)
	if err != nil {
		return nil, err
	}
	encoders[level] = e
	return e, nil
}

func decoder() (*zstd.Decoder, error) {
	decOnce.Do(func() {
		dec, decErr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(cpus.N()),
			zstd.WithDecoderMaxMemory(maxDecoded),
		)
	})
	return dec, decErr
}
