package wire_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"shoal/services/nbd/wire"
)

// Protocol numbers, spelled out independently of the package under test.
const (
	magicNBD      = 0x4e42444d41474943
	magicOpt      = 0x49484156454F5054
	magicOptReply = 0x3e889045565a9
	magicRequest  = 0x25609513
	magicReply    = 0x67446698

	optExportName = 1
	optAbort      = 2
	optList       = 3
	optStartTLS   = 5
	optInfo       = 6
	optGo         = 7
	optStructured = 8

	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repErrUnsup    = 1<<31 | 1
	repErrPolicy   = 1<<31 | 2
	repErrInvalid  = 1<<31 | 3
	repErrUnknown  = 1<<31 | 6
	repErrShutdown = 1<<31 | 7
	repErrTooBig   = 1<<31 | 9

	infoExport    = 0
	infoName      = 1
	infoDesc      = 2
	infoBlockSize = 3

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6

	flagFUA    = 1 << 0
	flagNoHole = 1 << 1

	ePERM     = 1
	eIO       = 5
	eINVAL    = 22
	eNOSPC    = 28
	eSHUTDOWN = 108
)

// rawClient speaks NBD by hand, to send what well-behaved clients won't.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dial connects and reads the server greeting; the client flags are left
// to the test.
func dial(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// A bound, so that a server bug fails the test instead of hanging it.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawClient{t: t, c: c, br: bufio.NewReader(c)}
	var hello struct {
		Magic, Opt uint64
		Flags      uint16
	}
	rc.read(&hello)
	if hello.Magic != magicNBD || hello.Opt != magicOpt || hello.Flags != 3 {
		t.Fatalf("greeting %+v", hello)
	}
	return rc
}

// open dials, negotiates with NBD_OPT_GO and returns the export size and
// transmission flags.
func open(t *testing.T, addr, name string) (*rawClient, uint64, uint16) {
	t.Helper()
	rc := dial(t, addr)
	rc.write(uint32(3))
	size, flags := rc.goExport(name)
	return rc, size, flags
}

func (rc *rawClient) write(vs ...any) {
	rc.t.Helper()
	var b bytes.Buffer
	for _, v := range vs {
		if p, ok := v.([]byte); ok {
			b.Write(p)
			continue
		}
		if err := binary.Write(&b, binary.BigEndian, v); err != nil {
			rc.t.Fatal(err)
		}
	}
	if _, err := rc.c.Write(b.Bytes()); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawClient) read(v any) {
	rc.t.Helper()
	if err := binary.Read(rc.br, binary.BigEndian, v); err != nil {
		rc.t.Fatal(err)
	}
}

// expectClosed checks the server hangs up without sending anything more.
func (rc *rawClient) expectClosed() {
	rc.t.Helper()
	b, err := io.ReadAll(rc.br)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		rc.t.Fatalf("waiting for the server to close: %v", err)
	}
	if len(b) != 0 {
		rc.t.Fatalf("server sent %d more bytes before closing: %x", len(b), b)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

func (rc *rawClient) option(id uint32, data []byte) {
	rc.t.Helper()
	rc.write(uint64(magicOpt), id, uint32(len(data)), data)
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (rc *rawClient) optReply() optReply {
	rc.t.Helper()
	var h struct {
		Magic          uint64
		Opt, Typ, Size uint32
	}
	rc.read(&h)
	if h.Magic != magicOptReply {
		rc.t.Fatalf("option reply magic %#x", h.Magic)
	}
	data := make([]byte, h.Size)
	if _, err := io.ReadFull(rc.br, data); err != nil {
		rc.t.Fatal(err)
	}
	return optReply{h.Opt, h.Typ, data}
}

func (rc *rawClient) expectOptReply(opt, typ uint32) optReply {
	rc.t.Helper()
	r := rc.optReply()
	if r.opt != opt || r.typ != typ {
		rc.t.Fatalf("reply to option %d: option %d type %#x (%q), want type %#x", opt, r.opt, r.typ, r.data, typ)
	}
	return r
}

func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// exportInfo collects NBD_REP_INFO replies up to the ACK.
type exportInfo struct {
	size                 uint64
	flags                uint16
	name, desc           string
	minBS, prefBS, maxBS uint32
}

func (rc *rawClient) infoReplies(opt uint32) exportInfo {
	rc.t.Helper()
	var ei exportInfo
	for {
		r := rc.optReply()
		if r.opt != opt {
			rc.t.Fatalf("reply for option %d, want %d", r.opt, opt)
		}
		if r.typ == repAck {
			return ei
		}
		if r.typ != repInfo || len(r.data) < 2 {
			rc.t.Fatalf("reply type %#x (%q), want NBD_REP_INFO", r.typ, r.data)
		}
		d := r.data[2:]
		switch binary.BigEndian.Uint16(r.data) {
		case infoExport:
			ei.size, ei.flags = binary.BigEndian.Uint64(d), binary.BigEndian.Uint16(d[8:])
		case infoName:
			ei.name = string(d)
		case infoDesc:
			ei.desc = string(d)
		case infoBlockSize:
			ei.minBS, ei.prefBS, ei.maxBS = binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:]), binary.BigEndian.Uint32(d[8:])
		}
	}
}

