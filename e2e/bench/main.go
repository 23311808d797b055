// Command bench measures the all-in-one cluster against this machine's raw
// fsync'd disk, in one run, and prints a table of figures and ratios. The
// machine is shared and noisy, so the ratios matter more than the absolute
// numbers. Run it with `make bench`.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bpb "shoal/proto/blockstorepb"
	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/rpc"
)

var (
	bin      = flag.String("bin", "bin/shoal", "shoal binary")
	dir      = flag.String("dir", "", "scratch directory on the disk under test (default: a temp dir)")
	bigMiB   = flag.Int("big-mib", 512, "MiB written with 4 MiB blocks")
	smallOps = flag.Int("small-ops", 20000, "4 KiB operations per phase")
	million  = flag.Int("node-blocks", 1_000_000, "blocks stored on one node for the RSS figure (0 skips)")
	clients  = flag.Int("clients", 64, "concurrent clients for 4 KiB operations")
	bigConc  = flag.Int("big-clients", 8, "concurrent clients for 4 MiB operations")
	cpuProf  = flag.String("cpuprofile", "", "write the benchmark client's CPU profile here (the cluster's: SHOAL_CPU_PROFILE)")
	only     = flag.String("only", "", "comma-separated phases to run: core,mutable,dedup,s3,nbd,fs,node (default all)")
)

type row struct{ name, value, note string }

var rows []row

func add(name, value, note string) {
	rows = append(rows, row{name, value, note})
	fmt.Fprintf(os.Stderr, "  %-40s %-22s %s\n", name, value, note)
}

func main() {
	flag.Parse()
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "shoal-bench-")
		check(err)
		defer os.RemoveAll(d)
		*dir = d
	}
	raw := rawDisk(filepath.Join(*dir, "raw"), *bigMiB)
	add("raw disk, 4 MiB writes + fdatasync", mbs(raw), "baseline")
	if phase("core") || phase("mutable") {
		coreBench(raw)
	}
	if phase("dedup") {
		dedupBench(raw)
	}
	if phase("s3") {
		s3Bench(filepath.Join(*dir, "s3"), raw)
	}
	if phase("nbd") {
		nbdBench(filepath.Join(*dir, "nbd"), raw)
	}
	if phase("fs") {
		fsBench(filepath.Join(*dir, "fs"), raw)
	}
	if phase("node") && *million > 0 {
		rss, took := nodeWithBlocks(filepath.Join(*dir, "node"), *million)
		add(fmt.Sprintf("storage node RSS, %d blocks", *million), fmt.Sprintf("%.0f MiB", rss), fmt.Sprintf("filled in %v (target <= 512 MiB)", took.Round(time.Second)))
	}
	fmt.Println()
	fmt.Println("| measurement | figure | note |")
	fmt.Println("|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s |\n", r.name, r.value, r.note)
	}
}

func phase(name string) bool {
	return *only == "" || slices.Contains(strings.Split(*only, ","), name)
}

