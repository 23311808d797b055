// Package sigv4 verifies AWS Signature Version 4 on incoming S3 requests:
// the Authorization header, presigned query strings, and the payload forms
// (signed hex digest, UNSIGNED-PAYLOAD, and aws-chunked streaming bodies with
// per-chunk signatures and/or trailer headers).
//
// It only authenticates; it knows nothing about buckets or permissions, and it
// does not sign requests (tests use the AWS SDKs for that). Payload checks are
// done while the body streams: a verifying reader returns an error instead of
// io.EOF when the body does not match, so a consumer that stops on the first
// error never commits unverified data.
package sigv4

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sentinel errors. The server maps each to an S3 error code.
var (
	ErrNotSigned            = errors.New("sigv4: request is not signed")
	ErrUnsupportedAuth      = errors.New("sigv4: unsupported authorization type")
	ErrMalformedAuth        = errors.New("sigv4: malformed authorization header")
	ErrMalformedPresign     = errors.New("sigv4: malformed presigned query")
	ErrWrongRegion          = errors.New("sigv4: credential scope has the wrong region")
	ErrInvalidAccessKey     = errors.New("sigv4: unknown access key")
	ErrSignatureMismatch    = errors.New("sigv4: signature does not match")
	ErrTimeSkewed           = errors.New("sigv4: request time too skewed")
	ErrExpired              = errors.New("sigv4: presigned request expired")
	ErrMissingDate          = errors.New("sigv4: missing or invalid x-amz-date")
	ErrMissingContentSHA256 = errors.New("sigv4: missing x-amz-content-sha256")
	ErrInvalidContentSHA256 = errors.New("sigv4: invalid x-amz-content-sha256")
	ErrContentSHA256        = errors.New("sigv4: payload does not match x-amz-content-sha256")
	ErrChunkFormat          = errors.New("sigv4: malformed aws-chunked body")
	ErrChunkSignature       = errors.New("sigv4: chunk signature does not match")
	ErrDecodedLength        = errors.New("sigv4: decoded length does not match x-amz-decoded-content-length")
	ErrTrailer              = errors.New("sigv4: malformed or undeclared trailer")
)

// Payload modes named by x-amz-content-sha256.
const (
	UnsignedPayload              = "UNSIGNED-PAYLOAD"
	StreamingSigned              = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	StreamingSignedTrailer       = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	StreamingUnsignedTrailer     = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	algorithm                    = "AWS4-HMAC-SHA256"
	amzDateFormat                = "20060102T150405Z"
	scopeDateFormat              = "20060102"
	maxPresignExpiry             = 7 * 24 * time.Hour
	emptySHA256                  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	defaultMaxSkew               = 15 * time.Minute
	streamingPayloadStringPrefix = "AWS4-HMAC-SHA256-PAYLOAD"
	streamingTrailerStringPrefix = "AWS4-HMAC-SHA256-TRAILER"
)

// KeyLookup returns the secret for an access key id, or an error wrapping
// ErrInvalidAccessKey when the key does not exist.
type KeyLookup func(ctx context.Context, accessKey string) (secret string, err error)

// Verifier checks signatures for one region and service.
type Verifier struct {
	Region  string
	Service string        // "s3" when empty
	MaxSkew time.Duration // 15 minutes when zero
	Now     func() time.Time
	Lookup  KeyLookup
	// Keys, when set, keeps derived signing keys across requests.
	Keys *KeyCache
}

// KeyCache keeps derived signing keys. A signing key depends only on the
// secret, the day, the region and the service, and deriving it takes four
// HMACs: most of a small request's signature check. The zero value is
// ready to use.
type KeyCache struct {
	mu   sync.Mutex
	keys map[keyID][]byte
}

type keyID struct{ secret, date, region, service string }

// maxCachedKeys bounds a KeyCache: past it, the cache starts over (keys
// change daily, so old ones are dropped that way too).
const maxCachedKeys = 1024

func (c *KeyCache) get(secret, date, region, service string) []byte {
	if c == nil {
		return signingKey(secret, date, region, service)
	}
	id := keyID{secret, date, region, service}
	c.mu.Lock()
	k, ok := c.keys[id]
	c.mu.Unlock()
	if ok {
		return k
	}
	k = signingKey(secret, date, region, service)
	c.mu.Lock()
	if c.keys == nil || len(c.keys) >= maxCachedKeys {
		c.keys = make(map[keyID][]byte)
	}
	c.keys[id] = k
	c.mu.Unlock()
	return k
}

// Auth is the outcome of a successful verification.
type Auth struct {
	AccessKey string
	Presigned bool
	// ContentSHA256 is the payload mode or the hex digest the client signed.
	ContentSHA256 string

	signingKey []byte
	seedSig    string
	amzDate    string
	scope      string
}

// IsStreaming reports whether the body is aws-chunked encoded.
func (a *Auth) IsStreaming() bool {
	switch a.ContentSHA256 {
	case StreamingSigned, StreamingSignedTrailer, StreamingUnsignedTrailer:
		return true
	}
	return false
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Verifier) service() string {
	if v.Service == "" {
		return "s3"
	}
	return v.Service
}

func (v *Verifier) maxSkew() time.Duration {
	if v.MaxSkew == 0 {
		return defaultMaxSkew
	}
	return v.MaxSkew
}

// IsPresigned reports whether the request carries a presigned query.
func IsPresigned(r *http.Request) bool {
	return r.URL.Query().Has("X-Amz-Signature") || r.URL.Query().Has("X-Amz-Algorithm")
}

// Verify authenticates r. It returns ErrNotSigned for anonymous requests so
// the caller can decide whether anonymous access is allowed.
func (v *Verifier) Verify(ctx context.Context, r *http.Request) (*Auth, error) {
	if IsPresigned(r) {
		return v.verifyPresigned(ctx, r)
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, ErrNotSigned
	}
	if !strings.HasPrefix(h, algorithm+" ") {
		return nil, ErrUnsupportedAuth
	}
	return v.verifyHeader(ctx, r, h)
}

type credential struct {
	accessKey, date, region, service string
}

func parseCredential(s string) (credential, bool) {
	// AKID/20130524/us-east-1/s3/aws4_request; the key id cannot contain '/'.
	parts := strings.Split(s, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" || parts[0] == "" {
		return credential{}, false
	}
	if _, err := time.Parse(scopeDateFormat, parts[1]); err != nil {
		return credential{}, false
	}
	return credential{parts[0], parts[1], parts[2], parts[3]}, true
}

func (c credential) scope() string {
	return c.date + "/" + c.region + "/" + c.service + "/aws4_request"
}

func (v *Verifier) checkScope(c credential, amzDate string) error {
	if c.region != v.Region {
		return fmt.Errorf("%w: got %q, expecting %q", ErrWrongRegion, c.region, v.Region)
	}
	if c.service != v.service() {
		return fmt.Errorf("%w: service %q", ErrMalformedAuth, c.service)
	}
	if !strings.HasPrefix(amzDate, c.date) {
		return fmt.Errorf("%w: credential date does not match x-amz-date", ErrSignatureMismatch)
	}
	return nil
}

func (v *Verifier) verifyHeader(ctx context.Context, r *http.Request, h string) (*Auth, error) {
	var cred credential
	var signed []string
	var sig string
	var haveCred bool
	for _, f := range strings.Split(strings.TrimPrefix(h, algorithm+" "), ",") {
		f = strings.TrimSpace(f)
		k, val, ok := strings.Cut(f, "=")
		if !ok {
			return nil, ErrMalformedAuth
		}
		switch k {
		case "Credential":
			cred, haveCred = parseCredential(val)
			if !haveCred {
				return nil, fmt.Errorf("%w: credential %q", ErrMalformedAuth, val)
			}
		case "SignedHeaders":
			signed = strings.Split(val, ";")
		case "Signature":
			sig = val
		}
	}
	if !haveCred || len(signed) == 0 || sig == "" {
		return nil, ErrMalformedAuth
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		// x-amz-date is preferred; Date is allowed by the spec.
		d := r.Header.Get("Date")
		if t, err = http.ParseTime(d); err != nil {
			return nil, ErrMissingDate
		}
		amzDate = t.UTC().Format(amzDateFormat)
	}
	if skew := v.now().Sub(t); skew > v.maxSkew() || skew < -v.maxSkew() {
		return nil, ErrTimeSkewed
	}
	if err := v.checkScope(cred, amzDate); err != nil {
		return nil, err
	}
	if !contains(signed, "host") {
		return nil, fmt.Errorf("%w: host is not signed", ErrMalformedAuth)
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		return nil, ErrMissingContentSHA256
	}
	if !validPayloadMode(payload) {
		return nil, ErrInvalidContentSHA256
	}
	secret, err := v.Lookup(ctx, cred.accessKey)
	if err != nil {
		return nil, err
	}
	creq := canonicalRequest(r, canonicalQuery(r.URL.RawQuery, false), signed, payload)
	key := v.Keys.get(secret, cred.date, cred.region, cred.service)
	want := sign(key, stringToSign(amzDate, cred.scope(), creq))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return nil, ErrSignatureMismatch
	}
	return &Auth{
		AccessKey: cred.accessKey, ContentSHA256: payload,
		signingKey: key, seedSig: sig, amzDate: amzDate, scope: cred.scope(),
	}, nil
}

