package fse2e

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"shoal/shared/randtest"
)

// TestRandomOpsMatchLocalFS applies one random sequence of file-system
// calls (opens with O_CREAT, O_EXCL, O_TRUNC, O_APPEND; writes and reads at
// random offsets across the inline limit and the spool's memory limit
// through several open descriptors; truncates; fsync; mkdir, rmdir,
// unlink, rename, symlink, readlink; stat and readdir) to a Shoal mount
// and to a directory of the local file system, and requires the same
// outcome from both: the same errno, the same bytes, sizes and names.
// After the sequence the volume is unmounted and mounted again and its
// whole tree must equal the local one. The seed is logged;
// SHOAL_FS_MODEL_SEED replays it and SHOAL_FS_MODEL_OPS sets the length.
func TestRandomOpsMatchLocalFS(t *testing.T) {
	seed := randtest.Seed(t, "SHOAL_FS_MODEL_SEED")
	ops := randtest.Count(t, "SHOAL_FS_MODEL_OPS", 1500)
	e := setup(t)
	e.create(t, "model")
	mnt, unmount := e.mount(t, "model")
	m := &model{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x5bd1e995)), roots: [2]string{mnt, t.TempDir()}, seed: seed, outcomes: map[string]int{}}
	for m.step = 0; m.step < ops; m.step++ {
		m.randomOp()
	}
	m.closeAll()
	t.Logf("outcomes (call errno: count): %v", m.outcomes)
	unmount()
	mnt2, _ := e.mount(t, "model")
	sameTrees(t, mnt2, m.roots[1])
}

// model drives a Shoal mount (roots[0]) and a local directory (roots[1])
// with the same calls.
type model struct {
	t     *testing.T
	rng   *rand.Rand
	roots [2]string
	seed  uint64
	step  int
	open  []openPair
	// outcomes counts each kind of call by errno, to show what a run
	// exercised.
	outcomes map[string]int
	// trace holds the calls made, for the failure message.
	trace []string
}

func (m *model) note(format string, args ...any) {
	m.trace = append(m.trace, fmt.Sprintf("%d: ", m.step)+fmt.Sprintf(format, args...))
}

// openPair is one path opened the same way on both sides.
type openPair struct {
	path string
	fds  [2]int
}

func (m *model) fail(format string, args ...any) {
	m.t.Helper()
	tail := m.trace[max(0, len(m.trace)-60):]
	m.t.Fatalf("step %d (seed %d): %s\nlast calls:\n%s", m.step, m.seed, fmt.Sprintf(format, args...), strings.Join(tail, "\n"))
}

// name is a random path of depth 1 to 3 over a small alphabet, so that
// calls often meet what earlier calls made.
func (m *model) name() string {
	parts := []string{}
	for range 1 + m.rng.IntN(3) {
		parts = append(parts, string(rune('a'+m.rng.IntN(4))))
	}
	return filepath.Join(parts...)
}

// both runs call on each side and requires the same errno.
func (m *model) both(what string, call func(root string) error) error {
	m.t.Helper()
	var errs [2]error
	for i, r := range m.roots {
		errs[i] = retry(func() error { return call(r) })
	}
	m.note("%s: %v", what, errs[1])
	if errno(errs[0]) != errno(errs[1]) {
		m.fail("%s: shoal %v, local %v", what, errs[0], errs[1])
	}
	kind, _, _ := strings.Cut(what, " ")
	m.outcomes[fmt.Sprintf("%s %v", kind, errno(errs[0]))]++
	return errs[0]
}

// errno reduces an error to its errno (0 for none); an error without one
// stays distinct from every errno.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return syscall.Errno(1 << 20)
}

func (m *model) size() int {
	switch m.rng.IntN(6) {
	case 0:
		return m.rng.IntN(16)
	case 1:
		return 4090 + m.rng.IntN(12) // around the inline limit
	case 2:
		return (1 << 20) - 8 + m.rng.IntN(16) // around the spool's memory limit
	default:
		return m.rng.IntN(70_000)
	}
}

func (m *model) offset() int64 {
	switch m.rng.IntN(4) {
	case 0:
		return 0
	case 1:
		return int64(4096 + m.rng.IntN(3) - 1)
	default:
		return int64(m.rng.IntN(1_200_000))
	}
}

