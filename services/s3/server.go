package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"shoal/services/s3/s3err"
	"shoal/services/s3/sigv4"
)

// Server is the S3 frontend. It is stateless apart from caches, so any
// number of servers may share one DataStore and MetaStore.
type Server struct {
	cfg  Config
	data DataStore
	meta MetaStore
	log  *slog.Logger
	tel  *telemetry
	dirs *dirCache
	// shards keeps index shards decoded for reads.
	shards *shardCache
	now    func() time.Time

	namesMu sync.Mutex
	names   map[string][32]byte

	cache     *metaCache
	splitting sync.Map // index shards being split (see index.splitting)
	repairing sync.Map // index shards being listed again (see index.repair)
	bg        *background
	commits   *commitQueues
	// signingKeys keeps derived SigV4 signing keys across requests.
	signingKeys sigv4.KeyCache
}

// New builds a server. It does not touch the stores until requests arrive.
func New(cfg Config, data DataStore, meta MetaStore, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if data == nil || meta == nil {
		return nil, fmt.Errorf("%w: nil store", ErrConfig)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tel, err := newTelemetry()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, data: data, meta: meta, log: logger, tel: tel,
		dirs: newDirCache(), shards: newShardCache(), now: time.Now, names: map[string][32]byte{}, bg: newBackground()}
	s.commits = newCommitQueues(meta)
	s.cache = newMetaCache(cfg.MetaCacheTTL, func() time.Time { return s.now() })
	return s, nil
}

// Handler returns the HTTP handler serving the S3 API.
func (s *Server) Handler() http.Handler { return s }

// Serve serves on ln until ctx is done, then shuts down gracefully, waiting
// up to ShutdownTimeout for requests in flight.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	s.bg.close()
	return err
}

// background runs work that requests start and do not wait for (index
// repairs), so that shutting down ends it and waits for it: none outlives
// the stores it uses.
type background struct {
	ctx    context.Context
	stop   context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func newBackground() *background {
	b := &background{}
	b.ctx, b.stop = context.WithCancel(context.Background())
	return b
}

// run runs fn in a goroutine under ctx (cancelled at close) bounded by
// timeout, unless the server is shutting down.
func (b *background) run(timeout time.Duration, fn func(ctx context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		ctx, cancel := context.WithTimeout(b.ctx, timeout)
		defer cancel()
		fn(ctx)
	}()
	return true
}

// close cancels the work running and waits for it.
func (b *background) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.stop()
	b.wg.Wait()
}

// request is the per-request state handlers work with.
type request struct {
	s      *Server
	w      *responseWriter
	r      *http.Request
	ctx    context.Context
	id     string
	op     string
	bucket string
	key    string
	q      map[string][]string
	user   string // "" for anonymous
	auth   *sigv4.Auth
	bkt    *bucket // loaded by authorize when anonymous access is checked
	in     int64
}

func (q *request) query(k string) string {
	if v := q.q[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (q *request) has(k string) bool { _, ok := q.q[k]; return ok }

type responseWriter struct {
	http.ResponseWriter
	status int
	out    int64
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.out += int64(n)
	return n, err
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// ServeHTTP authenticates, routes and observes one request. A panic in a
// handler is answered with InternalError and logged, never propagated.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &responseWriter{ResponseWriter: w}
	q := &request{s: s, w: rw, r: r, id: newRequestID()}
	h := w.Header()
	h.Set("X-Amz-Request-Id", q.id)
	h.Set("X-Amz-Id-2", q.id)
	h.Set("Server", "Shoal")
	ctx, span := s.tel.tracer.Start(r.Context(), "s3.request", trace.WithSpanKind(trace.SpanKindServer))
	q.ctx = ctx
	var err error
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // sentinel compared by identity, as net/http does
				panic(p)
			}
			err = fmt.Errorf("s3: panic: %v", p)
			s.log.ErrorContext(ctx, "s3: handler panic", "panic", p, "op", q.op, "request_id", q.id)
			if rw.status == 0 {
				s.writeError(q, s3err.Wrap(s3err.InternalError, err))
			}
		}
		s.finish(q, span, start, err)
	}()
	err = s.handle(q)
	if err != nil && rw.status == 0 {
		s.writeError(q, err)
	}
}

