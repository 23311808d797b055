// Package s3err is the table of S3 error codes: each code's name, HTTP
// status and default message, and the AWS-shaped XML error body.
//
// Handlers return *Error values; the server writes them once, so no handler
// builds error XML or picks a status by itself. It is not for internal errors:
// anything that is not an *Error is reported as InternalError.
package s3err

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
)

// Code is an S3 error code.
type Code int

// The codes the frontend returns. Keep the table below in step.
const (
	InternalError Code = iota
	AccessDenied
	AuthorizationHeaderMalformed
	AuthorizationQueryParametersError
	BadDigest
	BucketAlreadyExists
	BucketAlreadyOwnedByYou
	BucketNotEmpty
	EntityTooLarge
	EntityTooSmall
	ExpiredToken
	IncompleteBody
	InvalidAccessKeyID
	InvalidArgument
	InvalidBucketName
	InvalidDigest
	InvalidPart
	InvalidPartOrder
	InvalidRange
	InvalidRequest
	InvalidStorageClass
	KeyTooLongError
	MalformedXML
	MetadataTooLarge
	MethodNotAllowed
	MissingContentLength
	MissingSecurityHeader
	NoSuchBucket
	NoSuchKey
	NoSuchUpload
	NoSuchVersion
	NotImplemented
	NotModified
	PreconditionFailed
	RequestTimeTooSkewed
	SignatureDoesNotMatch
	XAmzContentSHA256Mismatch
	InvalidChunkSizeError
	IllegalVersioningConfiguration
	ServiceUnavailable
	SlowDown
	RequestTimeout
	AccessDeniedPresignExpired
	InvalidObjectName
	NoSuchBucketPolicy
	ChecksumMismatch
	InvalidEncoding
	RequestHeaderSectionTooLarge
	InvalidLocationConstraint
	StorageFull
	numCodes
)

type entry struct {
	name   string
	status int
	msg    string
}

var table = [numCodes]entry{
	InternalError:                     {"InternalError", 500, "We encountered an internal error. Please try again."},
	AccessDenied:                      {"AccessDenied", 403, "Access Denied"},
	AuthorizationHeaderMalformed:      {"AuthorizationHeaderMalformed", 400, "The authorization header is malformed."},
	AuthorizationQueryParametersError: {"AuthorizationQueryParametersError", 400, "Error parsing the X-Amz-Credential parameter."},
	BadDigest:                         {"BadDigest", 400, "The Content-MD5 you specified did not match what we received."},
	BucketAlreadyExists:               {"BucketAlreadyExists", 409, "The requested bucket name is not available."},
	BucketAlreadyOwnedByYou:           {"BucketAlreadyOwnedByYou", 409, "Your previous request to create the named bucket succeeded and you already own it."},
	BucketNotEmpty:                    {"BucketNotEmpty", 409, "The bucket you tried to delete is not empty."},
	EntityTooLarge:                    {"EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size."},
	EntityTooSmall:                    {"EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed object size."},
	ExpiredToken:                      {"ExpiredToken", 400, "The provided token has expired."},
	IncompleteBody:                    {"IncompleteBody", 400, "You did not provide the number of bytes specified by the Content-Length HTTP header."},
	InvalidAccessKeyID:                {"InvalidAccessKeyId", 403, "The AWS access key ID you provided does not exist in our records."},
	InvalidArgument:                   {"InvalidArgument", 400, "Invalid argument."},
	InvalidBucketName:                 {"InvalidBucketName", 400, "The specified bucket is not valid."},
	InvalidDigest:                     {"InvalidDigest", 400, "The Content-MD5 you specified is not valid."},
	InvalidPart:                       {"InvalidPart", 400, "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag."},
	InvalidPartOrder:                  {"InvalidPartOrder", 400, "The list of parts was not in ascending order. The parts list must be specified in order by part number."},
	InvalidRange:                      {"InvalidRange", 416, "The requested range is not satisfiable."},
	InvalidRequest:                    {"InvalidRequest", 400, "Invalid request."},
	InvalidStorageClass:               {"InvalidStorageClass", 400, "The storage class you specified is not valid."},
	KeyTooLongError:                   {"KeyTooLongError", 400, "Your key is too long."},
	MalformedXML:                      {"MalformedXML", 400, "The XML you provided was not well-formed or did not validate against our published schema."},
	MetadataTooLarge:                  {"MetadataTooLarge", 400, "Your metadata headers exceed the maximum allowed metadata size."},
	MethodNotAllowed:                  {"MethodNotAllowed", 405, "The specified method is not allowed against this resource."},
	MissingContentLength:              {"MissingContentLength", 411, "You must provide the Content-Length HTTP header."},
	MissingSecurityHeader:             {"MissingSecurityHeader", 400, "Your request is missing a required header."},
	NoSuchBucket:                      {"NoSuchBucket", 404, "The specified bucket does not exist."},
	NoSuchKey:                         {"NoSuchKey", 404, "The specified key does not exist."},
	NoSuchUpload:                      {"NoSuchUpload", 404, "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed."},
	NoSuchVersion:                     {"NoSuchVersion", 404, "The specified version does not exist."},
	NotImplemented:                    {"NotImplemented", 501, "A header or query you provided requested a function that is not implemented."},
	NotModified:                       {"NotModified", 304, "Not Modified"},
	PreconditionFailed:                {"PreconditionFailed", 412, "At least one of the preconditions you specified did not hold."},
	RequestTimeTooSkewed:              {"RequestTimeTooSkewed", 403, "The difference between the request time and the server's time is too large."},
	SignatureDoesNotMatch:             {"SignatureDoesNotMatch", 403, "The request signature we calculated does not match the signature you provided. Check your key and signing method."},
	XAmzContentSHA256Mismatch:         {"XAmzContentSHA256Mismatch", 400, "The provided 'x-amz-content-sha256' header does not match what was computed."},
	InvalidChunkSizeError:             {"InvalidChunkSizeError", 400, "Only the last chunk is allowed to have a size less than 8192 bytes"},
	IllegalVersioningConfiguration:    {"IllegalVersioningConfigurationException", 400, "The Versioning element must be specified."},
	ServiceUnavailable:                {"ServiceUnavailable", 503, "Please reduce your request rate."},
	SlowDown:                          {"SlowDown", 503, "Please reduce your request rate."},
	RequestTimeout:                    {"RequestTimeout", 400, "Your socket connection to the server was not read from or written to within the timeout period."},
	AccessDeniedPresignExpired:        {"AccessDenied", 403, "Request has expired"},
	InvalidObjectName:                 {"InvalidArgument", 400, "Object name is not valid."},
	NoSuchBucketPolicy:                {"NoSuchBucketPolicy", 404, "The bucket policy does not exist."},
	ChecksumMismatch:                  {"BadDigest", 400, "The checksum you specified did not match what we received."},
	InvalidEncoding:                   {"InvalidArgument", 400, "Invalid Encoding Method specified in Request"},
	RequestHeaderSectionTooLarge:      {"RequestHeaderSectionTooLarge", 400, "Your request header section exceeds the maximum allowed size."},
	InvalidLocationConstraint:         {"InvalidLocationConstraint", 400, "The specified location constraint is not valid."},
	// Not an AWS code (AWS does not fill up): 507, which SDKs do not retry, as
	// S3-compatible stores answer when their drives are full.
	StorageFull: {"XShoalStorageFull", 507, "The storage nodes have no room left for this data: delete objects or add storage nodes."},
}