// coreBench measures immutable and mutable blocks on the all-in-one.
func coreBench(raw float64) {
	proc, placementAddr := startAllInOne(filepath.Join(*dir, "cluster"))
	defer func() { _ = proc.Process.Kill(); _ = proc.Wait() }()
	add("all-in-one idle RSS", fmt.Sprintf("%.0f MiB", rssMiB(proc.Process.Pid)), "target <= 300 MiB")

	cl, err := dht.New(dht.Config{Placement: []string{placementAddr}, Replicas: 3, WriteQuorum: 2, CallTimeout: 30 * time.Second},
		slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	check(err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	check(cl.WaitForNodes(ctx, 3))
	cancel()

	if phase("core") {
		immutableBench(cl, raw)
	}
	if phase("mutable") {
		mutableBench(cl, *clients, *smallOps/2)
	}
	add("all-in-one RSS after load", fmt.Sprintf("%.0f MiB", rssMiB(proc.Process.Pid)), "3 storage nodes + placement + NATS")
	cl.Close()
	// SIGTERM, so a SHOAL_CPU_PROFILE set for the run gets written.
	_ = proc.Process.Signal(syscall.SIGTERM)
	_ = proc.Wait()
}

func immutableBench(cl *dht.Client, raw float64) {
	n := *bigMiB / 4
	bigAddrs := make([]block.Address, n)
	put := measure(n, *bigConc, func(i int) {
		b := randBlock(4 << 20)
		a, err := cl.Put(context.Background(), b)
		check(err)
		bigAddrs[i] = a
	})
	putRate := float64(n*4<<20) / put.total.Seconds()
	add("put 4 MiB blocks, R=3 W=2", mbs(putRate), fmt.Sprintf("%.0f%% of raw/3 (target >= 60%%)", 100*putRate/(raw/3)))
	get := measure(n, *bigConc, func(i int) {
		_, err := cl.Get(context.Background(), bigAddrs[i])
		check(err)
	})
	getRate := float64(n*4<<20) / get.total.Seconds()
	add("get 4 MiB blocks", mbs(getRate), fmt.Sprintf("%.2f× raw (target >= 500 MB/s)", getRate/raw))

	smallAddrs := make([]block.Address, *smallOps)
	small := make([][]byte, *smallOps) // generated before the clock starts
	for i := range small {
		small[i] = randBlock(4096)
	}
	sp := measure(*smallOps, *clients, func(i int) {
		a, err := cl.Put(context.Background(), small[i])
		check(err)
		smallAddrs[i] = a
	})
	add(fmt.Sprintf("put 4 KiB, %d clients", *clients), fmt.Sprintf("%.0f ops/s", sp.rate()), fmt.Sprintf("p50 %v p99 %v (target >= 5000/s)", sp.pct(50), sp.pct(99)))
	sg := measure(*smallOps, *clients, func(i int) {
		_, err := cl.Get(context.Background(), smallAddrs[i])
		check(err)
	})
	add(fmt.Sprintf("get 4 KiB, %d clients", *clients), fmt.Sprintf("%.0f ops/s", sg.rate()), fmt.Sprintf("p50 %v p99 %v (target >= 20000/s)", sg.pct(50), sg.pct(99)))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func mbs(bps float64) string { return fmt.Sprintf("%.0f MB/s", bps/1e6) }

// randBlock returns n bytes no other call returns (incompressible, unique
// with overwhelming probability), from ChaCha8 seeded by crypto/rand: the
// load generator shares the cores with the cluster, and crypto/rand cost
// it a tenth of its CPU.
func randBlock(n int) []byte {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	b := make([]byte, n)
	_, _ = mrand.NewChaCha8(seed).Read(b)
	return b
}

// rawDisk writes mib MiB in 4 MiB chunks, each followed by fdatasync: what
// one replica's durable write costs on this disk.
func rawDisk(path string, mib int) float64 {
	f, err := os.Create(path)
	check(err)
	defer os.Remove(path)
	defer f.Close()
	buf := randBlock(4 << 20)
	start := time.Now()
	for i := 0; i < mib/4; i++ {
		_, err := f.Write(buf)
		check(err)
		check(f.Sync())
	}
	return float64(mib<<20) / time.Since(start).Seconds()
}

type result struct {
	total time.Duration
	lat   []time.Duration
	n     int
}

func (r result) rate() float64 { return float64(r.n) / r.total.Seconds() }
func (r result) pct(p int) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[(len(r.lat)-1)*p/100].Round(10 * time.Microsecond)
}

func measure(n, conc int, op func(i int)) result {
	return measureWorkers(n, conc, func(_, i int) { op(i) })
}

// measureWorkers is measure with the worker's index passed along, for
// operations that must not overlap on one worker's own object.
func measureWorkers(n, conc int, op func(w, i int)) result {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t := time.Now()
				op(w, i)
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	r := result{total: time.Since(start), lat: lat, n: n}
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	return r
}

func startAllInOne(data string) (*exec.Cmd, string) {
	cmd := allInOneCmd(data)
	cmd.Stderr = nil
	return cmd, startBanner(cmd).get("placement")
}

// allInOneCmd is `shoal serve` of every service, on ports the kernel
// picks.
func allInOneCmd(data string, extra ...string) *exec.Cmd {
	return shoalCmd(append([]string{"serve", "-data=" + data, "-nats.listen=127.0.0.1:0", "-placement.listen=127.0.0.1:0",
		"-blockstore.listen=127.0.0.1:0", "-dedup.listen=127.0.0.1:0", "-s3.addr=127.0.0.1:0", "-nbd.addr=127.0.0.1:0"}, extra...)...)
}

// banner is a start-up banner's lines by first word, holding the others.
type banner map[string][]string

// get is the second word of the line starting with key ("" if none).
func (b banner) get(key string) string {
	if f := b[key]; len(f) > 0 {
		return f[0]
	}
	return ""
}

// needTools stops the benchmark when a section's tools are missing.
func needTools(section, packages string, tools ...string) {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			check(fmt.Errorf("%s is needed for the %s section (apt-get install %s): %w", tool, section, packages, err))
		}
	}
}

