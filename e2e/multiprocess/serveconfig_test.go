package multiprocess

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"shoal/e2e/framework"
)

// A bad flag for any service makes `shoal serve` a usage error (exit 2,
// one line saying which flag) before anything starts: no port is bound
// and the data directory is not created.
func TestServeRefusesBadConfig(t *testing.T) {
	bin := framework.Binary(t)
	for _, bad := range [][]string{
		{"-blockstore.compact-dead=2"},
		{"-dedup.max-in-flight=-1"},
		{"-target=bogus"},
		{"-placement.replicas=0"},
		{"-nats.listen=nowhere"},
		{"-target=s3", "-s3.shard-split-bytes=1"},
		{"-target=nbd", "-nbd.max-dirty=1"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		args := append([]string{"serve", "-data=" + data, "-nats.listen=127.0.0.1:0", "-placement.listen=127.0.0.1:0",
			"-blockstore.listen=127.0.0.1:0", "-dedup.listen=127.0.0.1:0", "-s3.addr=127.0.0.1:0", "-nbd.addr=127.0.0.1:0"}, bad...)
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("serve %v: %v, stderr %q; want exit 2", bad, err, stderr.String())
			continue
		}
		msg := stderr.String()
		flag := strings.SplitN(strings.TrimPrefix(bad[len(bad)-1], "-"), "=", 2)[0]
		if !strings.Contains(msg, "shoal: configuration:") || strings.Contains(msg, " up") {
			t.Errorf("serve %v: stderr %q; want one configuration error before anything is up", bad, msg)
		}
		if flag != "target" && !strings.Contains(msg, strings.SplitN(flag, ".", 2)[0]) {
			t.Errorf("serve %v: stderr %q does not name the service", bad, msg)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("serve %v: data directory created (%v)", bad, err)
		}
	}
}