// Name is the code as it appears in the XML body, e.g. "NoSuchKey".
func (c Code) Name() string { return c.entry().name }

// Status is the HTTP status the code is sent with.
func (c Code) Status() int { return c.entry().status }

func (c Code) entry() entry {
	if c < 0 || c >= numCodes {
		return table[InternalError]
	}
	return table[c]
}

// Error is an S3 error with an optional specific message.
type Error struct {
	Code Code
	Msg  string
	// Err is the underlying cause, kept for logs; never sent to clients.
	Err error
}

func (e *Error) Error() string {
	m := e.Message()
	if e.Err != nil {
		return "s3: " + e.Code.Name() + ": " + m + ": " + e.Err.Error()
	}
	return "s3: " + e.Code.Name() + ": " + m
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Message is the text sent to the client.
func (e *Error) Message() string {
	if e.Msg != "" {
		return e.Msg
	}
	return e.Code.entry().msg
}

// New returns an error with the code's default message.
func New(c Code) *Error { return &Error{Code: c} }

// Newf returns an error with a specific message.
func Newf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an error with the code's default message and a cause for logs.
func Wrap(c Code, cause error) *Error { return &Error{Code: c, Err: cause} }

// As extracts an *Error from err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// Response is the XML error body.
type Response struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Key       string   `xml:"Key,omitempty"`
	BucketN   string   `xml:"BucketName,omitempty"`
	Resource  string   `xml:"Resource"`
	RequestID string   `xml:"RequestId"`
	HostID    string   `xml:"HostId"`
}

// Write sends e as an XML error response. HEAD requests and 304 get no body,
// as HTTP requires.
func Write(w http.ResponseWriter, r *http.Request, e *Error, resource, requestID string) {
	status := e.Code.Status()
	if status == http.StatusNotModified {
		w.WriteHeader(status)
		return
	}
	body, err := xml.Marshal(Response{
		Code:      e.Code.Name(),
		Message:   e.Message(),
		Resource:  resource,
		RequestID: requestID,
		HostID:    requestID,
	})
	if err != nil { // cannot happen for plain strings; keep the status anyway
		w.WriteHeader(status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/xml")
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	h.Set("Content-Length", fmt.Sprint(len(xml.Header)+len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}
