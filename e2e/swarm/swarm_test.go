// Package swarm deploys stacks/shoal.yml on a single-node Docker swarm and
// checks what only a real swarm shows: the image and stack files work, the
// NATS members form one cluster, a client container on the overlay network
// reads what it wrote, directly and through the S3 frontend (and through its
// host-mode port), the S3 and storage tiers scale while a client writes
// through S3, a killed storage task comes back with its silo, and traces span
// several containers (client → storage; S3 → dedup → storage).
//
// Docker is required: without it the suite fails (make deps-docker installs
// and starts it). The suite builds its images, creates a swarm when there is
// none, and removes everything it made, the swarm included, when it is done.
package swarm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/e2e/framework"
)

const (
	// The stack's name and subnet differ from `make swarm-up`'s defaults so
	// the suite can run beside a developer's stack.
	stack   = "shoale2e"
	subnet  = "10.232.0.0/24"
	network = stack + "_net"
	version = "e2e"
	image   = "shoal:" + version
	probe   = "shoal-probe:" + version
	client  = stack + "-client"
	// Resolves to every placement task (the stack uses dnsrr endpoints).
	placementAddr = "placement:7100"
	shoal         = "/usr/local/bin/shoal"
	probeBin      = "/usr/local/bin/probe"
	// The s3-edge service's host-mode port; not 9000, so the suite runs
	// beside a `make swarm-up` stack.
	s3HostPort = "19000"
	// The nbd service's host-mode port, likewise not NBD's 10809.
	nbdHostPort = "20809"
	// The edge service's host-mode port, likewise not 7400.
	edgeHostPort = "17400"
	bucket       = "e2e"
)

// secrets are the stack's external swarm secrets (stacks/shoal.yml).
var secrets = []string{stack + "_dedup-master", stack + "_s3-signing", stack + "_nbd-signing"}

type env struct {
	t    *testing.T
	root string
	// An S3 access key, created in an S3 task by S3PutGet.
	s3ID, s3Secret string
}

// TestSwarm runs the scenarios in order on one deployment: deploying is the
// expensive part, and the later scenarios build on the earlier ones' data.
func TestSwarm(t *testing.T) {
	e := setup(t)
	var written, objects []block
	t.Run("PutGetFromClientContainer", func(t *testing.T) { written = append(written, e.putGet(t)...) })
	t.Run("S3PutGet", func(t *testing.T) { objects = append(objects, e.s3PutGet(t)...) })
	t.Run("NBDVolume", e.nbdVolume)
	t.Run("FSVolumeThroughPlugin", e.fsVolume)
	t.Run("NATSIsOneCluster", e.natsCluster)
	t.Run("TraceSpansContainers", e.traceAcrossContainers)
	t.Run("S3TraceSpansTiers", e.s3Trace)
	t.Run("ScaleWhileWritingThroughS3", func(t *testing.T) {
		b, o := e.scaleWhileWriting(t)
		written, objects = append(written, b...), append(objects, o...)
	})
	t.Run("KillStorageTask", func(t *testing.T) { e.killStorageTask(t, written, objects) })
}

// docker runs the docker CLI and returns its stdout; stderr goes into the
// error.
func docker(stdin []byte, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := docker(nil, 2*time.Minute, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls cond until it reports done or the deadline passes; the
// condition's last detail goes into the failure.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, timeout, detail)
		}
		time.Sleep(500 * time.Millisecond) // poll interval
	}
}

