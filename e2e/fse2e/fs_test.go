// Package fse2e mounts Shoal volumes with FUSE, in the test process, on an
// in-process cluster with a dedup tier, and drives them with system calls
// and real tools (tar, diff, cp).
package fse2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"shoal/e2e/framework"
	"shoal/services/dedup"
	shoalfs "shoal/services/fs"
	"shoal/shared/block"
	"shoal/shared/dht"

	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"
)

type env struct {
	c   *framework.Cluster
	d   *framework.Dedup
	reg *shoalfs.Registry
}

func checkFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("/dev/fuse is missing (%v): FUSE tests need the fuse device and the fuse3 package", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatal("fusermount3 not found: install the fuse3 package (apt-get install fuse3)")
	}
}

func setup(t *testing.T) *env {
	t.Helper()
	checkFUSE(t)
	c := framework.Start(t, framework.Options{Nodes: 3, MaxBlockSize: block.MaxSealed})
	d := c.StartDedup(dedup.Config{})
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	return &env{c: c, d: d, reg: shoalfs.NewRegistry(c.Client(dht.Config{CallTimeout: 10 * time.Second}), key)}
}

func (e *env) create(t *testing.T, vol string) {
	t.Helper()
	if err := e.reg.Create(context.Background(), vol, ""); err != nil {
		t.Fatal(err)
	}
}

// mount mounts vol at a fresh directory; unmount undoes it (also at test
// end).
func (e *env) mount(t *testing.T, vol string) (dir string, unmount func()) {
	t.Helper()
	return e.mountWith(t, vol, shoalfs.Config{})
}

func (e *env) mountWith(t *testing.T, vol string, cfg shoalfs.Config) (dir string, unmount func()) {
	t.Helper()
	cfg.Log = framework.Logger(t)
	fsys, err := e.reg.Open(context.Background(), vol, e.d.Client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	srv, err := fsys.Mount(dir)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	done := false
	unmount = func() {
		if done {
			return
		}
		done = true
		if err := srv.Unmount(); err != nil {
			// Busy (a failed test left a file open): detach it lazily so
			// no dead mount outlives the test.
			t.Errorf("unmount %s: %v", dir, err)
			_ = exec.Command("fusermount3", "-u", "-z", dir).Run()
		}
		served := make(chan struct{})
		go func() { srv.Wait(); close(served) }()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Errorf("the FUSE server of %s did not stop", dir)
		}
	}
	t.Cleanup(unmount)
	return dir, unmount
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func mustRead(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: read %d bytes, want %d (content differs)", path, len(got), len(want))
	}
	st, err := os.Stat(path)
	if err != nil || st.Size() != int64(len(want)) {
		t.Fatalf("%s: stat %v %v, want size %d", path, st, err, len(want))
	}
}

