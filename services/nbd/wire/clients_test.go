package wire_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"shoal/services/nbd/wire"
)

// These tests drive the server with the real clients that will use it:
// libnbd's tools, qemu and (through nbdfuse) the kernel's ext4.

type nbdinfoExport struct {
	Name         string `json:"export-name"`
	Description  string `json:"description"`
	Size         int64  `json:"export-size"`
	ReadOnly     bool   `json:"is_read_only"`
	CanFlush     bool   `json:"can_flush"`
	CanFUA       bool   `json:"can_fua"`
	CanMultiConn bool   `json:"can_multi_conn"`
	CanTrim      bool   `json:"can_trim"`
	CanZero      bool   `json:"can_zero"`
	MinBlock     uint32 `json:"block_size_minimum"`
	PrefBlock    uint32 `json:"block_size_preferred"`
	MaxBlock     uint32 `json:"block_size_maximum"`
}

func nbdinfo(t *testing.T, args ...string) []nbdinfoExport {
	t.Helper()
	out := mustRun(t, "nbdinfo", append([]string{"--json"}, args...)...)
	var v struct {
		Protocol string          `json:"protocol"`
		Exports  []nbdinfoExport `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("nbdinfo output: %v\n%s", err, out)
	}
	if v.Protocol != "newstyle-fixed" {
		t.Errorf("protocol %q, want newstyle-fixed", v.Protocol)
	}
	return v.Exports
}

func TestNbdinfo(t *testing.T) {
	need(t, "nbdinfo", "libnbd-bin")
	ex := newExports()
	ex.add(wire.ExportInfo{Name: "disk", Description: "scratch disk", PreferredBlockSize: 64 << 10}, newMem(16<<20))
	ex.add(wire.ExportInfo{Name: "ro", ReadOnly: true}, newMem(1<<20))
	addr := serve(t, &wire.Server{Exports: ex, MaxRequest: 8 << 20})

	got := nbdinfo(t, "nbd://"+addr+"/disk")
	want := nbdinfoExport{Name: "disk", Description: "scratch disk", Size: 16 << 20,
		CanFlush: true, CanFUA: true, CanMultiConn: true, CanTrim: true, CanZero: true,
		MinBlock: 1, PrefBlock: 64 << 10, MaxBlock: 8 << 20}
	if len(got) != 1 || got[0] != want {
		t.Errorf("nbdinfo disk:\n got %+v\nwant %+v", got, want)
	}

	got = nbdinfo(t, "nbd://"+addr+"/ro")
	want = nbdinfoExport{Name: "ro", Size: 1 << 20, ReadOnly: true, CanFlush: true, CanMultiConn: true,
		MinBlock: 1, PrefBlock: 4096, MaxBlock: 8 << 20}
	if len(got) != 1 || got[0] != want {
		t.Errorf("nbdinfo ro:\n got %+v\nwant %+v", got, want)
	}

	list := nbdinfo(t, "--list", "nbd://"+addr)
	names := map[string]int64{}
	for _, e := range list {
		names[e.Name] = e.Size
	}
	if len(names) != 2 || names["disk"] != 16<<20 || names["ro"] != 1<<20 {
		t.Errorf("nbdinfo --list: %+v", list)
	}

	out, err := run(t, "nbdinfo", "nbd://"+addr+"/nope")
	if err == nil || !strings.Contains(out, "nope") {
		t.Errorf("nbdinfo of an unknown export: err %v, output:\n%s", err, out)
	}
	ex.waitClosed(t)
}

func TestNbdcopyRoundTrip(t *testing.T) {
	need(t, "nbdcopy", "libnbd-bin")
	const size = 8 << 20
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(size))
	addr := serve(t, &wire.Server{Exports: ex})
	uri := "nbd://" + addr + "/disk"

	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	want := make([]byte, size)
	_, _ = rand.Read(want)
	if err := os.WriteFile(in, want, 0o600); err != nil {
		t.Fatal(err)
	}
	// nbdcopy opens several connections (CAN_MULTI_CONN) and keeps many
	// requests in flight on each.
	mustRun(t, "nbdcopy", in, uri)
	if !bytes.Equal(mem.snapshot(), want) {
		t.Fatal("export content differs from the file copied in")
	}
	if c := mem.counts(); c.flushes == 0 {
		t.Errorf("nbdcopy did not flush: %+v", c)
	}
	mustRun(t, "nbdcopy", uri, out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("file copied out differs from the one copied in")
	}
	ex.waitClosed(t)
}

func TestQemuIO(t *testing.T) {
	need(t, "qemu-io", "qemu-utils")
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(4<<20))
	for i := range mem.data {
		mem.data[i] = 0x5a // so that zeroing is visible
	}
	addr := serve(t, &wire.Server{Exports: ex})

	out := mustRun(t, "qemu-io", "-f", "raw", "-t", "writeback", "nbd://"+addr+"/disk",
		"-c", "write -P 0xab 0 1M",
		"-c", "read -P 0xab 0 1M",
		"-c", "discard 0 64k",
		"-c", "read -P 0 0 64k",
		"-c", "write -z 1M 1M",
		"-c", "read -P 0 1M 1M",
		"-c", "write -f -P 0xcd 2M 4k",
		"-c", "read -P 0x5a 3M 1M",
		"-c", "flush")
	if strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io reported a failure:\n%s", out)
	}

	c := mem.counts()
	if c.trims == 0 || c.zeroes == 0 || c.flushes == 0 || c.fuaWrites == 0 {
		t.Errorf("backend missed trim, write zeroes, flush or FUA write: %+v", c)
	}
	data := mem.snapshot()
	check := func(from, to int, b byte) {
		t.Helper()
		for i := from; i < to; i++ {
			if data[i] != b {
				t.Errorf("byte %d is %#x, want %#x", i, data[i], b)
				return
			}
		}
	}
	check(0, 64<<10, 0)
	check(64<<10, 1<<20, 0xab)
	check(1<<20, 2<<20, 0)
	check(2<<20, 2<<20+4096, 0xcd)
	check(2<<20+4096, 4<<20, 0x5a)
	ex.waitClosed(t)
}

func TestQemuIOBackendErrors(t *testing.T) {
	need(t, "qemu-io", "qemu-utils")
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "disk"}, newMem(4<<20))
	mem.fail = func(op string, off, _ int64) error {
		switch {
		case op == "read" && off == 1<<20:
			return errors.New("injected read fault")
		case op == "write" && off == 2<<20:
			return fmt.Errorf("injected: %w", wire.ErrNoSpace)
		}
		return nil
	}
	addr := serve(t, &wire.Server{Exports: ex})

	out, err := run(t, "qemu-io", "-f", "raw", "-t", "writeback", "nbd://"+addr+"/disk",
		"-c", "write -P 0x11 0 64k",
		"-c", "read 1M 4k",
		"-c", "read -P 0x11 0 64k",
		"-c", "write -P 0x22 2M 4k",
		"-c", "write -P 0x33 64k 4k",
		"-c", "read -P 0x33 64k 4k")
	if err == nil {
		t.Errorf("qemu-io succeeded despite injected faults:\n%s", out)
	}
	for _, want := range []string{
		"read failed: Input/output error",
		"read 65536/65536 bytes at offset 0",
		"write failed: No space left on device",
		"wrote 4096/4096 bytes at offset 65536",
		"read 4096/4096 bytes at offset 65536",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("qemu-io output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Pattern verification failed") {
		t.Errorf("data corrupted:\n%s", out)
	}
	// One open means every command, before and after the failures, used
	// the same connection.
	ex.waitClosed(t)
	if opens, _ := ex.openCount(); opens != 1 {
		t.Errorf("%d connections, want 1", opens)
	}
}

// TestExt4OverNbdfuse puts a real filesystem on the export: nbdfuse exposes
// it as a file, the kernel mounts that through a loop device.
func TestExt4OverNbdfuse(t *testing.T) {
	need(t, "nbdfuse", "libnbd-bin")
	need(t, "fusermount3", "fuse3")
	need(t, "mkfs.ext4", "e2fsprogs")
	need(t, "fsck.ext4", "e2fsprogs")
	if os.Geteuid() != 0 {
		t.Fatal("TestExt4OverNbdfuse mounts filesystems and must run as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("/dev/fuse is required: %v", err)
	}

	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: "fs"}, newMem(64<<20))
	addr := serve(t, &wire.Server{Exports: ex})

	dir := t.TempDir()
	mnt, fs := filepath.Join(dir, "mnt"), filepath.Join(dir, "fs")
	for _, d := range []string{mnt, fs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	image := filepath.Join(mnt, "nbd")

	fuse := exec.Command("nbdfuse", mnt, "nbd://"+addr+"/fs")
	var fuseOut bytes.Buffer
	fuse.Stdout, fuse.Stderr = &fuseOut, &fuseOut
	if err := fuse.Start(); err != nil {
		t.Fatal(err)
	}
	fuseDone := make(chan error, 1)
	go func() { fuseDone <- fuse.Wait() }()
	fuseExited := false
	unmountFuse := func() error {
		// The loop device lets go of the image asynchronously after
		// umount, so the FUSE mount can be busy for a moment.
		err := poll(30*time.Second, func() error {
			out, err := run(t, "fusermount3", "-u", mnt)
			if err != nil {
				return fmt.Errorf("fusermount3 -u: %v: %s", err, out)
			}
			return nil
		})
		if err != nil {
			return err
		}
		select {
		case err := <-fuseDone:
			fuseExited = true
			if err != nil {
				return fmt.Errorf("nbdfuse: %v\n%s", err, fuseOut.String())
			}
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("nbdfuse did not exit after unmount:\n%s", fuseOut.String())
		}
	}
	// Registered before the mount cleanup, so it runs after it.
	t.Cleanup(func() {
		if fuseExited {
			return
		}
		if err := unmountFuse(); err != nil {
			t.Error(err)
			_, _ = run(t, "fusermount3", "-uz", mnt)
			_ = fuse.Process.Kill()
			<-fuseDone
		}
	})

	// nbdfuse serves the file only once it has connected.
	err := poll(30*time.Second, func() error {
		select {
		case err := <-fuseDone:
			fuseExited = true
			t.Fatalf("nbdfuse exited: %v\n%s", err, fuseOut.String())
		default:
		}
		st, err := os.Stat(image)
		if err == nil && st.Size() != 64<<20 {
			err = fmt.Errorf("%s has size %d", image, st.Size())
		}
		return err
	})
	if err != nil {
		t.Fatalf("nbdfuse: %v\n%s", err, fuseOut.String())
	}

	mustRun(t, "mkfs.ext4", "-q", "-F", image)
	mounted := false
	mount := func() {
		mustRun(t, "mount", "-o", "loop", image, fs)
		mounted = true
	}
	umount := func() {
		mustRun(t, "umount", fs)
		mounted = false
	}
	t.Cleanup(func() {
		if mounted {
			_, _ = run(t, "umount", "-l", fs)
		}
	})

	files := map[string][]byte{"small.txt": []byte("hello, shoal\n")}
	for _, n := range []int{1 << 20, 3<<20 + 12345} {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		files[fmt.Sprintf("random-%d", n)] = b
	}
	mount()
	if err := os.Mkdir(filepath.Join(fs, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(fs, "sub", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	syscall.Sync()
	umount()

	mustRun(t, "fsck.ext4", "-fn", image)

	mount()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(fs, "sub", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs after remount", name)
		}
	}
	umount()
	if err := unmountFuse(); err != nil {
		t.Fatal(err)
	}

	if c := mem.counts(); c.writes == 0 || c.reads == 0 || c.flushes == 0 {
		t.Errorf("backend missed reads, writes or flushes: %+v", c)
	}
	ex.waitClosed(t)
}

// poll retries f until it succeeds or timeout passes, for conditions that
// external processes bring about with no way to be notified.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
