// Package nbde2e checks the NBD frontend end to end: volumes created with the
// CLI on a real all-in-one cluster and used by real NBD clients (libnbd's
// nbdinfo, nbdcopy and nbdfuse, qemu-io, an ext4 file system on top), flushed
// writes surviving kill -9, and, on in-process clusters, the write lease's
// fencing and space reclamation after TRIM.
package nbde2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"shoal/e2e/framework"
)

// cluster is a running all-in-one.
type cluster struct {
	proc  *framework.Proc
	data  string
	place string
	dedup string
	nbd   string // host:port
}

func startAllInOne(t *testing.T) *cluster {
	t.Helper()
	data := t.TempDir()
	p := framework.StartProc(t, "all-in-one", "serve", "-data="+data, "-nats.listen=127.0.0.1:0",
		"-placement.listen=127.0.0.1:0", "-blockstore.listen=127.0.0.1:0", "-dedup.listen=127.0.0.1:0",
		"-s3.addr=127.0.0.1:0", "-nbd.addr=127.0.0.1:0")
	return attach(t, p, data)
}

func attach(t *testing.T, p *framework.Proc, data string) *cluster {
	t.Helper()
	c := &cluster{proc: p, data: data}
	uri := p.Field("nbd", 60*time.Second)
	c.nbd = strings.TrimSuffix(strings.TrimPrefix(uri, "nbd://"), "/VOLUME")
	c.place = p.Field("placement", time.Second)
	c.dedup = p.Field("dedup", time.Second)
	return c
}

func (c *cluster) uri(vol string) string { return "nbd://" + c.nbd + "/" + vol }

// shoal runs the CLI against the cluster and returns stdout and the exit code.
func (c *cluster) shoal(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	args = append(args, "-placement="+c.place, "-data="+c.data, "-dedup="+c.dedup)
	return framework.Run(t, nil, args...)
}

func (c *cluster) create(t *testing.T, vol, size string, extra ...string) {
	t.Helper()
	out, errOut, code := c.shoal(t, append([]string{"nbd", "create", vol, "-size", size}, extra...)...)
	if code != 0 || strings.TrimSpace(out) != vol {
		t.Fatalf("nbd create %s: exit %d: %s%s", vol, code, out, errOut)
	}
}

// need fails the test, naming the package, when a client is missing.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make deps-test installs libnbd-bin, qemu-utils, fuse3): %v", tool, err)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randFile(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRealClients: a volume created with the CLI is seen, written and read
// by libnbd's tools and qemu-io, including unaligned writes, trims and
// zeroing, and holds an ext4 file system that passes fsck and reads back
// after being unmounted and mounted again over a new connection.
func TestRealClients(t *testing.T) {
	need(t, "nbdinfo", "nbdcopy", "qemu-io")
	c := startAllInOne(t)
	dir := t.TempDir()
	c.create(t, "vol1", "128M")

	var info []struct {
		Name     string `json:"export-name"`
		Size     int64  `json:"export-size"`
		CanFlush bool   `json:"can_flush"`
		CanFUA   bool   `json:"can_fua"`
		CanTrim  bool   `json:"can_trim"`
		CanZero  bool   `json:"can_zero"`
		CanMulti bool   `json:"can_multi_conn"`
	}
	var doc struct {
		Exports *json.RawMessage `json:"exports"`
	}
	if err := json.Unmarshal([]byte(run(t, "nbdinfo", "--json", c.uri("vol1"))), &doc); err != nil || doc.Exports == nil {
		t.Fatalf("nbdinfo --json: %v", err)
	}
	if err := json.Unmarshal(*doc.Exports, &info); err != nil || len(info) != 1 {
		t.Fatalf("nbdinfo exports: %v %s", err, *doc.Exports)
	}
	if e := info[0]; e.Size != 128<<20 || !e.CanFlush || !e.CanFUA || !e.CanTrim || !e.CanZero || !e.CanMulti {
		t.Fatalf("nbdinfo: %+v", e)
	}
	if list := run(t, "nbdinfo", "--list", "nbd://"+c.nbd); !strings.Contains(list, `export="vol1"`) {
		t.Fatalf("nbdinfo --list does not show vol1:\n%s", list)
	}
	if out, _, code := c.shoal(t, "nbd", "list"); code != 0 || !strings.Contains(out, "vol1") || !strings.Contains(out, "134217728") {
		t.Fatalf("shoal nbd list: exit %d\n%s", code, out)
	}

	// nbdcopy in and out, byte for byte; the rest of the volume reads as zeros.
	in := filepath.Join(dir, "in")
	want := randFile(t, in, 24<<20)
	run(t, "nbdcopy", "--flush", in, c.uri("vol1"))
	out := filepath.Join(dir, "out")
	run(t, "nbdcopy", c.uri("vol1"), out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 128<<20 || !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], make([]byte, len(got)-len(want))) {
		t.Fatal("nbdcopy round trip differs")
	}

	// qemu-io: patterns at unaligned offsets, discard, write-zeroes, FUA,
	// flush; every read checks its pattern (qemu-io fails on a mismatch).
	q := []byte(run(t, "qemu-io", "-f", "raw", c.uri("vol1"),
		"-c", "write -P 0xab 1000 70000",
		"-c", "read -P 0xab 1000 70000",
		"-c", "write -f -P 0xcd 200k 4k",
		"-c", "read -P 0xcd 200k 4k",
		"-c", "discard 1M 1M",
		"-c", "read -P 0 1M 1M",
		"-c", "write -z 3000 5000",
		"-c", "read -P 0 3000 5000",
		"-c", "read -P 0xab 8000 63000",
		"-c", "flush"))
	if bytes.Contains(q, []byte("Pattern verification failed")) || bytes.Contains(q, []byte("error")) {
		t.Fatalf("qemu-io:\n%s", q)
	}
	// A read past the end is refused, not a dropped connection.
	// (qemu-io exits 1 because one command failed.)
	q, _ = exec.Command("qemu-io", "-f", "raw", c.uri("vol1"), "-c", "read 200M 4k", "-c", "read -P 0xcd 200k 4k").CombinedOutput()
	if !strings.Contains(string(q), "read failed") || !strings.Contains(string(q), "read 4096/4096 bytes at offset 204800") {
		t.Fatalf("after an out-of-range read:\n%s", q)
	}

	t.Run("ext4", func(t *testing.T) { ext4(t, c, dir) })
}

