package swarm

import (
	"bytes"
	"crypto/md5" //nolint:gosec // busybox md5sum's digest, compared, not trusted.
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shoal/e2e/framework"
	"shoal/shared/edge"
)

const (
	fsPlugin  = "shoal-swarm-e2e:" + version
	fsBusybox = "shoal-swarm-busybox:" + version
	fsWriter  = stack + "-fswriter"
	fsVol     = "swarmfs"
)

// fsVolume installs the Docker volume plugin on the node as
// stacks/README.md says, pointed at the stack through the edge service's
// host port. A swarm service then writes into a volume of driver shoal, and
// the host's CLI, through the same edge, lists the volume and mounts it
// with FUSE to read the service's files back byte for byte.
func (e *env) fsVolume(t *testing.T) {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatalf("fusermount3 is not installed (make deps-test installs fuse3): %v", err)
	}
	keys, keyFile := framework.FSKeyDir(t)
	proxy := "127.0.0.1:" + edgeHostPort
	framework.InstallPlugin(t, fsPlugin, []string{"keys.source=" + keys, "SHOAL_PROXY=" + proxy,
		"SHOAL_PLACEMENT=" + placementAddr, "SHOAL_DEDUP=dedup:7300",
		"SHOAL_NATS=nats://nats1:4222,nats://nats2:4222,nats://nats3:4222"}, []string{fsVol})
	framework.BusyboxImage(t, fsBusybox)
	mustDocker(t, "volume", "create", "-d", fsPlugin, fsVol)

	t.Cleanup(func() {
		_, _ = docker(nil, time.Minute, "service", "rm", fsWriter)
		// The task's container holds the volume until it is gone.
		eventually(t, time.Minute, "writer task removed", func() (bool, string) {
			out, err := docker(nil, 30*time.Second, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name="+fsWriter)
			return err == nil && strings.TrimSpace(out) == "", out
		})
	})
	script := `set -e
busybox mkdir -p /data/dir/sub
echo written by a swarm service > /data/dir/sub/hello.txt
busybox dd if=/dev/urandom of=/data/big bs=65536 count=32 2>/dev/null
cd /data && busybox md5sum big > /data/sums`
	mustDocker(t, "service", "create", "--detach", "--name", fsWriter, "--no-resolve-image",
		"--restart-condition", "none", "--label", "shoal.e2e="+stack,
		"--mount", "type=volume,source="+fsVol+",target=/data,volume-driver="+fsPlugin,
		fsBusybox, "sh", "-c", script)
	eventually(t, 3*time.Minute, "writer service completes", func() (bool, string) {
		out, err := docker(nil, 30*time.Second, "service", "ps", fsWriter, "--no-trunc", "--format", "{{.CurrentState}} {{.Error}}")
		if err != nil {
			return false, err.Error()
		}
		if strings.HasPrefix(out, "Failed") || strings.HasPrefix(out, "Rejected") {
			t.Fatalf("writer task: %s", out)
		}
		return strings.HasPrefix(out, "Complete"), out
	})

	// The host's CLI reaches the overlay through the edge too.
	t.Setenv(edge.Env, proxy)
	out, stderr, code := framework.Run(t, nil, "fs", "list", "-placement", placementAddr, "-dedup", "dedup:7300", "-key-file", keyFile)
	if code != 0 || !strings.Contains(out, fsVol) {
		t.Fatalf("shoal fs list through the edge: exit %d\n%s%s", code, out, stderr)
	}
	dir := t.TempDir()
	mount := exec.Command(framework.Binary(t), "mount", fsVol, dir, "-placement", placementAddr,
		"-dedup", "dedup:7300", "-key-file", keyFile, "-nats", "nats://nats1:4222")
	var mlog bytes.Buffer
	mount.Stdout, mount.Stderr = &mlog, &mlog
	if err := mount.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- mount.Wait() }()
	t.Cleanup(func() {
		_ = exec.Command("fusermount3", "-u", dir).Run()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = mount.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("shoal mount output:\n%s", mlog.String())
		}
	})
	hello := filepath.Join(dir, "dir", "sub", "hello.txt")
	eventually(t, time.Minute, "the host mount shows the service's files", func() (bool, string) {
		select {
		case err := <-exited:
			t.Fatalf("shoal mount exited: %v\n%s", err, mlog.String())
		default:
		}
		_, err := os.Stat(hello)
		return err == nil, "no " + hello
	})
	b, err := os.ReadFile(hello)
	if err != nil || string(b) != "written by a swarm service\n" {
		t.Fatalf("hello.txt through the host mount: %q %v", b, err)
	}
	big, err := os.ReadFile(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	sums, err := os.ReadFile(filepath.Join(dir, "sums"))
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(big) //nolint:gosec // see import
	if len(big) != 2<<20 || !strings.HasPrefix(string(sums), hex.EncodeToString(sum[:])) {
		t.Fatalf("big through the host mount: %d bytes, md5 %x, the service wrote %q", len(big), sum, sums)
	}
}
