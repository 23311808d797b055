package wire_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"shoal/services/nbd/wire"
)

// fuzzServe feeds input to a server as a client would and requires that it
// neither panics nor hangs: once the client side closes, ServeConn returns.
func fuzzServe(t *testing.T, input []byte) {
	ex := newExports()
	ex.add(wire.ExportInfo{Name: "disk"}, newMem(1<<20))
	ex.add(wire.ExportInfo{Name: "ro", ReadOnly: true}, newMem(4096))
	srv := &wire.Server{Exports: ex, MaxRequest: 1 << 20, Concurrency: 4}
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), server) }()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	_, _ = client.Write(input) // fails once the server gives up on us
	_ = client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return after the client closed")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	ex.waitClosed(t)
}

func be(vs ...any) []byte {
	var b bytes.Buffer
	for _, v := range vs {
		if p, ok := v.([]byte); ok {
			b.Write(p)
			continue
		}
		_ = binary.Write(&b, binary.BigEndian, v)
	}
	return b.Bytes()
}

func FuzzNegotiation(f *testing.F) {
	opt := func(id uint32, data []byte) []byte { return be(uint64(magicOpt), id, uint32(len(data)), data) }
	f.Add(be(uint32(1)))
	f.Add(be(uint32(3), opt(optList, nil), opt(optAbort, nil)))
	f.Add(be(uint32(1), opt(optInfo, infoData("disk", 0, 1, 2, 3)), opt(optGo, infoData("ro"))))
	f.Add(be(uint32(1), opt(optGo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})))
	f.Add(be(uint32(1), opt(optExportName, []byte("disk"))))
	f.Add(be(uint32(1), uint64(magicOpt), uint32(optInfo), uint32(70000)))
	f.Fuzz(fuzzServe)
}

func FuzzTransmission(f *testing.F) {
	req := func(typ, flags uint16, handle, off uint64, length uint32, payload []byte) []byte {
		return be(uint32(magicRequest), flags, typ, handle, off, length, payload)
	}
	f.Add(req(cmdRead, 0, 1, 0, 4096, nil))
	f.Add(append(req(cmdWrite, flagFUA, 1, 4096, 4, []byte("abcd")), req(cmdFlush, 0, 2, 0, 0, nil)...))
	f.Add(req(cmdWrite, 0, 1, 1<<20-2, 4, []byte("abcd")))
	f.Add(req(cmdWrite, 0, 1, 0, 1<<20+1, nil))
	f.Add(append(req(cmdTrim, flagFUA, 1, 0, 1<<20, nil), req(cmdWriteZeroes, flagNoHole, 2, 0, 1<<20, nil)...))
	f.Add(req(cmdDisc, 0, 1, 0, 0, nil))
	f.Add(req(99, 0xffff, 1, ^uint64(0), ^uint32(0), nil))
	f.Add(bytes.Repeat([]byte{0x25, 0x60, 0x95, 0x13}, 20))
	f.Fuzz(func(t *testing.T, requests []byte) {
		hello := be(uint32(3), uint64(magicOpt), uint32(optGo), uint32(len(infoData("disk"))), infoData("disk"))
		fuzzServe(t, append(hello, requests...))
	})
}