// ext4 makes a file system on a volume through nbdfuse and a loop device.
func ext4(t *testing.T, c *cluster, dir string) {
	need(t, "nbdfuse", "mkfs.ext4", "fsck.ext4", "fusermount3")
	c.create(t, "fs1", "256M")
	mnt, fsdir := filepath.Join(dir, "nbdfuse"), filepath.Join(dir, "fs")
	for _, d := range []string{mnt, fsdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(mnt, "nbd")
	attach := func() {
		t.Helper()
		cmd := exec.Command("nbdfuse", mnt, c.uri("fs1"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if st, err := os.Stat(img); err == nil && st.Size() == 256<<20 {
				return
			}
			select {
			case err := <-exited:
				t.Fatalf("nbdfuse exited: %v\n%s", err, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("nbdfuse did not expose the volume within 30s")
			}
			time.Sleep(20 * time.Millisecond) // polling for the mount, with a deadline
		}
	}
	detach := func() {
		_ = exec.Command("umount", fsdir).Run()
		_ = exec.Command("fusermount3", "-u", mnt).Run()
	}
	t.Cleanup(detach)
	attach()
	run(t, "mkfs.ext4", "-q", "-F", img)
	run(t, "mount", "-o", "loop", img, fsdir)
	files := map[string][]byte{}
	for i := range 40 {
		name := filepath.Join(fsdir, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%d", i))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		files[name] = randFile(t, name, 1000+i*37_000)
	}
	run(t, "umount", fsdir)
	run(t, "fusermount3", "-u", mnt)
	// A new connection (the server commits on the last disconnect).
	attach()
	run(t, "fsck.ext4", "-fn", img)
	run(t, "mount", "-o", "loop", img, fsdir)
	for name, want := range files {
		got, err := os.ReadFile(name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after remount: %v", name, err)
		}
	}
}

// TestFlushedWritesSurviveKill9: a write acknowledged with FUA, and one
// followed by an acknowledged flush, read back after the whole all-in-one
// was killed with SIGKILL and restarted on its data directory.
func TestFlushedWritesSurviveKill9(t *testing.T) {
	need(t, "qemu-io")
	c := startAllInOne(t)
	c.create(t, "crash", "64M")
	// qemu-io keeps its connection open (sleep) after the acknowledged
	// writes, so the server dies with the volume open and leased.
	// stdbuf: qemu-io buffers its stdout when it is not a terminal.
	cmd := exec.Command("stdbuf", "-oL", "qemu-io", "-f", "raw", c.uri("crash"),
		"-c", "write -f -P 0x77 8M 1M",
		"-c", "write -P 0x55 20M 100k",
		"-c", "flush",
		"-c", "write -P 0x33 30M 64k",
		"-c", "sleep 60000")
	var out safeBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	framework.Eventually(t, 60*time.Second, "qemu-io's writes acknowledged", func() bool {
		return strings.Contains(out.String(), "at offset 31457280")
	})
	c.proc.Kill()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	c.proc.Restart()
	c = attach(t, c.proc, c.data)
	// The restarted server has the same lease name, so it takes the volume
	// back at once.
	q := run(t, "qemu-io", "-f", "raw", c.uri("crash"), "-c", "read -P 0x77 8M 1M", "-c", "read -P 0x55 20M 100k")
	if strings.Contains(q, "Pattern verification failed") {
		t.Fatalf("acknowledged writes lost:\n%s", q)
	}
}

// TestCLIBadInput: mistakes are usage errors (exit 2) with a message.
func TestCLIBadInput(t *testing.T) {
	c := startAllInOne(t)
	c.create(t, "exists", "1M")
	for _, args := range [][]string{
		{"nbd", "create", "bad/name", "-size", "1M"},
		{"nbd", "create", "v", "-size", "1000"},
		{"nbd", "create", "v", "-size", "lots"},
		{"nbd", "create", "v"},
		{"nbd", "create", "v", "-size", "1M", "-policy", "chunk=cdc:16k/64k/256k"},
		{"nbd", "create", "exists", "-size", "1M"},
		{"nbd", "stat", "missing"},
		{"nbd", "delete", "missing"},
		{"nbd", "frobnicate"},
	} {
		_, errOut, code := c.shoal(t, args...)
		if code != 2 || !strings.Contains(errOut, "shoal:") {
			t.Errorf("shoal %v: exit %d, stderr %q; want exit 2 and a message", args, code, errOut)
		}
	}
	// An unknown export is refused at negotiation, with the server's reason.
	need(t, "nbdinfo")
	out, err := exec.Command("nbdinfo", c.uri("missing")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "missing") {
		t.Fatalf("nbdinfo of a missing volume: %v\n%s", err, out)
	}
	// Delete works on an unused volume, and then it is gone.
	if _, errOut, code := c.shoal(t, "nbd", "delete", "exists"); code != 0 {
		t.Fatalf("delete: exit %d %s", code, errOut)
	}
	if out, _, _ := c.shoal(t, "nbd", "list"); strings.Contains(out, "exists") {
		t.Fatalf("deleted volume still listed:\n%s", out)
	}
}