// retry runs a raw system call on the mount until a signal does not
// interrupt it: the Go runtime preempts goroutines with SIGURG, and a FUSE
// request interrupted before the server reads it fails with EINTR (the os
// package retries those; package syscall does not).
func retry(call func() error) error {
	for {
		if err := call(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestFiles: files of the sizes around the inline limit and a multi-MiB
// one round-trip; append, truncate (down, up, to zero) and overwrite in
// place work; all of it is still there after an unmount and a remount.
func TestFiles(t *testing.T) {
	e := setup(t)
	e.create(t, "files")
	mnt, unmount := e.mount(t, "files")
	sizes := map[string]int{"zero": 0, "one": 1, "inline": 4096, "inline+1": 4097, "big": 3 << 20}
	want := map[string][]byte{}
	for name, n := range sizes {
		want[name] = random(n)
		mustWrite(t, filepath.Join(mnt, name), want[name])
	}
	for name := range sizes {
		mustRead(t, filepath.Join(mnt, name), want[name])
	}

	// Append across the inline limit.
	f, err := os.OpenFile(filepath.Join(mnt, "inline"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	more := random(10000)
	if _, err := f.Write(more); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want["inline"] = append(want["inline"], more...)
	mustRead(t, filepath.Join(mnt, "inline"), want["inline"])

	// Truncate down into the inline range, up (zeros), and to zero.
	big := filepath.Join(mnt, "big")
	if err := os.Truncate(big, 1000); err != nil {
		t.Fatal(err)
	}
	want["big"] = want["big"][:1000]
	mustRead(t, big, want["big"])
	if err := os.Truncate(big, 5000); err != nil {
		t.Fatal(err)
	}
	want["big"] = append(want["big"], make([]byte, 4000)...)
	mustRead(t, big, want["big"])
	if err := os.Truncate(filepath.Join(mnt, "one"), 0); err != nil {
		t.Fatal(err)
	}
	want["one"] = nil
	mustRead(t, filepath.Join(mnt, "one"), nil)

	// Overwrite in the middle of a large file, through one handle that
	// also reads back before closing.
	f, err = os.OpenFile(filepath.Join(mnt, "inline+1"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	patch := random(100)
	if _, err := f.WriteAt(patch, 2000); err != nil {
		t.Fatal(err)
	}
	copy(want["inline+1"][2000:], patch)
	got := make([]byte, 4097)
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want["inline+1"]) {
		t.Fatalf("read back through the writing handle: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mustRead(t, filepath.Join(mnt, "inline+1"), want["inline+1"])

	// O_TRUNC rewrite of a large file with a smaller one.
	want["inline+1"] = random(300000)
	mustWrite(t, filepath.Join(mnt, "inline+1"), want["inline+1"])

	unmount()
	mnt2, _ := e.mount(t, "files")
	for name := range sizes {
		mustRead(t, filepath.Join(mnt2, name), want[name])
	}
}

// TestNamespace: directories, listings, renames, removals, symlinks,
// attributes and the errnos of the usual mistakes.
func TestNamespace(t *testing.T) {
	e := setup(t)
	e.create(t, "ns")
	mnt, _ := e.mount(t, "ns")
	p := func(s string) string { return filepath.Join(mnt, s) }

	if err := os.MkdirAll(p("a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"zeta", "Alpha", "beta", "_x", "a.txt", "a-1", "10", "9"}
	for _, n := range names {
		mustWrite(t, p("a/b/"+n), []byte(n))
	}
	d, err := os.Open(p("a/b"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := d.Readdirnames(-1)
	_ = d.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(names), "c")
	slices.Sort(want)
	if !slices.Equal(raw, want) {
		t.Fatalf("readdir order %q, want %q (sorted by bytes)", raw, want)
	}
	if out := run(t, mnt, "ls", "-A", "a/b"); out != strings.Join(sortedC(want), "\n")+"\n" {
		t.Fatalf("ls: %q", out)
	}
	if st, err := os.Stat(p("a/b")); err != nil || !st.IsDir() || st.Sys().(*syscall.Stat_t).Nlink != 3 {
		t.Fatalf("stat a/b: %v %v", st, err)
	}

	// Renames: within a directory, across directories, over an existing
	// file, a whole directory elsewhere.
	if err := os.Rename(p("a/b/zeta"), p("a/b/omega")); err != nil {
		t.Fatal(err)
	}
	mustRead(t, p("a/b/omega"), []byte("zeta"))
	wantErrno(t, "stat the old name", statErr(p("a/b/zeta")), syscall.ENOENT)
	if err := os.Rename(p("a/b/beta"), p("a/b/c/beta2")); err != nil {
		t.Fatal(err)
	}
	mustRead(t, p("a/b/c/beta2"), []byte("beta"))
	wantErrno(t, "stat the moved file's old name", statErr(p("a/b/beta")), syscall.ENOENT)
	if err := os.Rename(p("a/b/Alpha"), p("a/b/omega")); err != nil {
		t.Fatal(err)
	}
	mustRead(t, p("a/b/omega"), []byte("Alpha"))
	if err := os.Rename(p("a/b/c"), p("a/moved")); err != nil {
		t.Fatal(err)
	}
	mustRead(t, p("a/moved/beta2"), []byte("beta"))

	// Removal.
	wantErrno(t, "rmdir a non-empty directory", syscall.Rmdir(p("a/moved")), syscall.ENOTEMPTY)
	if err := os.Remove(p("a/moved/beta2")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Rmdir(p("a/moved")); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "stat a removed directory", statErr(p("a/moved")), syscall.ENOENT)
	wantErrno(t, "unlink a directory", retry(func() error { return syscall.Unlink(p("a/b")) }), syscall.EISDIR)
	wantErrno(t, "rmdir a file", syscall.Rmdir(p("a/b/omega")), syscall.ENOTDIR)

	// Symlinks.
	if err := os.Symlink("b/omega", p("a/link")); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(p("a/link")); err != nil || target != "b/omega" {
		t.Fatalf("readlink: %q %v", target, err)
	}
	mustRead(t, p("a/link"), []byte("Alpha"))
	if st, err := os.Lstat(p("a/link")); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("lstat link: %v %v", st, err)
	}

	// Attributes.
	if err := os.Chmod(p("a/b/omega"), 0o600); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	if err := os.Chtimes(p("a/b/omega"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p("a/b/omega"))
	if err != nil || st.Mode().Perm() != 0o600 || !st.ModTime().Equal(mtime) {
		t.Fatalf("after chmod and utimes: %v %v", st, err)
	}
	if err := os.Chown(p("a/b/omega"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p("a/b/omega")); err != nil || st.Sys().(*syscall.Stat_t).Uid != 1234 || st.Sys().(*syscall.Stat_t).Gid != 5678 {
		t.Fatalf("after chown: %v %v", st, err)
	}

	// rename(2) with RENAME_NOREPLACE refuses to replace; without, it
	// replaces.
	mustWrite(t, p("a/r1"), []byte("r1"))
	mustWrite(t, p("a/r2"), []byte("r2"))
	wantErrno(t, "RENAME_NOREPLACE over a file", retry(func() error {
		return unix.Renameat2(unix.AT_FDCWD, p("a/r1"), unix.AT_FDCWD, p("a/r2"), unix.RENAME_NOREPLACE)
	}), syscall.EEXIST)
	if err := retry(func() error {
		return unix.Renameat2(unix.AT_FDCWD, p("a/r1"), unix.AT_FDCWD, p("a/r3"), unix.RENAME_NOREPLACE)
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p("a/r3"), p("a/r2")); err != nil {
		t.Fatal(err)
	}
	mustRead(t, p("a/r2"), []byte("r1"))
	if err := os.Remove(p("a/r2")); err != nil {
		t.Fatal(err)
	}
	// A directory replaces an empty directory only.
	for _, d := range []string{"a/d1/x", "a/d2", "a/d3/y"} {
		if err := os.MkdirAll(p(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// (syscall.Rename: os.Rename refuses an existing directory itself.)
	wantErrno(t, "rename over a non-empty directory", retry(func() error { return syscall.Rename(p("a/d1"), p("a/d3")) }), syscall.ENOTEMPTY)
	if err := retry(func() error { return syscall.Rename(p("a/d1"), p("a/d2")) }); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p("a/d2/x")); err != nil || !st.IsDir() {
		t.Fatalf("after replacing a directory: %v %v", st, err)
	}
	if err := os.RemoveAll(p("a/d2")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(p("a/d3")); err != nil {
		t.Fatal(err)
	}

	// Errnos.
	wantErrno(t, "open a missing file", openErr(p("nope")), syscall.ENOENT)
	wantErrno(t, "mkdir over a directory", os.Mkdir(p("a"), 0o755), syscall.EEXIST)
	_, err = os.OpenFile(p("a/b/omega"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	wantErrno(t, "O_EXCL create of an existing file", err, syscall.EEXIST)
	long := strings.Repeat("n", 256)
	wantErrno(t, "create a 256-byte name", os.WriteFile(p(long), nil, 0o644), syscall.ENAMETOOLONG)
	mustWrite(t, p(long[:255]), []byte("max"))
	mustRead(t, p(long[:255]), []byte("max"))
	wantErrno(t, "hard link", os.Link(p("a/b/omega"), p("hard")), syscall.EPERM)
	wantErrno(t, "mkdir under a file", os.Mkdir(p("a/b/omega/x"), 0o755), syscall.ENOTDIR)
	wantErrno(t, "rename a missing file", os.Rename(p("nope"), p("nope2")), syscall.ENOENT)

	// The whole tree through find, after all that.
	out := run(t, mnt, "find", ".", "-mindepth", "1")
	lines := strings.Fields(out)
	slices.Sort(lines)
	wantTree := []string{"./" + long[:255], "./a", "./a/b", "./a/b/_x", "./a/b/10", "./a/b/9", "./a/b/a-1", "./a/b/a.txt", "./a/b/omega", "./a/link"}
	slices.Sort(wantTree)
	if !slices.Equal(lines, wantTree) {
		t.Fatalf("find: %q\nwant %q", lines, wantTree)
	}
}

func sortedC(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out) // ls -A in the C locale (exec inherits LC_ALL below)
	return out
}

func statErr(path string) error { _, err := os.Stat(path); return err }

func openErr(path string) error {
	f, err := os.Open(path)
	if err == nil {
		_ = f.Close()
	}
	return err
}

// TestTwoMounts: a second mount of the volume sees what the first closed,
// including a rewrite of a file it has already read (close-to-open, after
// the kernel's 1 s attribute timeout at most), and the reverse.
func TestTwoMounts(t *testing.T) {
	e := setup(t)
	e.create(t, "shared")
	a, _ := e.mount(t, "shared")
	b, _ := e.mount(t, "shared")
	data := random(200000)
	if err := os.MkdirAll(filepath.Join(a, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(a, "dir/f"), data)
	mustRead(t, filepath.Join(b, "dir/f"), data)

	data2 := random(300000)
	mustWrite(t, filepath.Join(a, "dir/f"), data2)
	framework.Eventually(t, 10*time.Second, "the rewrite seen by the second mount", func() bool {
		got, err := os.ReadFile(filepath.Join(b, "dir/f"))
		return err == nil && bytes.Equal(got, data2)
	})

	// fsync publishes without a close: an open on the other mount sees it.
	f, err := os.OpenFile(filepath.Join(a, "dir/synced"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	synced := random(50000)
	if _, err := f.Write(synced); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	mustRead(t, filepath.Join(b, "dir/synced"), synced)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	mustWrite(t, filepath.Join(b, "dir/g"), []byte("from b"))
	mustRead(t, filepath.Join(a, "dir/g"), []byte("from b"))
	if err := os.Remove(filepath.Join(b, "dir/g")); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 10*time.Second, "the removal seen by the first mount", func() bool {
		return errors.Is(statErr(filepath.Join(a, "dir/g")), syscall.ENOENT)
	})
}

// TestTarTree: a source tree extracted into the volume with tar reads back
// identical (diff -r), and a copy with cp -a of it too.
func TestTarTree(t *testing.T) {
	e := setup(t)
	e.create(t, "tree")
	mnt, unmount := e.mount(t, "tree")
	// A snapshot of the tree, so concurrent edits of the checkout do not
	// matter.
	src := t.TempDir()
	root, err := filepath.Abs("../../shared")
	if err != nil {
		t.Fatal(err)
	}
	run(t, src, "sh", "-c", "tar -C "+filepath.Dir(root)+" -cf - shared | tar -xf -")
	files := strings.Count(run(t, src, "find", "shared", "-type", "f"), "\n")

	start := time.Now()
	run(t, mnt, "sh", "-c", "tar -C "+src+" -cf - shared | tar -xf -")
	took := time.Since(start)
	t.Logf("tar of %d files extracted in %v (%.0f files/s)", files, took, float64(files)/took.Seconds())
	run(t, mnt, "diff", "-r", filepath.Join(src, "shared"), "shared")
	run(t, mnt, "cp", "-a", "shared", "copy")
	run(t, mnt, "diff", "-r", filepath.Join(src, "shared"), "copy")

	unmount()
	mnt2, _ := e.mount(t, "tree")
	run(t, mnt2, "diff", "-r", filepath.Join(src, "shared"), "shared")
	run(t, mnt2, "rm", "-r", "copy")
	if out := run(t, mnt2, "ls", "-A"); out != "shared\n" {
		t.Fatalf("after rm -r: %q", out)
	}
}

// TestSpaceReclaimed: deleting a file releases its data: after a
// collection the cluster holds fewer bytes again.
func TestSpaceReclaimed(t *testing.T) {
	e := setup(t)
	e.create(t, "space")
	mnt, _ := e.mount(t, "space")
	ctx := context.Background()
	p0 := e.c.PhysicalBytes()
	const size = 8 << 20
	mustWrite(t, filepath.Join(mnt, "big"), random(size))
	framework.Eventually(t, 30*time.Second, "the data on three replicas", func() bool {
		return e.c.PhysicalBytes()-p0 >= 3*size
	})
	// Rewriting releases the previous version too.
	data := random(size)
	mustWrite(t, filepath.Join(mnt, "big"), data)
	// Removed while open: still readable through the open file until it
	// is closed.
	f, err := os.Open(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "big")); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "stat a removed file", statErr(filepath.Join(mnt, "big")), syscall.ENOENT)
	got := make([]byte, size)
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading a removed file still open: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 60*time.Second, "deleted file's space reclaimed", func() bool {
		if _, err := e.d.Client.Collect(ctx, 0, false); err != nil {
			t.Fatal(err)
		}
		return e.c.PhysicalBytes()-p0 < size
	})
	var st syscall.Statfs_t
	if err := retry(func() error { return syscall.Statfs(mnt, &st) }); err != nil || st.Bsize != 4096 || st.Blocks == 0 || st.Namelen != 255 {
		t.Fatalf("statfs: %+v %v", st, err)
	}
}

// TestVolumeRegistry: volumes are listed, refused twice, and deleted with
// their data.
func TestVolumeRegistry(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.create(t, "v1")
	e.create(t, "v2")
	if err := e.reg.Create(ctx, "v1", ""); !errors.Is(err, shoalfs.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if err := e.reg.Create(ctx, "bad/name", ""); !errors.Is(err, shoalfs.ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if err := e.reg.Create(ctx, "v3", "chunk=nonsense"); !errors.Is(err, shoalfs.ErrInvalid) {
		t.Fatalf("bad policy: %v", err)
	}
	mnt, unmount := e.mount(t, "v1")
	if err := os.MkdirAll(filepath.Join(mnt, "d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(mnt, "d/e/f"), random(100000))
	unmount()
	vols, err := e.reg.List(ctx)
	if err != nil || len(vols) != 2 || vols[0].Name != "v1" || vols[1].Name != "v2" {
		t.Fatalf("list: %+v %v", vols, err)
	}
	if err := e.reg.Delete(ctx, "v1", e.d.Client); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Stat(ctx, "v1"); !errors.Is(err, shoalfs.ErrNotFound) {
		t.Fatalf("stat after delete: %v", err)
	}
	if vols, err := e.reg.List(ctx); err != nil || len(vols) != 1 {
		t.Fatalf("list after delete: %+v %v", vols, err)
	}
}

// TestConcurrentMounts: two mounts creating files in one directory at the
// same time lose none (each directory change is a compare-and-set retried
// on conflict), and two mounts rewriting one file leave one writer's
// content whole (last close wins). Both mounts take invalidations, which
// race with the changes they announce.
func TestConcurrentMounts(t *testing.T) {
	e := setup(t)
	e.create(t, "busy")
	nc, err := nats.Connect(e.c.NATS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	a, _ := e.mountWith(t, "busy", shoalfs.Config{NATS: nc})
	b, _ := e.mountWith(t, "busy", shoalfs.Config{NATS: nc})
	if err := os.Mkdir(filepath.Join(a, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	const per = 15
	errs := make(chan error, 2*per)
	var want []string
	for _, m := range []struct{ dir, tag string }{{a, "a"}, {b, "b"}} {
		for i := range per {
			name := fmt.Sprintf("%s-%02d", m.tag, i)
			want = append(want, name)
			go func() { errs <- os.WriteFile(filepath.Join(m.dir, "d", name), []byte(name), 0o644) }()
		}
	}
	for range 2 * per {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	for _, m := range []string{a, b} {
		ents, err := os.ReadDir(filepath.Join(m, "d"))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, de := range ents {
			got = append(got, de.Name())
		}
		if !slices.Equal(got, want) {
			if ino, err := e.dirInCluster("busy", "d"); err == nil {
				t.Logf("in the cluster: %q", slices.Sorted(maps.Keys(ino.Entries)))
			}
			t.Fatalf("%s lists %q, want %q", m, got, want)
		}
		for _, n := range want {
			mustRead(t, filepath.Join(m, "d", n), []byte(n))
		}
	}

	da, db := random(100000), random(70000)
	done := make(chan error, 2)
	go func() { done <- os.WriteFile(filepath.Join(a, "same"), da, 0o644) }()
	go func() { done <- os.WriteFile(filepath.Join(b, "same"), db, 0o644) }()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(filepath.Join(a, "same"))
	if err != nil || (!bytes.Equal(got, da) && !bytes.Equal(got, db)) {
		t.Fatalf("after two concurrent writers: %d bytes, %v", len(got), err)
	}
}

// dirInCluster reads a directory under the root of vol straight from the
// cluster, for diagnostics.
func (e *env) dirInCluster(vol, name string) (*shoalfs.Inode, error) {
	ctx := context.Background()
	in, err := e.reg.Stat(ctx, vol)
	if err != nil {
		return nil, err
	}
	cl := e.c.Client(dht.Config{CallTimeout: 10 * time.Second})
	m, err := cl.GetMutable(ctx, in.Root)
	if err != nil {
		return nil, err
	}
	root, err := shoalfs.DecodeInode(m.Payload)
	if err != nil {
		return nil, err
	}
	if m, err = cl.GetMutable(ctx, root.Entries[name].Addr); err != nil {
		return nil, err
	}
	return shoalfs.DecodeInode(m.Payload)
}

// TestInvalidation: with invalidations over NATS, a mount whose kernel
// would trust what it cached for an hour still sees another mount's
// rewrite, new name, removal and chmod at once.
func TestInvalidation(t *testing.T) {
	e := setup(t)
	e.create(t, "inval")
	connect := func() *nats.Conn {
		nc, err := nats.Connect(e.c.NATS.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	cfg := func() shoalfs.Config { return shoalfs.Config{Timeout: time.Hour, NATS: connect()} }
	a, _ := e.mountWith(t, "inval", cfg())
	b, _ := e.mountWith(t, "inval", cfg())
	pa, pb := func(s string) string { return filepath.Join(a, s) }, func(s string) string { return filepath.Join(b, s) }
	if err := os.Mkdir(pa("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	first := random(10000)
	mustWrite(t, pa("d/f"), first)
	mustWrite(t, pa("d/old"), []byte("old"))
	mustRead(t, pb("d/f"), first)
	mustRead(t, pb("d/old"), []byte("old"))
	if _, err := os.ReadDir(pb("d")); err != nil {
		t.Fatal(err)
	}

	second := random(30000)
	mustWrite(t, pa("d/f"), second)
	if err := os.Remove(pa("d/old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pa("d/f"), 0o600); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 10*time.Second, "the other mount's rewrite, removal and chmod", func() bool {
		got, err := os.ReadFile(pb("d/f"))
		st, serr := os.Stat(pb("d/f"))
		return err == nil && bytes.Equal(got, second) && serr == nil && st.Mode().Perm() == 0o600 &&
			errors.Is(statErr(pb("d/old")), syscall.ENOENT)
	})
	// And the other way round.
	mustWrite(t, pb("d/new"), []byte("new"))
	mustRead(t, pa("d/new"), []byte("new"))
}

// TestEncryptedVolumeKeepsNoPlaintext: an encrypted volume's files, small
// ones too (which an unencrypted volume keeps inside their inode blocks),
// leave no plaintext on the storage nodes' disks. The unencrypted volume
// is the control: its small file is found, so the scan can find one.
func TestEncryptedVolumeKeepsNoPlaintext(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	if err := e.reg.Create(ctx, "secret", "encrypt=on"); err != nil {
		t.Fatal(err)
	}
	e.create(t, "plain")
	marker := func(vol string) []byte { return []byte("SHOAL-FS-PLAINTEXT-" + vol + "-7f3a91") }
	scan := func(m []byte) bool {
		found := false
		_ = filepath.Walk(e.c.Dir(), func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() || found {
				return nil
			}
			if raw, err := os.ReadFile(p); err == nil && bytes.Contains(raw, m) {
				found = true
			}
			return nil
		})
		return found
	}
	for _, vol := range []string{"secret", "plain"} {
		mnt, _ := e.mount(t, vol)
		for _, n := range []int{100, 3000, 20000} {
			body := bytes.Repeat(append(marker(vol), '\n'), n/len(marker(vol))+1)[:n]
			mustWrite(t, filepath.Join(mnt, fmt.Sprintf("f%d", n)), body)
			mustRead(t, filepath.Join(mnt, fmt.Sprintf("f%d", n)), body)
		}
	}
	framework.Eventually(t, 10*time.Second, "the unencrypted volume's plaintext on disk (control)", func() bool { return scan(marker("plain")) })
	if scan(marker("secret")) {
		t.Fatal("plaintext of an encrypted volume found on the storage nodes' disks")
	}
}
