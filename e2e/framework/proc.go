package framework

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns the shoal binary under test: $SHOAL_BIN (set by make), or
// one built from this workspace into a temporary directory.
func Binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("SHOAL_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("SHOAL_BIN=%s: %v", b, err)
		}
		return b
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shoal-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "shoal")
		cmd := exec.Command("go", "build", "-o", binPath, "shoal/services/cmd/shoal")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building shoal: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Proc is a shoal process started by a test.
type Proc struct {
	t    testing.TB
	Name string
	Args []string
	cmd  *exec.Cmd
	log  string

	mu     sync.Mutex
	lines  []string
	notify chan struct{}
	exited chan struct{}
}

// StartProc runs `shoal args...`; its output goes to a log file that is
// shown when the test fails.
func StartProc(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, Name: name, Args: args, notify: make(chan struct{}), exited: make(chan struct{})}
	p.start()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- %s log (tail) ---\n%s", p.Name, b)
		}
	})
	return p
}

func (p *Proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(Binary(p.t), p.Args...)
	p.cmd.Env = os.Environ()
	// A test binary that dies without its cleanups (a panic, -timeout)
	// takes its processes with it instead of leaving them serving.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.CreateTemp("", "shoal-"+p.Name+"-*.log")
	if err != nil {
		p.t.Fatal(err)
	}
	p.log = logf.Name()
	p.cmd.Stderr = logf
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func() {
		sc := bufio.NewScanner(io.TeeReader(out, logf))
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.notify)
			p.notify = make(chan struct{})
			p.mu.Unlock()
		}
		_ = p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
}

// Restart starts the process again with the same arguments.
func (p *Proc) Restart() {
	p.t.Helper()
	p.mu.Lock()
	p.lines = nil
	p.mu.Unlock()
	p.start()
}

// Field waits for a banner line whose first word is key and returns its
// second word (e.g. "placement 127.0.0.1:7100" gives the address).
func (p *Proc) Field(key string, timeout time.Duration) string {
	p.t.Helper()
	return p.Fields(key, timeout)[1]
}

// Fields waits for a banner line whose first word is key and returns its
// words.
func (p *Proc) Fields(key string, timeout time.Duration) []string {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			f := strings.Fields(l)
			if len(f) >= 2 && f[0] == key {
				p.mu.Unlock()
				return f
			}
		}
		ch := p.notify
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.exited:
			p.t.Fatalf("%s exited before printing %q", p.Name, key)
		case <-deadline:
			p.t.Fatalf("%s did not print %q within %v", p.Name, key, timeout)
		}
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Run runs `shoal args...` to completion and returns stdout, stderr and the
// exit code.
func Run(t testing.TB, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Stdin = stdin
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("shoal %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}