func (rc *rawClient) goExport(name string) (uint64, uint16) {
	rc.t.Helper()
	rc.option(optGo, infoData(name, infoBlockSize))
	ei := rc.infoReplies(optGo)
	return ei.size, ei.flags
}

func (rc *rawClient) request(typ, flags uint16, handle, off uint64, length uint32, payload []byte) {
	rc.t.Helper()
	rc.write(uint32(magicRequest), flags, typ, handle, off, length, payload)
}

// reply reads a simple reply header; the caller reads any data.
func (rc *rawClient) reply() (errno uint32, handle uint64) {
	rc.t.Helper()
	var h struct {
		Magic, Errno uint32
		Handle       uint64
	}
	rc.read(&h)
	if h.Magic != magicReply {
		rc.t.Fatalf("reply magic %#x", h.Magic)
	}
	return h.Errno, h.Handle
}

func (rc *rawClient) expectReply(handle uint64, errno uint32) {
	rc.t.Helper()
	e, h := rc.reply()
	if h != handle || e != errno {
		rc.t.Fatalf("reply: handle %d errno %d, want handle %d errno %d", h, e, handle, errno)
	}
}

func (rc *rawClient) readAt(handle, off uint64, n uint32) []byte {
	rc.t.Helper()
	rc.request(cmdRead, 0, handle, off, n, nil)
	rc.expectReply(handle, 0)
	b := make([]byte, n)
	if _, err := io.ReadFull(rc.br, b); err != nil {
		rc.t.Fatal(err)
	}
	return b
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestRawExportName(t *testing.T) {
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	copy(mem.data, "boot sector")
	addr := serve(t, &wire.Server{Exports: ex})

	// Old newstyle (no flags), fixed newstyle, fixed newstyle without zeroes.
	for _, cflags := range []uint32{0, 1, 3} {
		noZeroes := cflags&2 != 0
		t.Run(fmt.Sprintf("flags=%d", cflags), func(t *testing.T) {
			rc := dial(t, addr)
			rc.write(cflags)
			rc.option(optExportName, []byte("disk"))
			var h struct {
				Size  uint64
				Flags uint16
			}
			rc.read(&h)
			if h.Size != 1<<20 || h.Flags&1 == 0 {
				t.Fatalf("export %+v", h)
			}
			if !noZeroes {
				zeros := make([]byte, 124)
				rc.read(zeros)
				if !bytes.Equal(zeros, make([]byte, 124)) {
					t.Fatalf("padding not zero: %x", zeros)
				}
			}
			// The next bytes must be the reply, not padding.
			if got := rc.readAt(7, 0, 11); string(got) != "boot sector" {
				t.Fatalf("read %q", got)
			}
		})
	}

	// NBD_OPT_EXPORT_NAME cannot report errors: the server hangs up.
	rc := dial(t, addr)
	rc.write(uint32(1))
	rc.option(optExportName, []byte("nope"))
	rc.expectClosed()
	ex.waitClosed(t)
}

func TestRawOptions(t *testing.T) {
	ex := newExports()
	ex.add(wire.ExportInfo{Name: "disk", Description: "the disk", PreferredBlockSize: 1000}, newMem(1<<20))
	ex.add(wire.ExportInfo{Name: "other"}, newMem(4096))
	ex.addError("busy", fmt.Errorf("held elsewhere: %w", wire.ErrBusy))
	ex.addError("broken", errors.New("disk on fire at 10.0.0.7"))
	ex.addError("stopping", wire.ErrShutdown)
	ex.addError("full", fmt.Errorf("creating its data: %w", wire.ErrNoSpace))
	addr := serve(t, &wire.Server{Exports: ex, MaxRequest: 1 << 20})

	rc := dial(t, addr)
	rc.write(uint32(1))

	for _, opt := range []uint32{optStartTLS, optStructured, 9, 10, 11, 12, 0, 0xffffffff} {
		rc.option(opt, nil)
		rc.expectOptReply(opt, repErrUnsup)
	}
	rc.option(optList, []byte("x"))
	rc.expectOptReply(optList, repErrInvalid)

	rc.option(optList, nil)
	listed := map[string]string{}
	for {
		r := rc.optReply()
		if r.typ == repAck {
			break
		}
		if r.typ != repServer {
			t.Fatalf("list reply type %#x", r.typ)
		}
		n := binary.BigEndian.Uint32(r.data)
		listed[string(r.data[4:4+n])] = string(r.data[4+n:])
	}
	if len(listed) != 2 || listed["disk"] != "the disk" || listed["other"] != "" {
		t.Fatalf("listed %q", listed)
	}

	for _, bad := range [][]byte{
		nil,
		{0, 0, 0},
		{0, 0, 0, 10, 'd', 'i', 's', 'k', 0, 0}, // name longer than data
		append(infoData("disk"), 0),             // trailing byte
		infoData("disk", 1, 2)[:len(infoData("disk", 1, 2))-1], // count exceeds data
	} {
		rc.option(optInfo, bad)
		rc.expectOptReply(optInfo, repErrInvalid)
	}

	for name, typ := range map[string]uint32{"nope": repErrUnknown, "busy": repErrPolicy, "broken": repErrUnknown, "stopping": repErrShutdown, "full": repErrUnknown} {
		rc.option(optInfo, infoData(name))
		r := rc.expectOptReply(optInfo, typ)
		if len(r.data) == 0 || bytes.Contains(r.data, []byte("10.0.0.7")) {
			t.Errorf("%s: message %q: want a message, without internal details", name, r.data)
		}
		// No reply type says "full": the message must.
		if name == "full" && !bytes.Contains(r.data, []byte("no space left")) {
			t.Errorf("full: message %q does not say why", r.data)
		}
	}

	// Too large to be an option: skipped and refused, negotiation goes on.
	rc.option(optInfo, make([]byte, 100<<10))
	rc.expectOptReply(optInfo, repErrTooBig)

	rc.option(optInfo, infoData("disk", infoName, infoDesc, infoBlockSize))
	ei := rc.infoReplies(optInfo)
	want := exportInfo{size: 1 << 20, flags: 1 | 1<<2 | 1<<3 | 1<<5 | 1<<6 | 1<<8, name: "disk", desc: "the disk",
		minBS: 1, prefBS: 4096, maxBS: 1 << 20}
	if ei != want {
		t.Errorf("info:\n got %+v\nwant %+v", ei, want)
	}
	ex.waitClosed(t) // NBD_OPT_INFO must not keep the export open

	if size, flags := rc.goExport("other"); size != 4096 || flags&1 == 0 {
		t.Fatalf("go: size %d flags %#x", size, flags)
	}
	if opens, closes := ex.openCount(); opens != 2 || closes != 1 {
		t.Fatalf("after GO: %d opens, %d closes", opens, closes)
	}
	rc.request(cmdDisc, 0, 1, 0, 0, nil)
	rc.expectClosed()
	ex.waitClosed(t)

	// NBD_OPT_ABORT is acknowledged, then the server hangs up.
	rc = dial(t, addr)
	rc.write(uint32(1))
	rc.option(optAbort, nil)
	rc.expectOptReply(optAbort, repAck)
	rc.expectClosed()
}

func TestRawNegotiationViolations(t *testing.T) {
	ex := newExports()
	ex.add(wire.ExportInfo{Name: "disk"}, newMem(4096))
	addr := serve(t, &wire.Server{Exports: ex})

	t.Run("unknown client flags", func(t *testing.T) {
		rc := dial(t, addr)
		rc.write(uint32(1 | 1<<7))
		rc.expectClosed()
	})
	t.Run("bad option magic", func(t *testing.T) {
		rc := dial(t, addr)
		rc.write(uint32(1), uint64(0xdeadbeef), uint32(optGo), uint32(0))
		rc.expectClosed()
	})
	t.Run("absurd option length", func(t *testing.T) {
		rc := dial(t, addr)
		rc.write(uint32(1))
		rc.write(uint64(magicOpt), uint32(optGo), uint32(1<<30))
		rc.expectClosed()
	})
	t.Run("oversized export name", func(t *testing.T) {
		rc := dial(t, addr)
		rc.write(uint32(1))
		rc.option(optExportName, make([]byte, 100<<10))
		rc.expectClosed()
	})
	t.Run("hang up mid-option", func(t *testing.T) {
		rc := dial(t, addr)
		rc.write(uint32(1), uint64(magicOpt), uint32(optGo), uint32(100), []byte("short"))
		_ = rc.c.(*net.TCPConn).CloseWrite()
		rc.expectClosed()
	})
	// The server is still fine.
	rc, size, _ := open(t, addr, "disk")
	if size != 4096 {
		t.Fatalf("size %d", size)
	}
	rc.readAt(1, 0, 4096)
}

func TestRawBadRequests(t *testing.T) {
	const size = 1 << 20
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(size))
	copy(mem.data, pattern(size, 1))
	ex.add(wire.ExportInfo{Name: "ro", ReadOnly: true}, newMem(size))
	addr := serve(t, &wire.Server{Exports: ex, MaxRequest: 256 << 10})

	rc, _, _ := open(t, addr, "disk")
	steps := []struct {
		name       string
		typ, flags uint16
		off        uint64
		length     uint32
		payload    bool
		errno      uint32
	}{
		{"read past end", cmdRead, 0, size - 10, 20, false, eINVAL},
		{"read at end", cmdRead, 0, size, 1, false, eINVAL},
		{"read offset overflow", cmdRead, 0, ^uint64(0) - 100, 4096, false, eINVAL},
		{"read too large", cmdRead, 0, 0, 256<<10 + 1, false, eINVAL},
		{"write past end", cmdWrite, 0, size - 100, 4096, true, eNOSPC},
		{"write offset overflow", cmdWrite, 0, ^uint64(0), 1, true, eNOSPC},
		{"trim past end", cmdTrim, 0, size, 4096, false, eINVAL},
		{"zeroes past end", cmdWriteZeroes, 0, 1 << 40, 4096, false, eNOSPC},
		{"unknown command", 42, 0, 0, 4096, false, eINVAL},
		{"cache not offered", 5, 0, 0, 4096, false, eINVAL},
		{"block status not offered", 7, 0, 0, 4096, false, eINVAL},
		{"unknown flag", cmdRead, 1 << 5, 0, 4096, false, eINVAL},
		{"no-hole on write", cmdWrite, flagNoHole, 0, 16, true, eINVAL},
		{"zero-length read", cmdRead, 0, 0, 0, false, 0},
		{"zero-length read at end", cmdRead, 0, size, 0, false, 0},
		{"zero-length write", cmdWrite, flagFUA, 100, 0, true, 0},
		{"zero-length trim", cmdTrim, 0, 0, 0, false, 0},
		{"FUA on read", cmdRead, flagFUA, 0, 0, false, 0},
		{"flush", cmdFlush, 0, 0, 0, false, 0},
	}
	for i, s := range steps {
		var payload []byte
		if s.payload {
			payload = bytes.Repeat([]byte{0xee}, int(s.length))
		}
		rc.request(s.typ, s.flags, uint64(i), s.off, s.length, payload)
		if e, h := rc.reply(); e != s.errno || h != uint64(i) {
			t.Fatalf("%s: errno %d handle %d, want errno %d handle %d", s.name, e, h, s.errno, i)
		}
		// Every refused request leaves the connection usable, and no data
		// follows an error reply (or an empty read).
		if got := rc.readAt(1000+uint64(i), 4096, 64); !bytes.Equal(got, pattern(size, 1)[4096:4096+64]) {
			t.Fatalf("after %s: read %x", s.name, got)
		}
	}
	if !bytes.Equal(mem.snapshot(), pattern(size, 1)) {
		t.Error("refused requests changed the export")
	}

	ro, _, flags := open(t, addr, "ro")
	if flags&(1<<1) == 0 || flags&(1<<5|1<<6|1<<3) != 0 {
		t.Errorf("read-only flags %#x", flags)
	}
	ro.request(cmdWrite, 0, 1, 0, 8, []byte("12345678"))
	ro.expectReply(1, ePERM)
	ro.request(cmdTrim, 0, 2, 0, 4096, nil)
	ro.expectReply(2, ePERM)
	ro.request(cmdWriteZeroes, 0, 3, 0, 4096, nil)
	ro.expectReply(3, ePERM)
	ro.request(cmdFlush, 0, 4, 0, 0, nil)
	ro.expectReply(4, 0)
	ro.readAt(5, 0, 4096)

	// Garbage instead of a request ends that connection only.
	rc.write(bytes.Repeat([]byte{0x42}, 28))
	rc.expectClosed()
	ro.readAt(6, 0, 4096)
}

func TestRawOversizeWriteDisconnects(t *testing.T) {
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	addr := serve(t, &wire.Server{Exports: ex, MaxRequest: 64 << 10})
	rc, _, _ := open(t, addr, "disk")
	// Header only: the server must not wait for the payload.
	rc.request(cmdWrite, 0, 1, 0, 64<<10+1, nil)
	rc.expectClosed()
	ex.waitClosed(t)
	if c := mem.counts(); c.writes != 0 {
		t.Errorf("oversized write reached the backend: %+v", c)
	}
}

func TestRawWriteReadFlushTrim(t *testing.T) {
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	addr := serve(t, &wire.Server{Exports: ex})
	rc, _, _ := open(t, addr, "disk")

	data := pattern(100_000, 3)
	rc.request(cmdWrite, flagFUA, 1, 12345, uint32(len(data)), data)
	rc.expectReply(1, 0)
	if got := rc.readAt(2, 12345, uint32(len(data))); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	rc.request(cmdTrim, flagFUA, 3, 12345, 1000, nil)
	rc.expectReply(3, 0)
	rc.request(cmdWriteZeroes, flagNoHole, 4, 20000, 1000, nil)
	rc.expectReply(4, 0)
	rc.request(cmdFlush, 0, 5, 0, 0, nil)
	rc.expectReply(5, 0)
	rc.request(cmdDisc, 0, 6, 0, 0, nil)
	rc.expectClosed()
	ex.waitClosed(t)

	want := make([]byte, 1<<20)
	copy(want[12345:], data)
	clear(want[12345 : 12345+1000])
	clear(want[20000 : 20000+1000])
	if !bytes.Equal(mem.snapshot(), want) {
		t.Error("export content wrong")
	}
	// FUA write, FUA trim (flush), FLUSH, and the flush on NBD_CMD_DISC.
	c := mem.counts()
	if c.writes != 1 || c.fuaWrites != 1 || c.trims != 1 || c.zeroes != 1 || c.flushes != 3 {
		t.Errorf("backend calls %+v", c)
	}
}

func TestRawBackendErrors(t *testing.T) {
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	faults := map[int64]error{
		4096:  errors.New("plain failure"),
		8192:  fmt.Errorf("wrapped: %w", wire.ErrInvalid),
		12288: wire.ErrNoSpace,
		16384: wire.ErrReadOnly,
		20480: wire.ErrShutdown,
	}
	mem.fail = func(op string, off, _ int64) error { return faults[off] }
	mem.hook = func(_ context.Context, op string, off int64) error {
		if off == 24576 {
			panic("backend bug")
		}
		return nil
	}
	addr := serve(t, &wire.Server{Exports: ex})
	rc, _, _ := open(t, addr, "disk")

	for _, c := range []struct {
		off   uint64
		errno uint32
	}{{4096, eIO}, {8192, eINVAL}, {12288, eNOSPC}, {16384, ePERM}, {20480, eSHUTDOWN}, {24576, eIO}} {
		rc.request(cmdRead, 0, c.off, c.off, 4096, nil)
		rc.expectReply(c.off, c.errno)
		rc.request(cmdWrite, 0, c.off+1, c.off, 4, []byte("abcd"))
		rc.expectReply(c.off+1, c.errno)
		rc.request(cmdTrim, 0, c.off+2, c.off, 4096, nil)
		rc.expectReply(c.off+2, c.errno)
		// No data followed the failed read: this reply is next.
		rc.readAt(1, 0, 16)
	}
}

func TestRawPipelinedReads(t *testing.T) {
	const n = 32
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(n*8192))
	copy(mem.data, pattern(n*8192, 9))
	addr := serve(t, &wire.Server{Exports: ex, Concurrency: 4})
	rc, _, _ := open(t, addr, "disk")

	// All requests go out before any reply is read; lengths differ so a
	// mixed-up reply would desynchronise the stream.
	for i := range n {
		rc.request(cmdRead, 0, uint64(1000+i), uint64(i*8192), uint32(1024+i*100), nil)
	}
	seen := map[uint64]bool{}
	for range n {
		e, h := rc.reply()
		i := int(h) - 1000
		if e != 0 || i < 0 || i >= n || seen[h] {
			t.Fatalf("reply errno %d handle %d", e, h)
		}
		seen[h] = true
		got := make([]byte, 1024+i*100)
		if _, err := io.ReadFull(rc.br, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pattern(n*8192, 9)[i*8192:i*8192+len(got)]) {
			t.Fatalf("handle %d: wrong data", h)
		}
	}
	if c := mem.counts(); c.maxInflight > 4 {
		t.Errorf("%d requests in flight, Concurrency is 4", c.maxInflight)
	}
}

// TestConcurrentRequests proves requests on one connection run at once: the
// backend holds every read until four are in progress, which a sequential
// server would never reach.
func TestConcurrentRequests(t *testing.T) {
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	var arrived atomic.Int32
	all := make(chan struct{})
	mem.hook = func(ctx context.Context, op string, _ int64) error {
		if op != "read" {
			return nil
		}
		if arrived.Add(1) == 4 {
			close(all)
		}
		select {
		case <-all:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("reads were not concurrent")
		}
	}
	addr := serve(t, &wire.Server{Exports: ex, Concurrency: 4})
	rc, _, _ := open(t, addr, "disk")
	for i := range 4 {
		rc.request(cmdRead, 0, uint64(i), uint64(i)*4096, 4096, nil)
	}
	for range 4 {
		if e, h := rc.reply(); e != 0 {
			t.Fatalf("handle %d: errno %d", h, e)
		}
		if _, err := io.CopyN(io.Discard, rc.br, 4096); err != nil {
			t.Fatal(err)
		}
	}
}

// notifyConn reports when the server sees the client hang up.
type notifyConn struct {
	net.Conn
	eof  chan struct{}
	once atomic.Bool
}

func (c *notifyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.once.CompareAndSwap(false, true) {
		close(c.eof)
	}
	return n, err
}

// serveOne runs ServeConn on one accepted connection, reporting its return.
func serveOne(t *testing.T, srv *wire.Server, ctx context.Context) (addr string, eof <-chan struct{}, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	eofc, donec := make(chan struct{}), make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			donec <- err
			return
		}
		donec <- srv.ServeConn(ctx, &notifyConn{Conn: nc, eof: eofc})
	}()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), eofc, donec
}

func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return")
		return nil
	}
}

// A client vanishing with a request in flight: ServeConn waits for it, then
// closes the backend, and nothing is left running.
func TestDisconnectWithRequestInFlight(t *testing.T) {
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	entered, release := make(chan struct{}), make(chan struct{})
	mem.hook = func(context.Context, string, int64) error {
		close(entered)
		<-release
		return nil
	}
	srv := &wire.Server{Exports: ex}
	addr, eof, done := serveOne(t, srv, context.Background())
	rc, _, _ := open(t, addr, "disk")
	rc.request(cmdRead, 0, 1, 0, 4096, nil)
	<-entered
	_ = rc.c.Close()
	<-eof
	select {
	case err := <-done:
		t.Fatalf("ServeConn returned (%v) with a request in flight", err)
	default:
	}
	if _, closes := ex.openCount(); closes != 0 {
		t.Fatal("backend closed with a request in flight")
	}
	close(release)
	if err := waitDone(t, done); err != nil {
		t.Errorf("ServeConn: %v", err)
	}
	ex.waitClosed(t)
}

