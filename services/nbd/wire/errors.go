package wire

import (
	"errors"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Errors a Backend returns, wrapped or not; the server maps them to the
// NBD error numbers clients understand. Anything else becomes EIO.
var (
	ErrInvalid  = errors.New("nbd: invalid request")       // EINVAL
	ErrNoSpace  = errors.New("nbd: no space left")         // ENOSPC
	ErrReadOnly = errors.New("nbd: export is read-only")   // EPERM
	ErrShutdown = errors.New("nbd: server shutting down")  // ESHUTDOWN
	ErrBusy     = errors.New("nbd: export busy or denied") // Open: NBD_REP_ERR_POLICY

	// ErrUnknownExport is returned by Exports.Open for a name it does not
	// serve (NBD_REP_ERR_UNKNOWN).
	ErrUnknownExport = errors.New("nbd: unknown export")
)

// errno maps a backend error to the NBD error field of a reply.
func errno(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrInvalid):
		return errnoEINVAL
	case errors.Is(err, ErrNoSpace):
		return errnoENOSPC
	case errors.Is(err, ErrReadOnly):
		return errnoEPERM
	case errors.Is(err, ErrShutdown):
		return errnoESHUTDOWN
	default:
		return errnoEIO
	}
}

// openReply maps an Exports.Open error to an option error reply type.
func openReply(err error) uint32 {
	switch {
	case errors.Is(err, ErrUnknownExport):
		return protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN
	case errors.Is(err, ErrBusy), errors.Is(err, ErrReadOnly):
		return repErrPolicy
	case errors.Is(err, ErrShutdown):
		return repErrShutdown
	case errors.Is(err, ErrInvalid):
		return repErrInvalid
	default:
		// The spec has no generic failure reply (nor one for a full
		// store): "export not available" is what the client would conclude
		// anyway, and the reply's message says why.
		return protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN
	}
}