func (s *Server) handle(q *request) error {
	r := q.r
	if n := headerBytes(r); n > s.cfg.MaxHeaderBytes {
		return s3err.New(s3err.RequestHeaderSectionTooLarge)
	}
	var err error
	q.q, err = parseQuery(r.URL.RawQuery)
	if err != nil {
		return s3err.Newf(s3err.InvalidArgument, "invalid query string")
	}
	if err := s.target(q); err != nil {
		q.op = "Unknown"
		return err
	}
	op, fn, anon := route(q)
	q.op = op
	if fn == nil {
		return s3err.New(s3err.NotImplemented)
	}
	if err := s.authenticate(q, anon); err != nil {
		return err
	}
	return fn(q)
}

func headerBytes(r *http.Request) int {
	n := len(r.URL.RawQuery) + len(r.URL.Path)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// parseQuery is url.ParseQuery without silently dropping bad pairs.
func parseQuery(raw string) (map[string][]string, error) {
	m := map[string][]string{}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := urlUnescape(k)
		if err != nil {
			return nil, err
		}
		dv, err := urlUnescape(v)
		if err != nil {
			return nil, err
		}
		m[dk] = append(m[dk], dv)
	}
	return m, nil
}

// target finds bucket and key from the host (virtual-host style) or path.
func (s *Server) target(q *request) error {
	host := q.r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	path := q.r.URL.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if d := s.cfg.Domain; d != "" && strings.HasSuffix(host, "."+d) {
		q.bucket = strings.TrimSuffix(host, "."+d)
		q.key = path[1:]
	} else {
		q.bucket, q.key, _ = strings.Cut(path[1:], "/")
	}
	if q.key != "" {
		if len(q.key) > maxKeyLen {
			return s3err.New(s3err.KeyTooLongError)
		}
		if !utf8.ValidString(q.key) || strings.ContainsRune(q.key, 0) {
			return s3err.New(s3err.InvalidObjectName)
		}
	}
	return nil
}

// Unsupported subresources: answered NotImplemented rather than mistaken for
// plain object or bucket requests.
var unsupported = []string{"cors", "lifecycle", "policy", "tagging", "website", "logging",
	"notification", "replication", "encryption", "object-lock", "retention", "legal-hold",
	"torrent", "restore", "select", "accelerate", "requestPayment", "analytics", "inventory",
	"metrics", "intelligent-tiering", "ownershipControls", "publicAccessBlock", "attributes",
	"policyStatus", "session", "metadataTable", "renameObject"}

type handlerFunc func(*request) error

// route picks the operation. anon says whether a public bucket lets
// anonymous clients do it ("r" read, "w" write, "" never).
func route(q *request) (op string, fn handlerFunc, anon string) {
	for _, sub := range unsupported {
		if q.has(sub) {
			return "Unsupported", nil, ""
		}
	}
	m := q.r.Method
	switch {
	case q.bucket == "":
		if m == http.MethodGet {
			return "ListBuckets", (*request).listBuckets, ""
		}
		return "Service", methodNotAllowed, ""
	case q.key == "":
		switch m {
		case http.MethodPut:
			switch {
			case q.has("versioning"):
				return "PutBucketVersioning", (*request).putBucketVersioning, ""
			case q.has("acl"):
				return "PutBucketAcl", (*request).putBucketACL, ""
			}
			return "CreateBucket", (*request).createBucket, ""
		case http.MethodGet:
			switch {
			case q.has("location"):
				return "GetBucketLocation", (*request).getBucketLocation, ""
			case q.has("versioning"):
				return "GetBucketVersioning", (*request).getBucketVersioning, ""
			case q.has("acl"):
				return "GetBucketAcl", (*request).getBucketACL, ""
			case q.has("uploads"):
				return "ListMultipartUploads", (*request).listUploads, ""
			case q.has("versions"):
				return "ListObjectVersions", (*request).listVersions, "r"
			case q.query("list-type") == "2":
				return "ListObjectsV2", (*request).listObjectsV2, "r"
			}
			return "ListObjects", (*request).listObjectsV1, "r"
		case http.MethodHead:
			return "HeadBucket", (*request).headBucket, "r"
		case http.MethodDelete:
			return "DeleteBucket", (*request).deleteBucket, ""
		case http.MethodPost:
			if q.has("delete") {
				return "DeleteObjects", (*request).deleteObjects, "w"
			}
		}
		return "Bucket", methodNotAllowed, ""
	}
	switch m {
	case http.MethodPut:
		switch {
		case q.has("acl"):
			return "PutObjectAcl", nil, ""
		case q.has("uploadId") && q.r.Header.Get("X-Amz-Copy-Source") != "":
			return "UploadPartCopy", (*request).uploadPartCopy, ""
		case q.has("uploadId"):
			return "UploadPart", (*request).uploadPart, "w"
		case q.r.Header.Get("X-Amz-Copy-Source") != "":
			return "CopyObject", (*request).copyObject, ""
		}
		return "PutObject", (*request).putObject, "w"
	case http.MethodGet:
		switch {
		case q.has("acl"):
			return "GetObjectAcl", nil, ""
		case q.has("uploadId"):
			return "ListParts", (*request).listParts, ""
		}
		return "GetObject", (*request).getObject, "r"
	case http.MethodHead:
		return "HeadObject", (*request).headObject, "r"
	case http.MethodDelete:
		if q.has("uploadId") {
			return "AbortMultipartUpload", (*request).abortUpload, "w"
		}
		return "DeleteObject", (*request).deleteObject, "w"
	case http.MethodPost:
		switch {
		case q.has("uploads"):
			return "CreateMultipartUpload", (*request).createUpload, "w"
		case q.has("uploadId"):
			return "CompleteMultipartUpload", (*request).completeUpload, "w"
		}
	}
	return "Object", methodNotAllowed, ""
}