func setup(t *testing.T) *env {
	root := framework.RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "stacks", "shoal.yml")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	e := &env{t: t, root: root}

	// make images also installs and starts docker when it is missing
	// (deps-docker), so a failure here is docker being unavailable.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	mk := exec.CommandContext(ctx, "make", "-C", root, "images", "VERSION="+version)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make images failed; the swarm suite needs a working docker daemon (make deps-docker): %v\n%s", err, out)
	}
	state, err := docker(nil, 30*time.Second, "info", "-f", "{{.Swarm.LocalNodeState}}")
	if err != nil {
		t.Fatalf("docker daemon not available; the swarm suite needs it (make deps-docker): %v", err)
	}
	createdSwarm := false
	_, err = docker(nil, 30*time.Second, "network", "inspect", "docker_gwbridge")
	hadGWBridge := err == nil
	switch strings.TrimSpace(state) {
	case "active":
	case "inactive":
		if _, err := docker(nil, time.Minute, "swarm", "init", "--advertise-addr", "127.0.0.1"); err != nil {
			t.Fatalf("cannot create a swarm: %v", err)
		}
		createdSwarm = true
	default:
		t.Fatalf("docker swarm is %q on this host; need active or inactive", strings.TrimSpace(state))
	}
	// A run killed by -timeout skips its cleanup; start from nothing.
	if err := removeStack(); err != nil {
		t.Fatalf("leftovers of an earlier run: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpState(t)
		}
		if err := removeStack(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if createdSwarm {
			if _, err := docker(nil, time.Minute, "swarm", "leave", "--force"); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			// swarm init created it, and leaving the swarm keeps it.
			if !hadGWBridge {
				_, _ = docker(nil, time.Minute, "network", "rm", "docker_gwbridge")
			}
		}
	})
	e.buildProbe()
	e.deploy()
	e.waitHealthy(3*time.Minute, 4)
	return e
}

// createSecrets creates the stack's swarm secrets, 32 random bytes in hex
// each, as make swarm-up does.
func createSecrets(t *testing.T) {
	for _, name := range secrets {
		if _, err := docker(nil, 30*time.Second, "secret", "inspect", name); err == nil {
			continue
		}
		mustDockerIn(t, []byte(hex.EncodeToString(randomBytes(32))), "secret", "create", name, "-")
	}
}

func mustDockerIn(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	out, err := docker(stdin, 2*time.Minute, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// buildProbe builds the helper image: the shoal image plus e2e/swarm/probe.
func (e *env) buildProbe() {
	t := e.t
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "probe"), "./probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building probe: %v\n%s", err, out)
	}
	df, err := os.ReadFile("probe/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	b := exec.Command("docker", "build", "-q", "--build-arg", "BASE="+image, "-t", probe, dir)
	b.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := b.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", probe, err, out)
	}
}

