package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

var (
	nbdMiB     = flag.Int("nbd-mib", 256, "MiB copied in and out of an NBD volume (0 skips the NBD section)")
	nbdSeconds = flag.Int("nbd-seconds", 10, "seconds per fio random 4 KiB phase on the NBD volume and on raw disk")
)

// nbdBench measures a volume of the all-in-one's NBD frontend with real
// clients: nbdcopy for sequential bandwidth (against raw/3, the disk's
// bandwidth shared by three replicas), fio's nbd engine for random 4 KiB
// I/O (against fio on a file of the raw disk, same queue depth).
func nbdBench(dataDir string, raw float64) {
	if *nbdMiB <= 0 {
		return
	}
	needTools("NBD", "libnbd-bin fio", "nbdcopy", "fio")
	cmd := allInOneCmd(dataDir)
	b := startBanner(cmd)
	defer stopGracefully(cmd, syscall.SIGTERM)
	nbdAddr := strings.TrimSuffix(strings.TrimPrefix(b.get("nbd"), "nbd://"), "/VOLUME")
	place, dedupAddr := b.get("placement"), b.get("dedup")
	if nbdAddr == "" {
		check(fmt.Errorf("all-in-one printed no NBD endpoint"))
	}
	size := int64(*nbdMiB) << 20
	mk := shoalCmd("nbd", "create", "bench", "-size", fmt.Sprint(size), "-policy", "chunk=fixed:64k,compress=none",
		"-placement", place, "-dedup", dedupAddr, "-data", dataDir)
	if b, err := mk.CombinedOutput(); err != nil {
		check(fmt.Errorf("nbd create: %v: %s", err, b))
	}
	uri := "nbd://" + nbdAddr + "/bench"
	src := filepath.Join(*dir, "nbd-src")
	check(os.WriteFile(src, randBlock(int(size)), 0o600))
	defer os.Remove(src)

	t0 := time.Now()
	runTool("nbdcopy", "--flush", src, uri)
	w := float64(size) / time.Since(t0).Seconds()
	add(fmt.Sprintf("NBD sequential write, nbdcopy %d MiB", *nbdMiB), mbs(w), fmt.Sprintf("%.0f%% of raw/3; flushed", 100*w/(raw/3)))
	t0 = time.Now()
	runTool("nbdcopy", uri, "null:")
	r := float64(size) / time.Since(t0).Seconds()
	add("NBD sequential read, nbdcopy", mbs(r), fmt.Sprintf("%.2f× raw write", r/raw))

	rawFile := filepath.Join(*dir, "fio-raw")
	defer os.Remove(rawFile)
	for _, rw := range []string{"randwrite", "randread"} {
		vol := fioIOPS("--ioengine=nbd", "--uri="+uri, "--rw="+rw)
		base := fioIOPS("--ioengine=libaio", "--direct=1", "--filename="+rawFile, "--rw="+rw)
		add(fmt.Sprintf("NBD %s 4 KiB, fio iodepth 16", rw), fmt.Sprintf("%.0f IOPS", vol), fmt.Sprintf("raw disk (libaio, direct) %.0f IOPS: %.0f%%", base, 100*vol/base))
	}
}

func runTool(name string, args ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if b, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		check(fmt.Errorf("%s %v: %v: %s", name, args, err, b))
	}
}

// fioIOPS runs one time-based fio job (4 KiB, iodepth 16, over the first
// 64 MiB) and returns its IOPS.
func fioIOPS(args ...string) float64 {
	args = append([]string{"--name=bench", "--bs=4k", "--iodepth=16", "--size=64m", "--time_based",
		fmt.Sprintf("--runtime=%ds", *nbdSeconds), "--output-format=json"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*nbdSeconds)*time.Second+2*time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, "fio", args...).Output()
	if err != nil {
		check(fmt.Errorf("fio %v: %v", args, err))
	}
	var res struct {
		Jobs []struct {
			Read  struct{ IOPS float64 } `json:"read"`
			Write struct{ IOPS float64 } `json:"write"`
		} `json:"jobs"`
	}
	// fio may print notes before its JSON.
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	check(json.Unmarshal(b, &res))
	if len(res.Jobs) == 0 {
		check(fmt.Errorf("fio printed no job"))
	}
	return res.Jobs[0].Read.IOPS + res.Jobs[0].Write.IOPS
}