func (m *model) randomOp() {
	m.t.Helper()
	rng := m.rng
	switch op := rng.IntN(20); {
	case op < 4: // open
		p := m.name()
		flags := unix.O_RDWR
		if rng.IntN(3) > 0 {
			flags |= unix.O_CREAT
		}
		if rng.IntN(6) == 0 {
			flags |= unix.O_EXCL
		}
		if rng.IntN(5) == 0 {
			flags |= unix.O_TRUNC
		}
		if rng.IntN(6) == 0 {
			flags |= unix.O_APPEND
		}
		var fds [2]int
		i := 0
		err := m.both(fmt.Sprintf("open %s %#x", p, flags), func(r string) error {
			fd, err := unix.Open(filepath.Join(r, p), flags|unix.O_CLOEXEC, 0o644)
			fds[i] = fd
			i++
			return err
		})
		if err == nil {
			m.note("  -> pair %v", fds)
			m.open = append(m.open, openPair{p, fds})
		} else {
			for _, fd := range fds {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
		}
	case op < 8 && len(m.open) > 0: // write
		o := m.open[rng.IntN(len(m.open))]
		data := make([]byte, m.size())
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		off := m.offset()
		m.note("write %v (%s) %d at %d", o.fds, o.path, len(data), off)
		var ns [2]int
		for i, fd := range o.fds {
			n, err := pwriteOrWrite(fd, data, off)
			if err != nil {
				m.fail("write %d at %d to %s: side %d: %v", len(data), off, o.path, i, err)
			}
			ns[i] = n
		}
		m.outcomes["write"]++
		if ns[0] != ns[1] {
			m.fail("write to %s: %d against %d bytes", o.path, ns[0], ns[1])
		}
	case op < 10 && len(m.open) > 0: // read
		o := m.open[rng.IntN(len(m.open))]
		n, off := m.size(), m.offset()
		m.note("read %v (%s) %d at %d", o.fds, o.path, n, off)
		var got [2][]byte
		for i, fd := range o.fds {
			b := make([]byte, n)
			k, err := retryN(func() (int, error) { return unix.Pread(fd, b, off) })
			if err != nil {
				m.fail("read %d at %d of %s: side %d: %v", n, off, o.path, i, err)
			}
			got[i] = b[:k]
		}
		m.outcomes["read"]++
		if !bytes.Equal(got[0], got[1]) {
			m.fail("read %d at %d of %s: shoal %d bytes, local %d, equal %v", n, off, o.path, len(got[0]), len(got[1]), bytes.Equal(got[0], got[1]))
		}
	case op < 11 && len(m.open) > 0: // ftruncate or fsync
		o := m.open[rng.IntN(len(m.open))]
		if rng.IntN(2) == 0 {
			n := int64(m.size())
			m.note("ftruncate %v (%s) %d", o.fds, o.path, n)
			for i, fd := range o.fds {
				if err := retry(func() error { return unix.Ftruncate(fd, n) }); err != nil {
					m.fail("ftruncate %s to %d: side %d: %v", o.path, n, i, err)
				}
			}
		} else {
			m.note("fsync %v (%s)", o.fds, o.path)
			for i, fd := range o.fds {
				if err := retry(func() error { return unix.Fsync(fd) }); err != nil {
					m.fail("fsync %s: side %d: %v", o.path, i, err)
				}
			}
		}
	case op < 13 && len(m.open) > 0: // close
		k := rng.IntN(len(m.open))
		m.note("close %v (%s)", m.open[k].fds, m.open[k].path)
		m.closePair(m.open[k])
		m.open = slices.Delete(m.open, k, k+1)
	case op < 14 && rng.IntN(3) == 0: // else an rmdir: directories fill the namespace otherwise
		p := m.name()
		_ = m.both("mkdir "+p, func(r string) error { return unix.Mkdir(filepath.Join(r, p), 0o755) })
	case op < 15:
		p := m.name()
		_ = m.both("rmdir "+p, func(r string) error { return unix.Rmdir(filepath.Join(r, p)) })
	case op < 16:
		p := m.name()
		_ = m.both("unlink "+p, func(r string) error { return unix.Unlink(filepath.Join(r, p)) })
	case op < 17:
		a, b := m.name(), m.name()
		_ = m.both("rename "+a+" "+b, func(r string) error { return unix.Rename(filepath.Join(r, a), filepath.Join(r, b)) })
	case op < 18:
		p := m.name()
		target := m.name()
		_ = m.both("symlink "+p, func(r string) error { return unix.Symlink(target, filepath.Join(r, p)) })
		var links [2]string
		i := 0
		_ = m.both("readlink "+p, func(r string) error {
			b := make([]byte, 256)
			n, err := unix.Readlink(filepath.Join(r, p), b)
			if err == nil {
				links[i] = string(b[:n])
			}
			i++
			return err
		})
		if links[0] != links[1] {
			m.fail("readlink %s: %q against %q", p, links[0], links[1])
		}
	case op < 19:
		p := m.name()
		if rng.IntN(2) == 0 {
			n := int64(m.size())
			_ = m.both(fmt.Sprintf("truncate %s %d", p, n), func(r string) error { return unix.Truncate(filepath.Join(r, p), n) })
		}
		var st [2]unix.Stat_t
		i := 0
		_ = m.both("lstat "+p, func(r string) error {
			err := unix.Lstat(filepath.Join(r, p), &st[i])
			i++
			return err
		})
		if st[0].Mode&unix.S_IFMT != st[1].Mode&unix.S_IFMT || st[0].Mode&unix.S_IFMT == unix.S_IFREG && st[0].Size != st[1].Size {
			m.fail("lstat %s: shoal mode %o size %d, local mode %o size %d", p, st[0].Mode, st[0].Size, st[1].Mode, st[1].Size)
		}
	default:
		p := m.name()
		if m.rng.IntN(2) == 0 {
			p = filepath.Dir(p)
		}
		var names [2][]string
		i := 0
		_ = m.both("readdir "+p, func(r string) error {
			ents, err := os.ReadDir(filepath.Join(r, p))
			for _, e := range ents {
				names[i] = append(names[i], e.Name())
			}
			i++
			return unwrapPathError(err)
		})
		if !slices.Equal(names[0], names[1]) {
			m.fail("readdir %s: %v against %v", p, names[0], names[1])
		}
	}
}

func pwriteOrWrite(fd int, data []byte, off int64) (int, error) {
	// An O_APPEND descriptor writes at the end whatever the offset: both
	// sides get the same pwrite, and Linux appends.
	return retryN(func() (int, error) { return unix.Pwrite(fd, data, off) })
}

func retryN(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if !errors.Is(err, syscall.EINTR) {
			return n, err
		}
	}
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (m *model) closePair(o openPair) {
	m.t.Helper()
	var errs [2]error
	for i, fd := range o.fds {
		errs[i] = unix.Close(fd)
	}
	if errs[0] != nil || errs[1] != nil {
		m.fail("close %s: shoal %v, local %v", o.path, errs[0], errs[1])
	}
}

func (m *model) closeAll() {
	for _, o := range m.open {
		m.closePair(o)
	}
	m.open = nil
}

// sameTrees requires the same names, kinds, file contents and link targets
// under two directories.
func sameTrees(t *testing.T, got, want string) {
	t.Helper()
	walk := func(root string) map[string]string {
		out := map[string]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				out[rel] = "link " + target
			case d.IsDir():
				out[rel] = "dir"
			default:
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				out[rel] = fmt.Sprintf("file %d %x", len(b), b[:min(len(b), 16)]) + string(bytesSum(b))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", root, err)
		}
		return out
	}
	g, w := walk(got), walk(want)
	for k, v := range w {
		if g[k] != v {
			t.Errorf("after remount, %s: shoal %.80q, local %.80q", k, g[k], v)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("after remount, %s exists only on the mount", k)
		}
	}
}

