package framework

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DockerLog is where `make deps-docker` has dockerd log (DOCKER_LOG); a
// managed plugin's output goes there.
const DockerLog = "/var/log/shoal-dockerd.log"

// Docker runs the docker CLI and fails the test on an error.
func Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := TryDocker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TryDocker runs the docker CLI and returns its combined output.
func TryDocker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func copyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// RepoRoot is the repository's root: the first directory holding go.work
// above the test's working directory (its package directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.work above the test's directory")
		}
		dir = up
	}
}

// FSKeyDir makes a host directory holding a new file-system signing key as
// fs-signing.key, the file the volume plugin reads from its keys mount.
func FSKeyDir(t testing.TB) (dir, keyFile string) {
	t.Helper()
	dir = t.TempDir()
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	keyFile = filepath.Join(dir, "fs-signing.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(seed)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, keyFile
}

// InstallPlugin builds the Docker volume plugin as `make plugin` lays it
// out (a root file system with the binary, and stacks/plugin/config.json),
// creates it as name, applies settings (`docker plugin set`), enables it,
// and removes it at test end, after the volumes named in cleanupVolumes.
func InstallPlugin(t testing.TB, name string, settings, cleanupVolumes []string) {
	t.Helper()
	repo := RepoRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"usr/local/bin", "run/docker/plugins", "mnt/volumes", "var/lib/shoal", "tmp", "dev", "proc", "sys", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	copyFile(t, Binary(t), filepath.Join(root, "usr/local/bin/shoal"), 0o755)
	copyFile(t, filepath.Join(repo, "stacks", "plugin", "config.json"), filepath.Join(dir, "config.json"), 0o644)
	_, _ = TryDocker("plugin", "rm", "-f", name)
	Docker(t, "plugin", "create", name, dir)
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(DockerLog); err == nil {
				lines := strings.Split(string(b), "\n")
				t.Logf("--- dockerd log (tail) ---\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
			}
		}
	})
	t.Cleanup(func() {
		for _, v := range cleanupVolumes {
			_, _ = TryDocker("volume", "rm", "-f", v)
		}
		_, _ = TryDocker("plugin", "disable", "-f", name)
		if out, err := TryDocker("plugin", "rm", "-f", name); err != nil {
			t.Errorf("removing the plugin: %v %s", err, out)
		}
	})
	Docker(t, append([]string{"plugin", "set", name}, settings...)...)
	Docker(t, "plugin", "enable", name)
}

// BusyboxImage builds image (FROM scratch, the static busybox as its
// entrypoint) for containers that need a shell, and removes it at test end.
func BusyboxImage(t testing.TB, image string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox is not installed (make deps-test installs busybox-static): %v", err)
	}
	f, err := elf.Open(bb)
	if err != nil {
		t.Fatalf("%s: %v", bb, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			t.Fatalf("%s is dynamically linked: install busybox-static", bb)
		}
	}
	f.Close()
	ctxDir := t.TempDir()
	copyFile(t, bb, filepath.Join(ctxDir, "busybox"), 0o755)
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker", "build", "-q", "-t", image, ctxDir)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", image, err, out)
	}
	t.Cleanup(func() { _, _ = TryDocker("image", "rm", "-f", image) })
}
