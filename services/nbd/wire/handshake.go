package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"time"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

const (
	// handshakeTimeout bounds option haggling, so a client that connects
	// and goes quiet does not hold a connection forever (qemu-nbd's
	// default handshake limit).
	handshakeTimeout = 10 * time.Second
	// Options carry at most a 4 KiB name and a few info requests. Larger
	// ones are skipped and refused; absurd ones end the connection rather
	// than have us read megabytes of junk.
	maxOption        = 64 << 10
	maxOptionDiscard = 16 << 20
	// maxMessage keeps error strings within the spec's string limit.
	maxMessage = 4096
)

// negotiate runs option haggling. It returns with c.b set when the client
// entered transmission, and nil with c.b unset when it left cleanly.
func (c *conn) negotiate() error {
	c.setDeadline(time.Now().Add(handshakeTimeout))
	hello := binary.BigEndian.AppendUint64(nil, protocol.NEGOTIATION_MAGIC_OLDSTYLE)
	hello = binary.BigEndian.AppendUint64(hello, protocol.NEGOTIATION_MAGIC_OPTION)
	hello = binary.BigEndian.AppendUint16(hello, protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE|handshakeFlagNoZeroes)
	if _, err := c.nc.Write(hello); err != nil {
		return err
	}
	var cflags uint32
	if err := binary.Read(c.br, binary.BigEndian, &cflags); err != nil {
		return quietEOF(err)
	}
	// NBD_FLAG_C_FIXED_NEWSTYLE is not required: clients without it only
	// ever send NBD_OPT_EXPORT_NAME, which needs no option reply.
	if cflags&^(clientFlagFixedNewstyle|clientFlagNoZeroes) != 0 {
		c.log.Warn("nbd: unknown client flags", "flags", cflags)
		return fmt.Errorf("nbd: unknown client flags %#x", cflags)
	}
	c.noZeroes = cflags&clientFlagNoZeroes != 0

	for {
		var h protocol.NegotiationOptionHeader
		if err := binary.Read(c.br, binary.BigEndian, &h); err != nil {
			return quietEOF(err)
		}
		if h.OptionMagic != protocol.NEGOTIATION_MAGIC_OPTION {
			c.log.Warn("nbd: bad option magic", "magic", h.OptionMagic)
			return fmt.Errorf("nbd: bad option magic %#x", h.OptionMagic)
		}
		if h.Length > maxOptionDiscard {
			c.log.Warn("nbd: option too large, disconnecting", "option", h.ID, "length", h.Length)
			return fmt.Errorf("nbd: option %d of %d bytes", h.ID, h.Length)
		}
		if h.Length > maxOption {
			if h.ID == optExportName {
				// No error reply exists for it; hanging up is the answer.
				return fmt.Errorf("nbd: export name of %d bytes", h.Length)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(h.Length)); err != nil {
				return err
			}
			if err := c.optReply(h.ID, repErrTooBig, []byte("option data too large")); err != nil {
				return err
			}
			continue
		}
		data := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return err
		}

		var err error
		switch h.ID {
		case optExportName:
			return c.exportName(string(data))
		case protocol.NEGOTIATION_ID_OPTION_ABORT:
			// The client may already have gone; the reply is a courtesy.
			_ = c.optReply(h.ID, protocol.NEGOTIATION_TYPE_REPLY_ACK, nil)
			return nil
		case protocol.NEGOTIATION_ID_OPTION_LIST:
			err = c.list(h.ID, data)
		case protocol.NEGOTIATION_ID_OPTION_INFO, protocol.NEGOTIATION_ID_OPTION_GO:
			err = c.info(h.ID, data)
			if err == nil && c.b != nil {
				return nil
			}
		default:
			// Includes NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, meta
			// contexts and extended headers: simple replies only.
			err = c.optReply(h.ID, protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED, nil)
		}
		if err != nil {
			return err
		}
	}
}

// quietEOF turns a client hanging up between messages into a clean end.
func quietEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (c *conn) optReply(opt, typ uint32, payload []byte) error {
	b := make([]byte, 0, 20+len(payload))
	b, _ = binary.Append(b, binary.BigEndian, protocol.NegotiationReplyHeader{
		ReplyMagic: protocol.NEGOTIATION_MAGIC_REPLY,
		ID:         opt,
		Type:       typ,
		Length:     uint32(len(payload)),
	})
	_, err := c.nc.Write(append(b, payload...))
	return err
}

func (c *conn) optError(opt, typ uint32, msg string) error {
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	return c.optReply(opt, typ, []byte(msg))
}