func methodNotAllowed(*request) error { return s3err.New(s3err.MethodNotAllowed) }

// authenticate verifies the signature, or for anonymous requests checks that
// the bucket's canned ACL allows the operation.
func (s *Server) authenticate(q *request, anon string) error {
	var user string
	v := sigv4.Verifier{
		Region:  s.cfg.Region,
		MaxSkew: s.cfg.ClockSkew,
		Now:     s.now,
		Keys:    &s.signingKeys,
		Lookup: func(ctx context.Context, id string) (string, error) {
			secret, u, err := s.lookupKey(ctx, id)
			user = u
			return secret, err
		},
	}
	a, err := v.Verify(q.ctx, q.r)
	if err == nil {
		q.auth, q.user = a, user
		return nil
	}
	if !errors.Is(err, sigv4.ErrNotSigned) {
		return err
	}
	if anon == "" || q.bucket == "" {
		return s3err.New(s3err.AccessDenied)
	}
	b, err := s.loadBucket(q.ctx, q.bucket)
	if err != nil {
		return s3err.New(s3err.AccessDenied) // do not reveal which buckets exist
	}
	switch {
	case anon == "r" && (b.info.ACL == aclPublicRead || b.info.ACL == aclPublicReadWrite):
	case anon == "w" && b.info.ACL == aclPublicReadWrite:
	default:
		return s3err.New(s3err.AccessDenied)
	}
	q.bkt = b
	return nil
}

