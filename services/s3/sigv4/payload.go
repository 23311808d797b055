package sigv4

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
)

const (
	maxLineLen      = 4096
	maxTrailerLines = 16
	// maxChunkSize bounds one aws-chunked chunk. Data is streamed, not held,
	// so this only rejects absurd sizes that would overflow counters.
	maxChunkSize = 5 << 40
)

// Payload is a request body decoded and verified according to the payload
// mode the client signed. Read returns an error instead of io.EOF when the
// body fails verification.
type Payload struct {
	r        io.Reader
	declared []string
	trailers map[string]string
}

// Read implements io.Reader.
func (p *Payload) Read(b []byte) (int, error) { return p.r.Read(b) }

// DeclaredTrailers lists the trailer names the client announced in
// x-amz-trailer (lowercase).
func (p *Payload) DeclaredTrailers() []string { return p.declared }

// Trailer returns a trailer value; only meaningful after Read returned io.EOF.
func (p *Payload) Trailer(name string) (string, bool) {
	v, ok := p.trailers[strings.ToLower(name)]
	return v, ok
}

// Body wraps r.Body according to the payload mode. a may be nil for
// anonymous requests, in which case only unsigned aws-chunked trailers are
// decoded.
func Body(a *Auth, r *http.Request) (*Payload, error) {
	mode := r.Header.Get("X-Amz-Content-Sha256")
	if a != nil {
		mode = a.ContentSHA256
	}
	p := &Payload{r: r.Body, trailers: map[string]string{}}
	if t := r.Header.Get("X-Amz-Trailer"); t != "" {
		for _, n := range strings.Split(t, ",") {
			if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
				p.declared = append(p.declared, n)
			}
		}
	}
	declaredLen := int64(-1)
	if v := r.Header.Get("X-Amz-Decoded-Content-Length"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: x-amz-decoded-content-length %q", ErrChunkFormat, v)
		}
		declaredLen = n
	}
	switch mode {
	case StreamingSigned, StreamingSignedTrailer:
		if a == nil {
			return nil, ErrNotSigned
		}
		p.r = &chunkReader{br: bufio.NewReaderSize(r.Body, 64<<10), auth: a, signed: true,
			trailer: mode == StreamingSignedTrailer, prevSig: a.seedSig, h: sha256.New(),
			declared: declaredLen, payload: p}
	case StreamingUnsignedTrailer:
		p.r = &chunkReader{br: bufio.NewReaderSize(r.Body, 64<<10), trailer: true,
			declared: declaredLen, payload: p}
	case "", UnsignedPayload:
	default:
		if a == nil { // anonymous: the digest is not covered by a signature, skip it
			return p, nil
		}
		want, err := hex.DecodeString(mode)
		if err != nil || len(want) != sha256.Size {
			return nil, ErrInvalidContentSHA256
		}
		p.r = &digestReader{r: r.Body, h: sha256.New(), want: want}
	}
	return p, nil
}

// digestReader checks the SHA-256 of the whole body at EOF.
type digestReader struct {
	r    io.Reader
	h    hash.Hash
	want []byte
}

func (d *digestReader) Read(b []byte) (int, error) {
	n, err := d.r.Read(b)
	d.h.Write(b[:n])
	if errors.Is(err, io.EOF) && !hmac.Equal(d.h.Sum(nil), d.want) {
		return n, ErrContentSHA256
	}
	return n, err
}

// chunkReader decodes aws-chunked bodies:
//
//	<hex-size>[;chunk-signature=<sig>]\r\n<data>\r\n ... 0[;chunk-signature=<sig>]\r\n
//	[<trailer-name>:<value>\r\n ...][x-amz-trailer-signature:<sig>\r\n]\r\n
//
// Chunk data is passed through as it arrives and its signature is checked when
// the chunk ends, so memory stays bounded by the bufio buffer.
type chunkReader struct {
	br       *bufio.Reader
	auth     *Auth
	signed   bool
	trailer  bool
	prevSig  string
	chunkSig string
	h        hash.Hash
	inChunk  bool
	left     int64
	decoded  int64
	declared int64
	payload  *Payload
	err      error
}

