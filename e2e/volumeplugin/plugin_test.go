// Package volumeplugin runs Shoal's Docker volume plugin for real: built as
// a managed plugin (the root file system and stacks/plugin/config.json, as
// `make plugin` does), enabled on the local dockerd, pointed at an
// all-in-one cluster, and used by containers through `docker volume` and
// `docker run -v`.
package volumeplugin

import (
	"strings"
	"testing"
	"time"

	"shoal/e2e/framework"
)

const (
	plugin = "shoal-e2e:test"
	bbox   = "shoal-e2e-busybox:test"
)

func docker(t *testing.T, args ...string) string {
	t.Helper()
	return framework.Docker(t, args...)
}

func tryDocker(args ...string) (string, error) { return framework.TryDocker(args...) }

// setup builds and enables the plugin against a fresh all-in-one and
// builds a busybox image for the containers. Everything goes at test end.
func setup(t *testing.T) (data, place, keyFile string) {
	if _, err := tryDocker("info"); err != nil {
		t.Fatalf("docker is not running (make test starts it: make deps-docker): %v", err)
	}
	data = t.TempDir()
	p := framework.StartProc(t, "all-in-one", "serve", "-data="+data, "-nats.listen=127.0.0.1:0",
		"-placement.listen=127.0.0.1:0", "-blockstore.listen=127.0.0.1:0", "-dedup.listen=127.0.0.1:0",
		"-s3.addr=127.0.0.1:0", "-nbd.addr=127.0.0.1:0")
	place = p.Field("placement", 60*time.Second)
	dedup := p.Field("dedup", time.Second)
	natsURL := p.Field("nats", time.Second)

	// The signing key, in a host directory the plugin mounts read-only.
	keys, keyFile := framework.FSKeyDir(t)
	framework.InstallPlugin(t, plugin, []string{"keys.source=" + keys, "SHOAL_PLACEMENT=" + place,
		"SHOAL_DEDUP=" + dedup, "SHOAL_NATS=" + natsURL}, []string{"pv1"})
	// A container image with a shell: busybox, static, FROM scratch.
	framework.BusyboxImage(t, bbox)
	return data, place, keyFile
}

// sh runs a busybox shell script in a container with volume vol at /data.
func sh(t *testing.T, vol, script string) string {
	t.Helper()
	return docker(t, "run", "--rm", "--pull", "never", "-v", vol+":/data", bbox, "sh", "-c", script)
}

// TestVolumePlugin: a volume created with `docker volume create -d` is
// written by one container and read back by another, through a plugin
// restart (the files live in the cluster, not on the node), is seen by the
// CLI, and `docker volume rm` deletes it from the cluster.
func TestVolumePlugin(t *testing.T) {
	data, place, keyFile := setup(t)
	docker(t, "volume", "create", "-d", plugin, "--opt", "policy=compress=zstd:1", "pv1")
	if out := docker(t, "volume", "ls", "-q", "-f", "driver="+plugin); !strings.Contains(out, "pv1") {
		t.Fatalf("docker volume ls: %q", out)
	}
	// busybox applets by name need its standalone shell; call them through
	// busybox to be independent of how it was built.
	sh(t, "pv1", `set -e
busybox mkdir -p /data/dir/sub
echo hello from a container > /data/dir/sub/hello.txt
busybox dd if=/dev/urandom of=/data/big bs=65536 count=48 2>/dev/null
cd /data && busybox md5sum big dir/sub/hello.txt > /data/sums`)
	out := sh(t, "pv1", `set -e; cd /data && busybox md5sum -c sums && busybox cat dir/sub/hello.txt && busybox ls -l big`)
	if !strings.Contains(out, "big: OK") || !strings.Contains(out, "hello from a container") || !strings.Contains(out, "3145728") {
		t.Fatalf("second container reads:\n%s", out)
	}
	// Nothing is kept on the node: a restarted plugin serves the same files.
	// (-f: the volume holds a reference to the plugin; no container
	// uses it now.)
	docker(t, "plugin", "disable", "-f", plugin)
	docker(t, "plugin", "enable", plugin)
	if out := sh(t, "pv1", `cd /data && busybox md5sum -c sums`); !strings.Contains(out, "big: OK") {
		t.Fatalf("after a plugin restart:\n%s", out)
	}
	// Two containers at once share one mount; both see each other's files.
	docker(t, "run", "-d", "--name", "pv1-holder", "--pull", "never", "-v", "pv1:/data", bbox, "sleep", "600")
	t.Cleanup(func() { _, _ = tryDocker("rm", "-f", "pv1-holder") })
	sh(t, "pv1", `echo second > /data/second.txt`)
	if out := docker(t, "exec", "pv1-holder", "/bin/busybox", "cat", "/data/second.txt"); strings.TrimSpace(out) != "second" {
		t.Fatalf("the other container sees %q", out)
	}
	if _, err := tryDocker("volume", "rm", "pv1"); err == nil {
		t.Fatal("a volume in use was removed")
	}
	docker(t, "rm", "-f", "pv1-holder")
	// The CLI sees the volume in the cluster; removing it deletes it there.
	list := func() string {
		o, e, code := framework.Run(t, nil, "fs", "list", "-placement", place, "-data", data, "-key-file", keyFile)
		if code != 0 {
			t.Fatalf("shoal fs list: exit %d %s", code, e)
		}
		return o
	}
	if !strings.Contains(list(), "pv1") {
		t.Fatal("shoal fs list does not show the plugin's volume")
	}
	docker(t, "volume", "rm", "pv1")
	if strings.Contains(list(), "pv1") {
		t.Fatal("docker volume rm left the volume in the cluster")
	}
}