func TestDisconnectMidWrite(t *testing.T) {
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	srv := &wire.Server{Exports: ex}
	addr, _, done := serveOne(t, srv, context.Background())
	rc, _, _ := open(t, addr, "disk")
	rc.request(cmdWrite, 0, 1, 0, 64<<10, make([]byte, 100))
	_ = rc.c.Close()
	if err := waitDone(t, done); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ServeConn: %v, want unexpected EOF", err)
	}
	ex.waitClosed(t)
	if c := mem.counts(); c.writes != 0 {
		t.Errorf("truncated write reached the backend: %+v", c)
	}
}

func TestServeConnContextCancel(t *testing.T) {
	ex := newExports()
	ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	ctx, cancel := context.WithCancel(context.Background())
	addr, _, done := serveOne(t, &wire.Server{Exports: ex}, ctx)
	rc, _, _ := open(t, addr, "disk")
	rc.readAt(1, 0, 512)
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Errorf("ServeConn: %v", err)
	}
	rc.expectClosed()
	ex.waitClosed(t)
}

// Close drains: a request in flight still gets its reply, then the
// connection ends and Serve and Close return.
func TestCloseDrains(t *testing.T) {
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	copy(mem.data, "drained")
	entered, release := make(chan struct{}), make(chan struct{})
	mem.hook = func(_ context.Context, _ string, off int64) error {
		if off == 0 {
			close(entered)
			<-release
		}
		return nil
	}
	srv := &wire.Server{Exports: ex}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	addr := ln.Addr().String()

	idle := dial(t, addr) // still negotiating
	rc, _, _ := open(t, addr, "disk")
	rc.request(cmdRead, 0, 1, 0, 7, nil)
	<-entered

	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	// Serve returns once Close has stopped every connection.
	if err := waitDone(t, served); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned with a request in flight")
	default:
	}
	close(release)
	rc.expectReply(1, 0)
	got := make([]byte, 7)
	rc.read(got)
	if string(got) != "drained" {
		t.Fatalf("read %q", got)
	}
	rc.expectClosed()
	idle.expectClosed()
	if err := waitDone(t, closed); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ex.waitClosed(t)

	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting after Close")
	}
	a, b := net.Pipe()
	defer func() { _ = b.Close() }()
	if err := srv.ServeConn(context.Background(), a); !errors.Is(err, wire.ErrServerClosed) {
		t.Errorf("ServeConn after Close: %v", err)
	}
}

// describingExports answers NBD_OPT_INFO without opening anything.
type describingExports struct{ *memExports }

func (d describingExports) Describe(_ context.Context, name string) (wire.ExportInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	x, ok := d.exports[name]
	if !ok {
		return wire.ExportInfo{}, wire.ErrUnknownExport
	}
	return x.info, nil
}

func TestRawInfoWithDescriber(t *testing.T) {
	ex := newExports()
	ex.add(wire.ExportInfo{Name: "disk", Description: "leased"}, newMem(1<<20))
	addr := serve(t, &wire.Server{Exports: describingExports{ex}})
	rc := dial(t, addr)
	rc.write(uint32(1))
	rc.option(optInfo, infoData("disk", infoDesc))
	if ei := rc.infoReplies(optInfo); ei.size != 1<<20 || ei.desc != "leased" || ei.flags&1 == 0 {
		t.Fatalf("info %+v", ei)
	}
	rc.option(optInfo, infoData("nope"))
	rc.expectOptReply(optInfo, repErrUnknown)
	if opens, _ := ex.openCount(); opens != 0 {
		t.Fatalf("NBD_OPT_INFO opened the export %d times", opens)
	}
	// NBD_OPT_GO still opens it.
	if size, _ := rc.goExport("disk"); size != 1<<20 {
		t.Fatalf("size %d", size)
	}
	if opens, _ := ex.openCount(); opens != 1 {
		t.Fatalf("%d opens after GO", opens)
	}
	rc.readAt(1, 0, 512)
}