func (c *chunkReader) Read(b []byte) (int, error) {
	for c.err == nil {
		if c.inChunk && c.left > 0 {
			if int64(len(b)) > c.left {
				b = b[:c.left]
			}
			n, err := c.br.Read(b)
			if c.h != nil {
				c.h.Write(b[:n])
			}
			c.left -= int64(n)
			c.decoded += int64(n)
			if err != nil && (!errors.Is(err, io.EOF) || c.left != 0) {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				c.err = err
			}
			if n > 0 || c.err != nil {
				return n, c.err
			}
			continue
		}
		if c.inChunk {
			c.err = c.endChunk()
			continue
		}
		c.err = c.startChunk()
	}
	return 0, c.err
}

func (c *chunkReader) readLine() (string, error) {
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxLineLen {
		return "", fmt.Errorf("%w: line too long", ErrChunkFormat)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return "", io.EOF
			}
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	return s, nil
}

func (c *chunkReader) startChunk() error {
	line, err := c.readLine()
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	sizeStr, ext, _ := strings.Cut(line, ";")
	size, err := strconv.ParseInt(strings.TrimSpace(sizeStr), 16, 64)
	if err != nil || size < 0 || size > maxChunkSize {
		return fmt.Errorf("%w: chunk size %q", ErrChunkFormat, sizeStr)
	}
	c.chunkSig = ""
	if c.signed {
		sig, ok := strings.CutPrefix(strings.TrimSpace(ext), "chunk-signature=")
		if !ok || sig == "" {
			return fmt.Errorf("%w: missing chunk-signature", ErrChunkFormat)
		}
		c.chunkSig = sig
	}
	if c.h != nil {
		c.h.Reset()
	}
	if size == 0 {
		if err := c.checkChunkSig(); err != nil {
			return err
		}
		return c.finish()
	}
	c.inChunk, c.left = true, size
	return nil
}

func (c *chunkReader) endChunk() error {
	c.inChunk = false
	line, err := c.readLine()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if line != "" {
		return fmt.Errorf("%w: chunk data longer than its size", ErrChunkFormat)
	}
	return c.checkChunkSig()
}

func (c *chunkReader) checkChunkSig() error {
	if !c.signed {
		return nil
	}
	a := c.auth
	sts := streamingPayloadStringPrefix + "\n" + a.amzDate + "\n" + a.scope + "\n" +
		c.prevSig + "\n" + emptySHA256 + "\n" + hex.EncodeToString(c.h.Sum(nil))
	want := sign(a.signingKey, sts)
	if !hmac.Equal([]byte(want), []byte(c.chunkSig)) {
		return ErrChunkSignature
	}
	c.prevSig = c.chunkSig
	return nil
}

// finish reads what follows the final chunk and returns io.EOF when the body
// is complete and verified.
func (c *chunkReader) finish() error {
	if c.trailer {
		if err := c.readTrailers(); err != nil {
			return err
		}
	} else {
		line, err := c.readLine()
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if line != "" {
			return fmt.Errorf("%w: data after final chunk", ErrChunkFormat)
		}
	}
	if c.declared >= 0 && c.decoded != c.declared {
		return ErrDecodedLength
	}
	return io.EOF
}

func (c *chunkReader) readTrailers() error {
	var text strings.Builder
	for i := 0; i < maxTrailerLines; i++ {
		line, err := c.readLine()
		if errors.Is(err, io.EOF) {
			if c.signed {
				return fmt.Errorf("%w: missing x-amz-trailer-signature", ErrTrailer)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if line == "" {
			if !c.signed {
				return nil
			}
			continue // minio-go puts a blank line before the signature
		}
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("%w: %q", ErrTrailer, line)
		}
		name, val = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(val)
		if name == "x-amz-trailer-signature" {
			if !c.signed {
				return fmt.Errorf("%w: signature in unsigned trailer", ErrTrailer)
			}
			sum := sha256.Sum256([]byte(text.String()))
			a := c.auth
			sts := streamingTrailerStringPrefix + "\n" + a.amzDate + "\n" + a.scope + "\n" +
				c.prevSig + "\n" + hex.EncodeToString(sum[:])
			if !hmac.Equal([]byte(sign(a.signingKey, sts)), []byte(val)) {
				return ErrChunkSignature
			}
			// The body ends with a blank line; tolerate its absence.
			if rest, err := c.readLine(); err == nil && rest != "" {
				return fmt.Errorf("%w: data after trailer signature", ErrTrailer)
			}
			return nil
		}
		if !contains(c.payload.declared, name) {
			return fmt.Errorf("%w: %q not declared in x-amz-trailer", ErrTrailer, name)
		}
		c.payload.trailers[name] = val
		text.WriteString(name + ":" + val + "\n")
	}
	return fmt.Errorf("%w: too many trailer lines", ErrTrailer)
}