// bytesSum is a short digest for comparing file contents in messages.
func bytesSum(b []byte) []byte {
	var h uint64 = 14695981039346656037
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return []byte(fmt.Sprintf(" %016x", h))
}

// A lookup of a file open with unflushed writes reports the written size:
// mkdir and open(O_CREAT|O_EXCL) of its name make the kernel look it up
// again, and the kernel takes the size the lookup reports. It once
// reported the last flushed size (0 here), after which stat showed 0 and
// reads through the writer's own descriptor returned nothing.
func TestUnflushedSizeSurvivesLookup(t *testing.T) {
	e := setup(t)
	e.create(t, "unflushed")
	mnt, _ := e.mount(t, "unflushed")
	p := filepath.Join(mnt, "f")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	data := []byte("written, not yet flushed")
	if _, err := retryN(func() (int, error) { return unix.Pwrite(fd, data, 0) }); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "mkdir over the open file", retry(func() error { return unix.Mkdir(p, 0o755) }), syscall.EEXIST)
	_, err = retryN(func() (int, error) { return unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644) })
	wantErrno(t, "exclusive create over the open file", err, syscall.EEXIST)
	var st unix.Stat_t
	if err := retry(func() error { return unix.Stat(p, &st) }); err != nil || st.Size != int64(len(data)) {
		t.Fatalf("stat: size %d, %v; want %d", st.Size, err, len(data))
	}
	if err := retry(func() error { return unix.Fstat(fd, &st) }); err != nil || st.Size != int64(len(data)) {
		t.Fatalf("fstat: size %d, %v; want %d", st.Size, err, len(data))
	}
	b := make([]byte, 100)
	n, err := retryN(func() (int, error) { return unix.Pread(fd, b, 0) })
	if err != nil || !bytes.Equal(b[:n], data) {
		t.Fatalf("read through the writer's descriptor: %q, %v; want %q", b[:n], err, data)
	}
}
