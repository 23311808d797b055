// Package rpc holds what every Shoal gRPC server and client shares: message
// size limits sized to the block size, keepalives, tracing, and the single
// table that maps Shoal's error sentinels to gRPC status codes and back.
package rpc

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"shoal/shared/block"
	"shoal/shared/edge"
	"shoal/shared/telemetry"
)

// MaxMessage bounds a gRPC message: a maximum-size block plus headroom.
const MaxMessage = 64 << 20

// ErrFull means a storage node has no room left for the block.
var ErrFull = errors.New("blockstore: capacity exhausted")

// Paxos acceptor rejections that cross the wire; shared/paxos uses these.
var (
	// ErrStaleVersion means a proposed version is older than one already
	// accepted: a replayed write.
	ErrStaleVersion = errors.New("paxos: version older than the accepted one")
	// ErrBadRequest means a malformed protocol message.
	ErrBadRequest = errors.New("paxos: malformed request")
)

// ServerOptions are the options every Shoal gRPC server uses.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		telemetry.ServerOption(),
		grpc.MaxRecvMsgSize(MaxMessage),
		grpc.MaxSendMsgSize(MaxMessage),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ConnectionTimeout(10 * time.Second),
		// Blocks are up to 4 MiB: with gRPC's 64 KiB default window a large
		// block needs dozens of WINDOW_UPDATE round trips.
		grpc.InitialWindowSize(4 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(256 << 10),
		// Handlers run on long-lived workers whose stacks have already
		// grown, instead of a fresh goroutine per call that grows its
		// stack from 8 KiB on every call (runtime.newstack was ~11% of a
		// storage node's CPU under 4 KiB puts).
		grpc.NumStreamWorkers(streamWorkers),
		experimental.BufferPool(messagePool),
	}
}

// streamWorkers is the handler pool of a server; calls beyond it still get
// goroutines of their own.
var streamWorkers = uint32(max(16, 4*runtime.GOMAXPROCS(0)))

// Dial opens a client connection with tracing and Shoal's limits, through
// the process's edge proxy when one is set (shared/edge). The connection
// is lazy: errors surface on the first call.
func Dial(addr string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		telemetry.DialOption(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessage), grpc.MaxCallSendMsgSize(MaxMessage)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithInitialWindowSize(4 << 20),
		grpc.WithInitialConnWindowSize(16 << 20),
		grpc.WithReadBufferSize(256 << 10),
		grpc.WithWriteBufferSize(256 << 10),
		experimental.WithBufferPool(messagePool),
	}, extra...)
	if proxy := edge.Proxy(); proxy != "" {
		// Through a stack's edge: the proxy resolves the name inside the
		// overlay, so gRPC must hand it over unresolved.
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return edge.Dial(ctx, proxy, a)
		}))
		if !strings.Contains(addr, ":///") {
			addr = "passthrough:///" + addr
		}
	}
	return grpc.NewClient(addr, opts...)
}

// table maps sentinels to codes. It is consulted in both directions, so a
// sentinel crosses a gRPC hop and is still matched with errors.Is.
var table = []struct {
	err  error
	code codes.Code
}{
	{block.ErrNotFound, codes.NotFound},
	{block.ErrTooLarge, codes.InvalidArgument},
	{block.ErrHashMismatch, codes.InvalidArgument},
	{block.ErrBadAddress, codes.InvalidArgument},
	{block.ErrBadKind, codes.InvalidArgument},
	{ErrFull, codes.ResourceExhausted},
	{block.ErrBadSignature, codes.PermissionDenied},
	{block.ErrBadDerivation, codes.PermissionDenied},
	{ErrStaleVersion, codes.FailedPrecondition},
	{ErrBadRequest, codes.InvalidArgument},
}

// ToStatus converts a server-side error into a gRPC status error.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			// The sentinel's text leads the message so FromStatus can find it
			// by code and prefix without parsing free text elsewhere.
			return status.Error(e.code, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// FromStatus turns a gRPC error back into an error that matches the sentinel
// it was made from (by code and sentinel text), keeping the message.
func FromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	for _, e := range table {
		if st.Code() == e.code && hasPrefix(st.Message(), e.err.Error()) {
			return &remoteError{sentinel: e.err, msg: st.Message(), code: st.Code()}
		}
	}
	return err
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

type remoteError struct {
	sentinel error
	msg      string
	code     codes.Code
}

func (e *remoteError) Error() string              { return e.msg }
func (e *remoteError) Unwrap() error              { return e.sentinel }
func (e *remoteError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }
