package multiprocess

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"shoal/e2e/framework"
)

// TestJournalOfKilledDedup: a dedup process killed with SIGKILL leaves its
// root journal unfolded. Another process's collections still find the
// roots in it; a process with a short retirement delay retires it (folds
// it into the root set), and the data stays. (The process that checks the
// journal first keeps the default delay, so that it cannot retire the
// journal before the check, however slowly it starts.)
func TestJournalOfKilledDedup(t *testing.T) {
	c := framework.StartProcCluster(t, 3)
	startDedup := func(name string, args ...string) (*framework.Proc, string) {
		t.Helper()
		p := framework.StartProc(t, name, append([]string{"serve", "-target=dedup", "-nats.url=" + c.NATSURL,
			"-dht.placement=" + strings.Join(c.Places, ","), "-dedup.listen=127.0.0.1:0",
			"-data=" + filepath.Join(c.Dir, "front")}, args...)...) // one master key
		return p, p.Field("dedup", 60*time.Second)
	}
	run := func(args ...string) string {
		t.Helper()
		out, stderr, code := framework.Run(t, nil, args...)
		if code != 0 {
			t.Fatalf("shoal %v: exit %d: %s", args, code, stderr)
		}
		return out
	}
	dir := t.TempDir()
	data := make([]byte, 1<<20+7)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}

	first, addr := startDedup("dedup-1")
	ref := strings.TrimSpace(run("put", "-dedup", addr, in))
	first.Kill()

	// A second process, with the default retirement delay: the killed
	// process's journal is still registered, and counted.
	second, addr := startDedup("dedup-2")
	journals := func() (n, entries int) {
		t.Helper()
		for l := range strings.Lines(run("df", "-dedup", addr)) {
			if f := strings.Fields(l); len(f) >= 4 && f[0] == "root" && f[1] == "journals" {
				return atoi(t, f[2]), atoi(t, strings.TrimPrefix(f[3], "("))
			}
		}
		t.Fatal("shoal df printed no root journals line")
		return
	}
	check := func(when string) {
		t.Helper()
		run("gc", "-dedup", addr, "-grace", "0s")
		out := filepath.Join(dir, "out")
		run("get", "-dedup", addr, "-o", out, ref)
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: read back %d bytes (%v), want the %d put", when, len(got), err, len(data))
		}
	}
	if n, e := journals(); n != 1 || e != 1 {
		t.Fatalf("after the kill: %d journals with %d entries, want the killed process's, with its one root", n, e)
	}
	check("collected with the root in the killed process's journal")

	// A third, quick to retire silent journals, folds it.
	second.Kill()
	_, addr = startDedup("dedup-3", "-dedup.journal-retire-after=1s")
	framework.Eventually(t, 60*time.Second, "the silent journal retired", func() bool {
		n, _ := journals()
		return n == 0
	})
	check("collected after the journal was folded")
	if df := run("df", "-dedup", addr); !strings.Contains(df, "logical bytes     "+strconv.Itoa(len(data))+" ") {
		t.Fatalf("df after the fold does not count the root's %d bytes:\n%s", len(data), df)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("shoal df: %q is not a number", s)
	}
	return n
}