func (c *conn) list(opt uint32, data []byte) error {
	if len(data) != 0 {
		return c.optError(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
	}
	exports, err := c.s.Exports.List(c.ctx)
	if err != nil {
		c.log.Warn("nbd: listing exports", "err", err)
		typ := repErrPolicy
		if errors.Is(err, ErrShutdown) {
			typ = repErrShutdown
		}
		return c.optError(opt, typ, "cannot list exports")
	}
	for _, e := range exports {
		p := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
		p = append(append(p, e.Name...), e.Description...)
		if err := c.optReply(opt, protocol.NEGOTIATION_TYPE_REPLY_SERVER, p); err != nil {
			return err
		}
	}
	return c.optReply(opt, protocol.NEGOTIATION_TYPE_REPLY_ACK, nil)
}

// info answers NBD_OPT_INFO and NBD_OPT_GO; after a successful GO the
// export is open in c.b.
func (c *conn) info(opt uint32, data []byte) error {
	// 32-bit name length, name, 16-bit count, count 16-bit info types.
	if len(data) < 6 {
		return c.optError(opt, repErrInvalid, "short option data")
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen) > uint64(len(data)-6) {
		return c.optError(opt, repErrInvalid, "export name length exceeds option data")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return c.optError(opt, repErrInvalid, "info request count does not match option data")
	}
	var wantName, wantDesc bool
	for i := range n {
		switch binary.BigEndian.Uint16(rest[2*i:]) {
		case protocol.NEGOTIATION_TYPE_INFO_NAME:
			wantName = true
		case protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION:
			wantDesc = true
		}
	}

	var (
		b    Backend
		ei   ExportInfo
		size int64
		err  error
	)
	if d, ok := c.s.Exports.(Describer); ok && opt == protocol.NEGOTIATION_ID_OPTION_INFO {
		ei, err = d.Describe(c.ctx, name)
		size = ei.Size
	} else {
		b, ei, err = c.open(name)
		if err == nil {
			size = b.Size()
			defer func() {
				if c.b != b { // not handed over to a GO that succeeded
					c.closeBackend(b)
				}
			}()
		}
	}
	if err != nil {
		return c.optError(opt, openReply(err), openMessage(name, err))
	}
	flags := exportFlags(ei)
	size = max(size, 0)
	reply := func(v any, tail string) error {
		p, _ := binary.Append(nil, binary.BigEndian, v)
		return c.optReply(opt, protocol.NEGOTIATION_TYPE_REPLY_INFO, append(p, tail...))
	}
	if err := reply(protocol.NegotiationReplyInfo{
		Type:              protocol.NEGOTIATION_TYPE_INFO_EXPORT,
		Size:              uint64(size),
		TransmissionFlags: flags,
	}, ""); err != nil {
		return err
	}
	if wantName {
		canonical := ei.Name
		if canonical == "" {
			canonical = name
		}
		if err := reply(protocol.NegotiationReplyNameHeader{Type: protocol.NEGOTIATION_TYPE_INFO_NAME}, canonical); err != nil {
			return err
		}
	}
	if wantDesc && ei.Description != "" {
		if err := reply(protocol.NegotiationReplyDescriptionHeader{Type: protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION}, ei.Description); err != nil {
			return err
		}
	}
	// Sent unrequested too (the spec allows it), so clients that did not
	// ask still learn MaxRequest instead of assuming 32 MiB.
	if err := reply(protocol.NegotiationReplyBlockSize{
		Type:               protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE,
		MinimumBlockSize:   1,
		PreferredBlockSize: c.preferredBlockSize(ei),
		MaximumBlockSize:   c.s.maxReq,
	}, ""); err != nil {
		return err
	}
	if err := c.optReply(opt, protocol.NEGOTIATION_TYPE_REPLY_ACK, nil); err != nil {
		return err
	}
	if opt == protocol.NEGOTIATION_ID_OPTION_GO {
		c.enter(b, ei, name, size, flags)
	}
	return nil
}

// exportName handles NBD_OPT_EXPORT_NAME, which has no error reply: on
// failure the spec requires dropping the connection.
func (c *conn) exportName(name string) error {
	b, ei, err := c.open(name)
	if err != nil {
		return fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME %q: %w", name, err)
	}
	size, flags := max(b.Size(), 0), exportFlags(ei)
	p := binary.BigEndian.AppendUint64(nil, uint64(size))
	p = binary.BigEndian.AppendUint16(p, flags)
	if !c.noZeroes {
		p = append(p, make([]byte, exportNameZeros)...)
	}
	if _, err := c.nc.Write(p); err != nil {
		c.closeBackend(b)
		return err
	}
	c.enter(b, ei, name, size, flags)
	return nil
}

func (c *conn) open(name string) (Backend, ExportInfo, error) {
	b, ei, err := c.s.Exports.Open(c.ctx, name)
	if err == nil && b == nil {
		err = fmt.Errorf("nbd: Exports.Open(%q) returned no backend", name)
	}
	if err != nil {
		c.log.Info("nbd: open export failed", "export", name, "err", err)
		return nil, ExportInfo{}, err
	}
	return b, ei, nil
}

func (c *conn) closeBackend(b Backend) {
	if err := b.Close(); err != nil {
		c.log.Warn("nbd: closing export", "err", err)
	}
}

func openMessage(name string, err error) string {
	if errors.Is(err, ErrNoSpace) {
		// Why the store is full (which nodes, how many bytes) is for the
		// server log.
		return fmt.Sprintf("export %q: %v", name, ErrNoSpace)
	}
	for _, known := range []error{ErrUnknownExport, ErrBusy, ErrShutdown, ErrInvalid, ErrReadOnly} {
		if errors.Is(err, known) {
			return err.Error()
		}
	}
	// Internal failures stay in the server log.
	return fmt.Sprintf("export %q is not available", name)
}

func exportFlags(ei ExportInfo) uint16 {
	flags := protocol.NEGOTIATION_REPLY_FLAGS_HAS_FLAGS | flagSendFlush |
		protocol.NEGOTIATION_REPLY_FLAGS_CAN_MULTI_CONN
	// Like nbdkit, a read-only export does not advertise the write-type
	// features it would refuse anyway.
	if ei.ReadOnly {
		flags |= flagReadOnly
	} else {
		flags |= flagSendFUA | flagSendTrim | flagSendWriteZeroes
	}
	return flags
}

func (c *conn) preferredBlockSize(ei ExportInfo) uint32 {
	p := ei.PreferredBlockSize
	if p < 512 || bits.OnesCount32(p) != 1 || p > c.s.maxReq {
		return 4096
	}
	return p
}
