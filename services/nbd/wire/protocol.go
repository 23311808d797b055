package wire

import (
	"encoding/binary"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Protocol values go-nbd's protocol package lacks (NetworkBlockDevice/nbd
// doc/proto.md). The ones it has are used from there directly.
const (
	handshakeFlagNoZeroes = uint16(1 << 1)

	clientFlagFixedNewstyle = uint32(1 << 0)
	clientFlagNoZeroes      = uint32(1 << 1)

	optExportName = uint32(1)

	repErrPolicy   = uint32(1<<31 | 2)
	repErrInvalid  = uint32(1<<31 | 3)
	repErrShutdown = uint32(1<<31 | 7)
	repErrTooBig   = uint32(1<<31 | 9)

	flagReadOnly        = uint16(1 << 1)
	flagSendFlush       = uint16(1 << 2)
	flagSendFUA         = uint16(1 << 3)
	flagSendTrim        = uint16(1 << 5)
	flagSendWriteZeroes = uint16(1 << 6)

	cmdFlush       = uint16(3)
	cmdTrim        = uint16(4)
	cmdWriteZeroes = uint16(6)

	cmdFlagFUA    = uint16(1 << 0)
	cmdFlagNoHole = uint16(1 << 1)

	errnoEPERM     = uint32(1)
	errnoEIO       = uint32(5)
	errnoEINVAL    = uint32(22)
	errnoENOSPC    = uint32(28)
	errnoESHUTDOWN = uint32(108)

	requestSize     = 28
	replySize       = 16
	exportNameZeros = 124
)

func decodeRequest(b *[requestSize]byte) protocol.TransmissionRequestHeader {
	return protocol.TransmissionRequestHeader{
		RequestMagic: binary.BigEndian.Uint32(b[0:]),
		CommandFlags: binary.BigEndian.Uint16(b[4:]),
		Type:         binary.BigEndian.Uint16(b[6:]),
		Handle:       binary.BigEndian.Uint64(b[8:]),
		Offset:       binary.BigEndian.Uint64(b[16:]),
		Length:       binary.BigEndian.Uint32(b[24:]),
	}
}

func encodeReply(b *[replySize]byte, r protocol.TransmissionReplyHeader) {
	binary.BigEndian.PutUint32(b[0:], r.ReplyMagic)
	binary.BigEndian.PutUint32(b[4:], r.Error)
	binary.BigEndian.PutUint64(b[8:], r.Handle)
}

func opName(typ uint16) string {
	switch typ {
	case protocol.TRANSMISSION_TYPE_REQUEST_READ:
		return "Read"
	case protocol.TRANSMISSION_TYPE_REQUEST_WRITE:
		return "Write"
	case protocol.TRANSMISSION_TYPE_REQUEST_DISC:
		return "Disconnect"
	case cmdFlush:
		return "Flush"
	case cmdTrim:
		return "Trim"
	case cmdWriteZeroes:
		return "WriteZeroes"
	default:
		return "Unknown"
	}
}

func errnoName(e uint32) string {
	switch e {
	case 0:
		return "OK"
	case errnoEPERM:
		return "EPERM"
	case errnoEIO:
		return "EIO"
	case errnoEINVAL:
		return "EINVAL"
	case errnoENOSPC:
		return "ENOSPC"
	case errnoESHUTDOWN:
		return "ESHUTDOWN"
	default:
		return "E?"
	}
}