// startBanner starts a `shoal serve` command and returns its start-up
// banner's lines by first word ("placement" -> its other words), read up
// to the "data" line; the rest of its output is drained.
func startBanner(cmd *exec.Cmd) banner {
	out, err := cmd.StdoutPipe()
	check(err)
	check(cmd.Start())
	fields := banner{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 {
			if _, seen := fields[f[0]]; !seen {
				fields[f[0]] = f[1:]
			}
		}
		if len(f) >= 1 && f[0] == "data" {
			go func() {
				for sc.Scan() {
				}
			}()
			return fields
		}
	}
	check(fmt.Errorf("%s exited before printing its endpoints", cmd.Path))
	return nil
}

// stopGracefully signals a cluster (so a SHOAL_CPU_PROFILE gets written)
// and kills it if it has not exited 30 s later.
func stopGracefully(cmd *exec.Cmd, sig os.Signal) {
	_ = cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// nodeWithBlocks runs one storage node (with its own NATS and placement in
// a separate process, so the figure is the node's alone), stores n small
// blocks on it and reports its RSS.
func nodeWithBlocks(data string, n int) (float64, time.Duration) {
	ns := shoalCmd("serve", "-target=nats,placement", "-data="+data, "-nats.listen=127.0.0.1:0", "-placement.listen=127.0.0.1:0")
	out, err := ns.StdoutPipe()
	check(err)
	check(ns.Start())
	defer func() { _ = ns.Process.Kill(); _ = ns.Wait() }()
	natsURL := ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nats" {
			natsURL = f[1]
			break
		}
	}
	node := shoalCmd("serve", "-target=blockstore", "-nats.url="+natsURL, "-blockstore.listen=127.0.0.1:0", "-blockstore.dir="+filepath.Join(data, "bs"))
	nout, err := node.StdoutPipe()
	check(err)
	check(node.Start())
	defer func() { _ = node.Process.Kill(); _ = node.Wait() }()
	addr := ""
	nsc := bufio.NewScanner(nout)
	for nsc.Scan() {
		f := strings.Fields(nsc.Text())
		if len(f) >= 2 && f[0] == "blockstore" {
			addr = f[1]
			break
		}
	}
	cc, err := rpc.Dial(addr)
	check(err)
	defer cc.Close()
	bs := bpb.NewBlockStoreClient(cc)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				copy(buf, strconv.FormatInt(i, 10))
				a := block.Sum(buf)
				_, err := bs.Put(context.Background(), &bpb.PutRequest{Address: a[:], Data: buf, Kind: bpb.BlockKind_BLOCK_KIND_IMMUTABLE})
				check(err)
			}
		}()
	}
	wg.Wait()
	return rssMiB(node.Process.Pid), time.Since(start)
}

// shoalCmd runs the shoal binary so that it dies with the benchmark: a
// failed check exits at once, and must not leave a cluster holding ports.
func shoalCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(*bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}