// s3Error maps any error to the S3 error sent to the client.
func s3Error(err error) *s3err.Error {
	if e, ok := s3err.As(err); ok {
		return e
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return s3err.Wrap(s3err.EntityTooLarge, err)
	case errors.Is(err, sigv4.ErrNotSigned):
		return s3err.Wrap(s3err.AccessDenied, err)
	case errors.Is(err, sigv4.ErrUnsupportedAuth):
		return &s3err.Error{Code: s3err.InvalidArgument, Msg: "Unsupported Authorization Type", Err: err}
	case errors.Is(err, sigv4.ErrWrongRegion), errors.Is(err, sigv4.ErrMalformedAuth):
		return &s3err.Error{Code: s3err.AuthorizationHeaderMalformed, Msg: err.Error(), Err: err}
	case errors.Is(err, sigv4.ErrMalformedPresign):
		return &s3err.Error{Code: s3err.AuthorizationQueryParametersError, Msg: err.Error(), Err: err}
	case errors.Is(err, sigv4.ErrInvalidAccessKey):
		return s3err.Wrap(s3err.InvalidAccessKeyID, err)
	case errors.Is(err, sigv4.ErrSignatureMismatch), errors.Is(err, sigv4.ErrChunkSignature):
		return s3err.Wrap(s3err.SignatureDoesNotMatch, err)
	case errors.Is(err, sigv4.ErrTimeSkewed):
		return s3err.Wrap(s3err.RequestTimeTooSkewed, err)
	case errors.Is(err, sigv4.ErrExpired):
		return s3err.Wrap(s3err.AccessDeniedPresignExpired, err)
	case errors.Is(err, sigv4.ErrMissingDate):
		return &s3err.Error{Code: s3err.AccessDenied, Msg: "AWS authentication requires a valid Date or x-amz-date header", Err: err}
	case errors.Is(err, sigv4.ErrMissingContentSHA256):
		return &s3err.Error{Code: s3err.InvalidRequest, Msg: "Missing required header for this request: x-amz-content-sha256", Err: err}
	case errors.Is(err, sigv4.ErrInvalidContentSHA256):
		return &s3err.Error{Code: s3err.InvalidArgument, Msg: "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a hex SHA-256", Err: err}
	case errors.Is(err, sigv4.ErrContentSHA256):
		return s3err.Wrap(s3err.XAmzContentSHA256Mismatch, err)
	case errors.Is(err, sigv4.ErrDecodedLength), errors.Is(err, io.ErrUnexpectedEOF):
		return s3err.Wrap(s3err.IncompleteBody, err)
	case errors.Is(err, sigv4.ErrChunkFormat), errors.Is(err, sigv4.ErrTrailer):
		return &s3err.Error{Code: s3err.InvalidRequest, Msg: err.Error(), Err: err}
	case errors.Is(err, errIndexGone), errors.Is(err, errSealed):
		return s3err.Wrap(s3err.NoSuchBucket, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return s3err.Wrap(s3err.RequestTimeout, err)
	}
	return s3err.Wrap(s3err.InternalError, err)
}

func (s *Server) writeError(q *request, err error) {
	e := s3Error(err)
	if e.Code == s3err.InternalError {
		s.log.ErrorContext(q.ctx, "s3: internal error", "op", q.op, "request_id", q.id, "err", err)
	}
	resource := q.r.URL.Path
	s3err.Write(q.w, q.r, e, resource, q.id)
}

func (s *Server) finish(q *request, span trace.Span, start time.Time, err error) {
	status := q.w.status
	if status == 0 {
		status = http.StatusOK
	}
	dur := time.Since(start)
	span.SetName("s3." + q.op)
	span.SetAttributes(
		attribute.String("s3.operation", q.op),
		attribute.String("s3.bucket", q.bucket),
		attribute.Int64("s3.bytes_in", q.in),
		attribute.Int64("s3.bytes_out", q.w.out),
		attribute.Int("http.response.status_code", status),
	)
	if err != nil {
		code := s3Error(err).Code
		span.SetAttributes(attribute.String("s3.error", code.Name()))
		if status >= 500 {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
	s.tel.record(q.ctx, q.op, status, q.in, q.w.out, dur)
	if !s.log.Enabled(q.ctx, slog.LevelInfo) {
		return
	}
	// Attrs, not key-value pairs: no boxing of each value per request.
	attrs := [...]slog.Attr{
		slog.String("request_id", q.id), slog.String("op", q.op), slog.String("method", q.r.Method),
		slog.String("bucket", q.bucket), slog.String("key", q.key), slog.Int("status", status),
		slog.Int64("bytes_in", q.in), slog.Int64("bytes_out", q.w.out), slog.Duration("duration", dur),
		slog.String("remote", q.r.RemoteAddr), slog.String("user", q.user), {},
	}
	n := len(attrs) - 1
	if sc := span.SpanContext(); sc.HasTraceID() {
		attrs[n] = slog.String("trace_id", sc.TraceID().String())
		n++
	}
	s.log.LogAttrs(q.ctx, slog.LevelInfo, "s3 access", attrs[:n]...)
}

// writeXML sends v as an XML document.
func (q *request) writeXML(status int, v any) error {
	body, err := xml.Marshal(v)
	if err != nil {
		return err
	}
	h := q.w.Header()
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(len(xml.Header)+len(body)))
	q.w.WriteHeader(status)
	_, _ = io.WriteString(q.w, xml.Header)
	_, _ = q.w.Write(body)
	return nil
}

// readXML decodes a bounded XML body into v; anything unparsable is
// MalformedXML.
func (q *request) readXML(v any) error {
	if q.r.ContentLength > maxXMLBody {
		return s3err.Newf(s3err.MalformedXML, "request body too large")
	}
	p, err := q.payload()
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(p, maxXMLBody+1))
	if err != nil {
		return err
	}
	if len(body) > maxXMLBody {
		return s3err.Newf(s3err.MalformedXML, "request body too large")
	}
	q.in = int64(len(body))
	if err := checkContentMD5(q.r.Header.Get("Content-MD5"), body); err != nil {
		return err
	}
	if err := xml.Unmarshal(body, v); err != nil {
		return s3err.Wrap(s3err.MalformedXML, err)
	}
	return nil
}

// payload returns the verified request body.
func (q *request) payload() (*sigv4.Payload, error) {
	return sigv4.Body(q.auth, q.r)
}