func (e *env) deploy() {
	t := e.t
	cfg, err := os.ReadFile(filepath.Join(e.root, "stacks", "config", "shoal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cfg)
	createSecrets(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "stack", "deploy", "--resolve-image", "never",
		"-c", filepath.Join(e.root, "stacks", "shoal.yml"), "-c", "testdata/otlp.yml", stack)
	cmd.Env = append(os.Environ(),
		"SHOAL_IMAGE="+image, "SHOAL_STACK="+stack, "SHOAL_SUBNET="+subnet,
		"SHOAL_CONFIG_HASH="+hex.EncodeToString(sum[:6]), "SHOAL_BLOCKSTORES=4",
		"SHOAL_DEDUPS=2", "SHOAL_S3S=2", "SHOAL_S3_PORT="+s3HostPort,
		"SHOAL_NBD_PORT="+nbdHostPort, "SHOAL_EDGE_PORT="+edgeHostPort,
		"SHOAL_PROBE_IMAGE="+probe,
		// Every task exports its spans to the suite's receiver.
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://otlp:4317")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker stack deploy: %v\n%s", err, out)
	}
	// The client container, for `docker exec`: a fresh `docker run` per
	// command costs a second or two, an exec a tenth of that. Not labelled
	// with the stack namespace, so the health wait ignores it.
	mustDocker(t, "run", "-d", "--pull", "never", "--name", client, "--network", network, "--no-healthcheck",
		"--label", "shoal.e2e="+stack, probe, "idle")
}

// waitHealthy waits until every service runs all its replicas, no task is
// starting or unhealthy, and placement lists at least nodes storage nodes up.
func (e *env) waitHealthy(timeout time.Duration, nodes int) {
	t := e.t
	t.Helper()
	eventually(t, timeout, "stack healthy", func() (bool, string) {
		out, err := docker(nil, 30*time.Second, "service", "ls", "--filter", "label=com.docker.stack.namespace="+stack,
			"--format", "{{.Name}} {{.Replicas}}")
		if err != nil {
			return false, err.Error()
		}
		var bad []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			run, want, _ := strings.Cut(f[1], "/")
			if run != want || want == "0" {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 || out == "" {
			return false, fmt.Sprintf("services: %v", bad)
		}
		ps, err := docker(nil, 30*time.Second, "ps", "--filter", "label=com.docker.stack.namespace="+stack, "--format", "{{.Names}} {{.Status}}")
		if err != nil {
			return false, err.Error()
		}
		for _, l := range strings.Split(ps, "\n") {
			if strings.Contains(l, "health: starting") || strings.Contains(l, "unhealthy") {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			return false, fmt.Sprintf("containers: %v", bad)
		}
		v, err := status()
		if err != nil {
			return false, err.Error()
		}
		if up := v.up(); len(up) < nodes {
			return false, fmt.Sprintf("%d storage nodes up, want %d", len(up), nodes)
		}
		return true, ""
	})
}

// removeStack removes the suite's stack, client container, volumes and
// network, waiting for each to be gone.
func removeStack() error {
	ns := "label=com.docker.stack.namespace=" + stack
	if ids, _ := docker(nil, 30*time.Second, "ps", "-aq", "--filter", "label=shoal.e2e="+stack); strings.TrimSpace(ids) != "" {
		if _, err := docker(nil, time.Minute, append([]string{"rm", "-f"}, strings.Fields(ids)...)...); err != nil {
			return err
		}
	}
	if out, _ := docker(nil, 30*time.Second, "service", "ls", "-q", "--filter", ns); strings.TrimSpace(out) != "" {
		if _, err := docker(nil, time.Minute, "stack", "rm", stack); err != nil {
			return err
		}
	}
	var left string
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		left = ""
		for _, what := range [][]string{{"service", "ls", "-q"}, {"ps", "-aq"}, {"volume", "ls", "-q"}, {"network", "ls", "-q"}, {"config", "ls", "-q"}} {
			out, err := docker(nil, 30*time.Second, append(what, "--filter", ns)...)
			if err != nil {
				return err
			}
			ids := strings.Fields(out)
			if len(ids) == 0 {
				continue
			}
			left += fmt.Sprintf(" %s:%v", what[0], ids)
			// Volumes and networks go once no container holds them; stack
			// rm leaves volumes behind for good.
			switch what[0] {
			case "volume", "network", "config":
				_, _ = docker(nil, 30*time.Second, append([]string{what[0], "rm"}, ids...)...)
			}
		}
		if left == "" {
			// External secrets: stack rm keeps them; they go once no
			// service uses them.
			for _, name := range secrets {
				if _, err := docker(nil, 30*time.Second, "secret", "inspect", name); err == nil {
					if _, err := docker(nil, 30*time.Second, "secret", "rm", name); err != nil {
						left += " secret:" + name
					}
				}
			}
		}
		if left == "" {
			return nil
		}
		time.Sleep(time.Second) // poll interval
	}
	return fmt.Errorf("stack %s not removed within 2m:%s", stack, left)
}

func dumpState(t *testing.T) {
	out, _ := docker(nil, 30*time.Second, "service", "ls", "--filter", "label=com.docker.stack.namespace="+stack)
	t.Logf("services:\n%s", out)
	out, _ = docker(nil, 30*time.Second, "ps", "-a", "--filter", "label=com.docker.stack.namespace="+stack, "--format", "{{.ID}} {{.Names}} {{.Status}}")
	t.Logf("containers:\n%s", out)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 && !strings.Contains(f[1], "_otlp.") {
			logs, _ := exec.Command("docker", "logs", "--tail", "15", f[0]).CombinedOutput()
			t.Logf("--- %s ---\n%s", f[1], logs)
		}
	}
}

// shoalExec runs the shoal CLI in the client container.
func shoalExec(stdin []byte, args ...string) (string, error) {
	a := []string{"exec"}
	if stdin != nil {
		a = append(a, "-i")
	}
	a = append(append(a, client, shoal), args...)
	return docker(stdin, time.Minute, a...)
}

type node struct {
	ID     string      `json:"id"`
	Addr   string      `json:"addr"`
	Zone   string      `json:"zone"`
	State  string      `json:"state"`
	Blocks json.Number `json:"blocks"`
}

type view struct {
	Nodes []node `json:"nodes"`
}

func (v view) up() map[string]node {
	out := map[string]node{}
	for _, n := range v.Nodes {
		if n.State == "NODE_STATE_UP" {
			out[n.ID] = n
		}
	}
	return out
}

// status is `shoal status -o json` as seen from the client container.
func status() (view, error) {
	out, err := shoalExec(nil, "status", "-placement", placementAddr, "-o", "json")
	if err != nil {
		return view{}, err
	}
	var v view
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return view{}, fmt.Errorf("status: %w: %s", err, out)
	}
	return v, nil
}

type block struct {
	addr string
	data []byte
}

// randomBytes is incompressible, unique data; crypto/rand does not fail.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

var addrRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func putExec(data []byte) (string, error) {
	out, err := shoalExec(data, "block", "put", "-placement", placementAddr, "-")
	if err != nil {
		return "", err
	}
	a := strings.TrimSpace(out)
	if !addrRE.MatchString(a) {
		return "", fmt.Errorf("block put printed %q, not an address", out)
	}
	return a, nil
}

func readBack(t *testing.T, blocks []block, why string) {
	t.Helper()
	for _, b := range blocks {
		got, err := shoalExec(nil, "block", "get", "-placement", placementAddr, b.addr)
		if err != nil {
			t.Fatalf("%s: get %s: %v", why, b.addr, err)
		}
		if !bytes.Equal([]byte(got), b.data) {
			t.Fatalf("%s: block %s: got %d bytes, want %d (content differs)", why, b.addr, len(got), len(b.data))
		}
	}
}

// putGet writes and reads blocks with one-shot client containers, exactly as
// a user would: docker run --rm --network <stack>_net shoal:<v> block ...
func (e *env) putGet(t *testing.T) []block {
	run := func(stdin []byte, args ...string) string {
		t.Helper()
		a := []string{"run", "--rm", "--pull", "never", "--network", network}
		if stdin != nil {
			a = append(a, "-i")
		}
		out, err := docker(stdin, 2*time.Minute, append(append(a, image), args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	var out []block
	// Sizes on either side of the silo's segment threshold (32 KiB).
	for _, size := range []int{1, 100 << 10, 1 << 20} {
		data := randomBytes(size)
		addr := strings.TrimSpace(run(data, "block", "put", "-placement", placementAddr, "-"))
		sum := sha256.Sum256(data)
		if addr != hex.EncodeToString(sum[:]) {
			t.Fatalf("put of %d bytes returned %q, want the content's sha256", size, addr)
		}
		if got := run(nil, "block", "get", "-placement", placementAddr, addr); !bytes.Equal([]byte(got), data) {
			t.Fatalf("get %s: %d bytes back, want the %d written", addr, len(got), size)
		}
		out = append(out, block{addr, data})
	}
	// The write returns at W=2; the third replica follows.
	for _, b := range out {
		eventually(t, 30*time.Second, "3 copies of "+b.addr, func() (bool, string) {
			s, err := shoalExec(nil, "block", "stat", "-placement", placementAddr, b.addr)
			return err == nil && strings.Contains(s, "copies   3\n"), fmt.Sprint(s, err)
		})
	}
	return out
}

// natsCluster asks each NATS member, one at a time and without failover,
// which storage nodes it hears. A storage node publishes its heartbeats to
// one member only, so every member hearing every node means the members
// relay to each other: they are one cluster.
func (e *env) natsCluster(t *testing.T) {
	v, err := status()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for id := range v.up() {
		want = append(want, id)
	}
	sort.Strings(want)
	for _, m := range []string{"nats1", "nats2", "nats3"} {
		out, err := docker(nil, time.Minute, "exec", client, "/usr/local/bin/probe", "nats",
			"-url", "nats://"+m+":4222", "-want", fmt.Sprint(len(want)), "-timeout", "20s")
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if got := strings.Fields(out); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s hears %v, want %v", m, got, want)
		}
	}
}

// span mirrors what the probe's OTLP receiver prints.
type span struct {
	Trace, Span, Parent, Name, Service, Instance, Peer, Bucket string
	Kind                                                       int32
}

const kindServer = 2

func receivedSpans(t *testing.T) []span {
	t.Helper()
	id := strings.TrimSpace(mustDocker(t, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+stack+"_otlp"))
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("want one OTLP receiver container, have %q", id)
	}
	out := mustDocker(t, "logs", id)
	var spans []span
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var s span
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Trace != "" {
			spans = append(spans, s)
		}
	}
	return spans
}

// traceAcrossContainers writes one block from the client container with
// tracing on and finds, at the receiver every task exports to, one trace
// whose spans come from the client and from three storage containers, each
// replica's server span a child of a client span.
func (e *env) traceAcrossContainers(t *testing.T) {
	const who = "swarm-e2e-client"
	data := randomBytes(4096)
	out, err := docker(data, time.Minute, "exec", "-i",
		"-e", "OTEL_EXPORTER_OTLP_ENDPOINT=http://otlp:4317", "-e", "OTEL_RESOURCE_ATTRIBUTES=service.instance.id="+who,
		client, shoal, "block", "put", "-placement", placementAddr, "-")
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSpace(out)
	var detail string
	eventually(t, 45*time.Second, "one trace across client and 3 storage containers", func() (bool, string) {
		spans := receivedSpans(t)
		var root *span
		for i := range spans {
			if spans[i].Name == "cli.block.put" && spans[i].Instance == who {
				root = &spans[i]
			}
		}
		if root == nil {
			return false, fmt.Sprintf("no cli.block.put span from %s among %d spans", who, len(spans))
		}
		byID := map[string]span{}
		for _, s := range spans {
			if s.Trace == root.Trace {
				byID[s.Span] = s
			}
		}
		// Storage containers with a server-side Put (PutBatch for small
		// blocks) whose parent is a span of the client container, and a
		// silo.put beneath it.
		storage := map[string]bool{}
		peers := map[string]bool{}
		for _, s := range byID {
			if s.Name != "silo.put" {
				continue
			}
			srv, ok := byID[s.Parent]
			if !ok || srv.Kind != kindServer || !strings.HasSuffix(srv.Name, "/Put") && !strings.HasSuffix(srv.Name, "/PutBatch") || srv.Instance != s.Instance {
				continue
			}
			cl, ok := byID[srv.Parent]
			if !ok || cl.Instance != who || cl.Peer == srv.Peer {
				continue
			}
			if strings.HasPrefix(s.Instance, stack+"_blockstore.") {
				storage[s.Instance] = true
				peers[s.Peer] = true
			}
		}
		detail = fmt.Sprintf("trace %s: %d spans, storage containers %v (peers %v)", root.Trace, len(byID), keys(storage), keys(peers))
		return len(storage) == 3 && len(peers) == 3, detail
	})
	t.Logf("block %s: %s", addr, detail)
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// writer keeps writing random data through the client container with put,
// retrying a failed write once; a write failing twice is an error.
type writer struct {
	mu      sync.Mutex
	blocks  []block
	retries int
	retried error // why the first retried write failed
	errs    []error
	stop    chan struct{}
	done    chan struct{}
}

func startWriter(put func(i int, data []byte) (string, error)) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			data := randomBytes(1024 + (i*7919)%(64<<10))
			addr, err := put(i, data)
			if err != nil {
				w.mu.Lock()
				w.retries++
				if w.retried == nil {
					w.retried = err
				}
				w.mu.Unlock()
				addr, err = put(i, data)
			}
			w.mu.Lock()
			if err != nil {
				w.errs = append(w.errs, err)
			} else {
				w.blocks = append(w.blocks, block{addr, data})
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.blocks) + len(w.errs)
}

func (w *writer) finish() ([]block, int, []error) {
	close(w.stop)
	<-w.done
	return w.blocks, w.retries, w.errs
}

// scaleWhileWriting scales the S3 tier 2→4 and the storage tier 4→6 while
// one client writes blocks and another writes objects through S3. Every
// S3 task, old and new, then serves what was written.
func (e *env) scaleWhileWriting(t *testing.T) (blocks, objects []block) {
	v, err := status()
	if err != nil {
		t.Fatal(err)
	}
	before := v.up()
	if len(before) != 4 {
		t.Fatalf("%d storage nodes up before scaling, want 4", len(before))
	}
	bw := startWriter(func(_ int, data []byte) (string, error) { return putExec(data) })
	sw := startWriter(func(i int, data []byte) (string, error) {
		key := fmt.Sprintf("scale/%04d", i)
		return key, e.s3Put(bucket, key, data)
	})
	stopped := false
	defer func() {
		if !stopped {
			bw.finish()
			sw.finish()
		}
	}()
	eventually(t, 3*time.Minute, "writes before scaling", func() (bool, string) {
		return bw.count() >= 3 && sw.count() >= 3, fmt.Sprintf("%d blocks, %d objects", bw.count(), sw.count())
	})
	mustDocker(t, "service", "scale", "--detach", stack+"_s3=4", stack+"_blockstore=6")
	e.waitHealthy(2*time.Minute, 6)
	// Some writes with the new nodes and frontends in place, then stop.
	nb, ns := bw.count(), sw.count()
	eventually(t, 3*time.Minute, "writes after scaling", func() (bool, string) {
		return bw.count() >= nb+5 && sw.count() >= ns+10, fmt.Sprintf("%d blocks, %d objects", bw.count(), sw.count())
	})
	blocks, bRetries, bErrs := bw.finish()
	objects, sRetries, sErrs := sw.finish()
	stopped = true
	t.Logf("during the scale-out: %d blocks (%d retried), %d S3 objects (%d retried)", len(blocks), bRetries, len(objects), sRetries)
	for _, w := range []*writer{bw, sw} {
		if w.retried != nil {
			t.Logf("first retried write failed with: %v", w.retried)
		}
	}
	if len(bErrs) > 0 {
		t.Fatalf("%d block writes failed even after a retry, first: %v", len(bErrs), bErrs[0])
	}
	if len(sErrs) > 0 {
		t.Fatalf("%d S3 writes failed even after a retry, first: %v", len(sErrs), sErrs[0])
	}
	v, err = status()
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for id, n := range v.up() {
		if _, ok := before[id]; !ok {
			added = append(added, id+"@"+n.Addr+"/"+n.Zone)
		}
	}
	if len(added) != 2 {
		t.Fatalf("new storage nodes in status: %v, want 2", added)
	}
	readBack(t, blocks, "after scaling to 6")
	e.s3ReadBack(t, objects, "", "after scaling")
	// Each of the 4 S3 tasks, addressed by its own IP, serves an object
	// written before the scale-out and one written after it.
	tasks := e.s3Tasks(t)
	if len(tasks) != 4 {
		t.Fatalf("%d S3 tasks running, want 4: %v", len(tasks), tasks)
	}
	for name, ip := range tasks {
		e.s3ReadBack(t, []block{objects[0], objects[len(objects)-1]}, "http://"+ip+":9000", "from "+name)
	}
	return blocks, objects
}

// s3Tasks maps the running S3 tasks to their addresses on the stack's network.
func (e *env) s3Tasks(t *testing.T) map[string]string {
	out := mustDocker(t, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+stack+"_s3")
	tasks := map[string]string{}
	for _, c := range strings.Fields(out) {
		l := mustDocker(t, "inspect", "-f", `{{index .Config.Labels "com.docker.swarm.task.name"}} {{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, c)
		if f := strings.Fields(l); len(f) == 2 {
			tasks[f[0]] = f[1]
		}
	}
	return tasks
}

// killStorageTask kills the container of the storage task holding the most
// blocks. Reads and writes must go on; swarm must restart the task, and it
// must come back as the same node (its id lives in its silo volume) with
// its blocks.
func (e *env) killStorageTask(t *testing.T, written, objects []block) {
	if len(written) == 0 {
		t.Fatal("no blocks from the earlier scenarios to read back")
	}
	v, err := status()
	if err != nil {
		t.Fatal(err)
	}
	nodesBefore := len(v.up())
	// Map containers to node ids through each one's start-up banner.
	out := mustDocker(t, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+stack+"_blockstore")
	var victim, victimID, slot string
	var most int64 = -1
	for _, c := range strings.Fields(out) {
		id := bannerID(t, c)
		n, ok := v.up()[id]
		if !ok {
			t.Fatalf("container %s runs node %q, not up in status", c, id)
		}
		if b, _ := n.Blocks.Int64(); b > most {
			victim, victimID, most = c, id, b
		}
	}
	task := strings.TrimSpace(mustDocker(t, "inspect", "-f", `{{index .Config.Labels "com.docker.swarm.task.name"}}`, victim))
	if p := strings.Split(task, "."); len(p) == 3 {
		slot = p[1]
	} else {
		t.Fatalf("task name %q", task)
	}
	t.Logf("killing %s (slot %s, node %s, %d blocks)", task, slot, victimID, most)
	mustDocker(t, "kill", victim)

	var more []block
	for i := 0; i < 5; i++ {
		data := randomBytes(2048 + i)
		addr, err := putExec(data)
		if err != nil {
			t.Logf("write with a storage task killed failed once: %v", err)
			if addr, err = putExec(data); err != nil {
				t.Fatalf("write with a storage task killed failed twice: %v", err)
			}
		}
		more = append(more, block{addr, data})
	}
	readBack(t, append(append([]block(nil), written...), more...), "with a storage task killed")
	e.s3ReadBack(t, objects, "", "with a storage task killed")

	var back string
	eventually(t, 2*time.Minute, "killed task replaced and its node back", func() (bool, string) {
		out, err := docker(nil, 30*time.Second, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+stack+"_blockstore",
			"--filter", "health=healthy")
		if err != nil {
			return false, err.Error()
		}
		for _, c := range strings.Fields(out) {
			if c == victim {
				continue
			}
			task, _ := docker(nil, 30*time.Second, "inspect", "-f", `{{index .Config.Labels "com.docker.swarm.task.name"}}`, c)
			if p := strings.Split(strings.TrimSpace(task), "."); len(p) == 3 && p[1] == slot {
				back = c
			}
		}
		if back == "" {
			return false, "no new healthy container for slot " + slot
		}
		v, err := status()
		if err != nil {
			return false, err.Error()
		}
		_, ok := v.up()[victimID]
		return ok && len(v.up()) == nodesBefore, fmt.Sprintf("node %s up=%v in %d up nodes (want %d)", victimID, ok, len(v.up()), nodesBefore)
	})
	if id := bannerID(t, back); id != victimID {
		t.Fatalf("slot %s came back as node %s, want %s: the silo volume was not kept", slot, id, victimID)
	}
	v, err = status()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := v.up()[victimID].Blocks.Int64(); b < most {
		t.Fatalf("node %s came back with %d blocks, had %d", victimID, b, most)
	}
	readBack(t, more, "after the restart")
}

var bannerRE = regexp.MustCompile(`(?m)^\s*blockstore\s+\S+\s+id=(\S+)`)

func bannerID(t *testing.T, container string) string {
	t.Helper()
	var id string
	eventually(t, 30*time.Second, "banner of "+container, func() (bool, string) {
		out, err := docker(nil, 30*time.Second, "logs", container)
		if err != nil {
			return false, err.Error()
		}
		m := bannerRE.FindStringSubmatch(out)
		if m == nil {
			return false, "no banner yet"
		}
		id = m[1]
		return true, ""
	})
	return id
}
