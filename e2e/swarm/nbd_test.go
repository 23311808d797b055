package swarm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nbdVolume creates a volume the way stacks/README.md says (inside a
// running nbd task, where the signing key is), then writes it from the host
// through the nbd service's host-mode port with nbdcopy and reads it back
// byte for byte over a new connection.
func (e *env) nbdVolume(t *testing.T) {
	if _, err := exec.LookPath("nbdcopy"); err != nil {
		t.Fatalf("nbdcopy is not installed (make deps-test installs libnbd-bin): %v", err)
	}
	c := strings.Fields(mustDocker(t, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+stack+"_nbd"))
	if len(c) == 0 {
		t.Fatal("no running nbd task")
	}
	out := mustDocker(t, "exec", c[0], shoal, "nbd", "create", "swarmvol", "-size", "32M",
		"-placement", placementAddr, "-dedup", "dedup:7300", "-key-file", "/run/secrets/nbd-signing")
	if strings.TrimSpace(out) != "swarmvol" {
		t.Fatalf("nbd create printed %q", out)
	}
	dir := t.TempDir()
	in, back := filepath.Join(dir, "in"), filepath.Join(dir, "back")
	want := randomBytes(8 << 20)
	if err := os.WriteFile(in, want, 0o600); err != nil {
		t.Fatal(err)
	}
	uri := "nbd://127.0.0.1:" + nbdHostPort + "/swarmvol"
	for _, args := range [][]string{{"--flush", in, uri}, {uri, back}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, "nbdcopy", args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("nbdcopy %v: %v\n%s", args, err, out)
		}
	}
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 32<<20 || !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], make([]byte, len(got)-len(want))) {
		t.Fatalf("volume read back differs (%d bytes)", len(got))
	}
}