func (v *Verifier) verifyPresigned(ctx context.Context, r *http.Request) (*Auth, error) {
	q := r.URL.Query()
	if q.Get("X-Amz-Algorithm") != algorithm {
		return nil, fmt.Errorf("%w: X-Amz-Algorithm", ErrMalformedPresign)
	}
	cred, ok := parseCredential(q.Get("X-Amz-Credential"))
	if !ok {
		return nil, fmt.Errorf("%w: X-Amz-Credential", ErrMalformedPresign)
	}
	amzDate := q.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return nil, fmt.Errorf("%w: X-Amz-Date", ErrMalformedPresign)
	}
	exp, err := strconv.ParseInt(q.Get("X-Amz-Expires"), 10, 64)
	if err != nil || exp < 1 || time.Duration(exp)*time.Second > maxPresignExpiry {
		return nil, fmt.Errorf("%w: X-Amz-Expires must be between 1 and 604800 seconds", ErrMalformedPresign)
	}
	signed := strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	sig := q.Get("X-Amz-Signature")
	if sig == "" || !contains(signed, "host") {
		return nil, fmt.Errorf("%w: X-Amz-Signature or X-Amz-SignedHeaders", ErrMalformedPresign)
	}
	now := v.now()
	if t.Sub(now) > v.maxSkew() {
		return nil, ErrTimeSkewed
	}
	if now.After(t.Add(time.Duration(exp) * time.Second)) {
		return nil, ErrExpired
	}
	if err := v.checkScope(cred, amzDate); err != nil {
		return nil, err
	}
	payload := q.Get("X-Amz-Content-Sha256")
	if payload == "" {
		payload = r.Header.Get("X-Amz-Content-Sha256")
	}
	if payload == "" {
		payload = UnsignedPayload
	}
	if !validPayloadMode(payload) || strings.HasPrefix(payload, "STREAMING-") {
		return nil, ErrInvalidContentSHA256
	}
	secret, err := v.Lookup(ctx, cred.accessKey)
	if err != nil {
		return nil, err
	}
	creq := canonicalRequest(r, canonicalQuery(r.URL.RawQuery, true), signed, payload)
	key := v.Keys.get(secret, cred.date, cred.region, cred.service)
	want := sign(key, stringToSign(amzDate, cred.scope(), creq))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return nil, ErrSignatureMismatch
	}
	return &Auth{AccessKey: cred.accessKey, Presigned: true, ContentSHA256: payload,
		signingKey: key, seedSig: sig, amzDate: amzDate, scope: cred.scope()}, nil
}

func validPayloadMode(p string) bool {
	switch p {
	case UnsignedPayload, StreamingSigned, StreamingSignedTrailer, StreamingUnsignedTrailer:
		return true
	}
	if len(p) != 64 {
		return false
	}
	_, err := hex.DecodeString(p)
	return err == nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// canonicalRequest builds the SigV4 canonical request. The path is taken
// decoded and re-encoded with AWS's rules, so it does not matter whether the
// client sent '~' or '%7E'.
func canonicalRequest(r *http.Request, query string, signed []string, payload string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	b.WriteString(uriEncode(path, false))
	b.WriteByte('\n')
	b.WriteString(query)
	b.WriteByte('\n')
	for _, name := range signed {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(headerValue(r, name))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signed, ";"))
	b.WriteByte('\n')
	b.WriteString(payload)
	return b.String()
}

func headerValue(r *http.Request, name string) string {
	switch name {
	case "host":
		return r.Host
	case "content-length":
		if v := r.Header.Get("Content-Length"); v != "" {
			return v
		}
		if r.ContentLength >= 0 {
			return strconv.FormatInt(r.ContentLength, 10)
		}
		return ""
	case "transfer-encoding":
		if len(r.TransferEncoding) > 0 {
			return strings.Join(r.TransferEncoding, ",")
		}
	}
	vals := r.Header.Values(name)
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(out, ",")
}

// canonicalQuery sorts the query parameters by encoded name and value.
func canonicalQuery(raw string, presigned bool) string {
	if raw == "" {
		return ""
	}
	type kv struct{ k, v string }
	var params []kv
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil {
			dk = k
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			dv = v
		}
		if presigned && dk == "X-Amz-Signature" {
			continue
		}
		params = append(params, kv{uriEncode(dk, true), uriEncode(dv, true)})
	}
	sort.Slice(params, func(i, j int) bool {
		if params[i].k != params[j].k {
			return params[i].k < params[j].k
		}
		return params[i].v < params[j].v
	})
	var b strings.Builder
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// uriEncode encodes every byte except the unreserved set; '/' is kept unless
// encodeSlash is set.
func uriEncode(s string, encodeSlash bool) string {
	const hexdig = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexdig[c>>4])
			b.WriteByte(hexdig[c&15])
		}
	}
	return b.String()
}

func stringToSign(amzDate, scope, creq string) string {
	h := sha256.Sum256([]byte(creq))
	return algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(h[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

func sign(key []byte, sts string) string {
	return hex.EncodeToString(hmacSHA256(key, sts))
}
