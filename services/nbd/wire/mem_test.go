package wire_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/services/nbd/wire"
)

// memBackend is an in-memory export that counts what the server asked of
// it. fail, when set, injects errors; hook runs at the start of every call
// and may block.
type memBackend struct {
	mu   sync.Mutex
	data []byte

	reads, writes, fuaWrites, flushes, trims, zeroes int
	inflight, maxInflight                            int

	fail func(op string, off, length int64) error
	hook func(ctx context.Context, op string, off int64) error
}

func newMem(size int) *memBackend { return &memBackend{data: make([]byte, size)} }

func (m *memBackend) Size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.data))
}

// enter applies fault injection and the hook, tracking concurrency.
func (m *memBackend) enter(ctx context.Context, op string, off, length int64) error {
	m.mu.Lock()
	m.inflight++
	m.maxInflight = max(m.maxInflight, m.inflight)
	fail, hook := m.fail, m.hook
	m.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, op, off); err != nil {
			return err
		}
	}
	if fail != nil {
		return fail(op, off, length)
	}
	return nil
}

func (m *memBackend) leave() {
	m.mu.Lock()
	m.inflight--
	m.mu.Unlock()
}

func (m *memBackend) check(off, length int64) error {
	if off < 0 || length < 0 || off+length > int64(len(m.data)) {
		return fmt.Errorf("mem: [%d,+%d) out of range: %w", off, length, wire.ErrInvalid)
	}
	return nil
}

func (m *memBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	defer m.leave()
	if err := m.enter(ctx, "read", off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(p, m.data[off:])
	return nil
}

func (m *memBackend) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	defer m.leave()
	if err := m.enter(ctx, "write", off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if fua {
		m.fuaWrites++
	}
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(m.data[off:], p)
	return nil
}

func (m *memBackend) zero(off, length int64) error {
	if err := m.check(off, length); err != nil {
		return err
	}
	clear(m.data[off : off+length])
	return nil
}

func (m *memBackend) Trim(ctx context.Context, off, length int64) error {
	defer m.leave()
	if err := m.enter(ctx, "trim", off, length); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trims++
	return m.zero(off, length)
}

func (m *memBackend) WriteZeroes(ctx context.Context, off, length int64, _ bool) error {
	defer m.leave()
	if err := m.enter(ctx, "zero", off, length); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zeroes++
	return m.zero(off, length)
}

func (m *memBackend) Flush(ctx context.Context) error {
	defer m.leave()
	if err := m.enter(ctx, "flush", 0, 0); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushes++
	return nil
}

func (m *memBackend) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data...)
}

type counts struct{ reads, writes, fuaWrites, flushes, trims, zeroes, maxInflight int }

func (m *memBackend) counts() counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return counts{m.reads, m.writes, m.fuaWrites, m.flushes, m.trims, m.zeroes, m.maxInflight}
}

// memExports serves named memBackends and counts opens and closes, so
// tests can tell connections apart and catch leaked backends.
type memExports struct {
	mu      sync.Mutex
	exports map[string]*memExport
	opens   int
	closes  int
	closed  chan struct{} // receives on every Close
}

type memExport struct {
	info wire.ExportInfo
	mem  *memBackend
	err  error // returned by Open instead
}

func newExports() *memExports {
	return &memExports{exports: map[string]*memExport{}, closed: make(chan struct{}, 1000)}
}

func (e *memExports) add(info wire.ExportInfo, mem *memBackend) *memBackend {
	e.mu.Lock()
	defer e.mu.Unlock()
	info.Size = mem.Size()
	e.exports[info.Name] = &memExport{info: info, mem: mem}
	return mem
}

func (e *memExports) addError(name string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exports[name] = &memExport{info: wire.ExportInfo{Name: name}, err: err}
}

func (e *memExports) Open(_ context.Context, name string) (wire.Backend, wire.ExportInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.exports[name]
	if !ok {
		return nil, wire.ExportInfo{}, fmt.Errorf("export %q: %w", name, wire.ErrUnknownExport)
	}
	if x.err != nil {
		return nil, wire.ExportInfo{}, x.err
	}
	e.opens++
	return &handle{memBackend: x.mem, e: e}, x.info, nil
}

func (e *memExports) List(context.Context) ([]wire.ExportInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []wire.ExportInfo
	for _, x := range e.exports {
		if x.err == nil {
			out = append(out, x.info)
		}
	}
	return out, nil
}

func (e *memExports) openCount() (opens, closes int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.opens, e.closes
}

// waitClosed waits until every opened backend has been closed.
func (e *memExports) waitClosed(t *testing.T) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		opens, closes := e.openCount()
		if opens == closes {
			return
		}
		select {
		case <-e.closed:
		case <-deadline:
			t.Fatalf("backends not closed: %d opens, %d closes", opens, closes)
		}
	}
}

// handle is one Open's view of a shared memBackend.
type handle struct {
	*memBackend
	e    *memExports
	once sync.Once
}

func (h *handle) Close() error {
	closedTwice := true
	h.once.Do(func() {
		closedTwice = false
		h.e.mu.Lock()
		h.e.closes++
		h.e.mu.Unlock()
		h.e.closed <- struct{}{}
	})
	if closedTwice {
		return errors.New("backend closed twice")
	}
	return nil
}

// serve starts srv on a loopback listener and returns its address; the
// server is closed at the end of the test and must have served cleanly.
func serve(t *testing.T, srv *wire.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// need fails the test when a client binary is missing; these tests are the
// point of the package, so they are never skipped.
func need(t *testing.T, bin, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("%s not found: install the Debian package %s (apt-get install %s)", bin, pkg, pkg)
	}
}

// run runs a client command with a deadline, returning combined output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}
