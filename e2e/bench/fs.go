package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

var (
	fsFiles = flag.Int("fs-files", 1000, "small files extracted by tar into a FUSE volume (0 skips the FS section)")
	fsMiB   = flag.Int("fs-mib", 128, "MiB of the large file written and read through the FUSE volume")
)

// fsBench measures the FUSE frontend through `shoal mount` with real
// tools: tar extracting many small files (against the same tar into a
// local directory, synced), and one large file written and read back
// (against raw/3).
func fsBench(dataDir string, raw float64) {
	if *fsFiles <= 0 {
		return
	}
	needTools("FS", "tar fuse3", "tar", "fusermount3")
	cmd := allInOneCmd(dataDir)
	b := startBanner(cmd)
	defer stopGracefully(cmd, syscall.SIGTERM)
	common := []string{"-placement", b.get("placement"), "-dedup", b.get("dedup"), "-data", dataDir}
	if out, err := shoalCmd(append([]string{"fs", "create", "bench"}, common...)...).CombinedOutput(); err != nil {
		check(fmt.Errorf("fs create: %v: %s", err, out))
	}
	mnt := filepath.Join(*dir, "fs-mnt")
	check(os.MkdirAll(mnt, 0o755))
	mount := shoalCmd(append([]string{"mount", "bench", mnt, "-nats", b.get("nats")}, common...)...)
	out, err := mount.StdoutPipe()
	check(err)
	check(mount.Start())
	defer func() {
		_ = exec.Command("fusermount3", "-u", mnt).Run()
		stopGracefully(mount, syscall.SIGTERM)
	}()
	sc := bufio.NewScanner(out)
	for !strings.HasPrefix(sc.Text(), "mounted") {
		if !sc.Scan() {
			check(fmt.Errorf("shoal mount exited before mounting"))
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()

	// A tree like a source checkout: files of 1-16 KiB in 40 directories.
	archive := filepath.Join(*dir, "fs-tree.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range *fsFiles {
		body := randBlock(1024 + (i*7919)%(15*1024))
		check(tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%02d/f%05d.src", i%40, i), Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1e9, 0)}))
		_, err := tw.Write(body)
		check(err)
	}
	check(tw.Close())
	check(os.WriteFile(archive, buf.Bytes(), 0o600))
	defer os.Remove(archive)

	local := filepath.Join(*dir, "fs-local")
	check(os.MkdirAll(local, 0o755))
	defer os.RemoveAll(local)
	base := timeTool("tar", "-xf", archive, "-C", local) + timeTool("sync", "-f", local)
	into := timeTool("tar", "-xf", archive, "-C", mnt)
	n := float64(*fsFiles)
	add(fmt.Sprintf("FS tar -x, %d files of 1-16 KiB", *fsFiles), fmt.Sprintf("%.0f files/s", n/into.Seconds()),
		fmt.Sprintf("local disk (tar + sync) %.0f files/s: %.1f%%", n/base.Seconds(), 100*base.Seconds()/into.Seconds()))

	big := filepath.Join(mnt, "big")
	data := randBlock(*fsMiB << 20)
	t0 := time.Now()
	f, err := os.Create(big)
	check(err)
	_, err = f.Write(data)
	check(err)
	check(f.Close()) // the close stores the file
	w := float64(len(data)) / time.Since(t0).Seconds()
	add(fmt.Sprintf("FS write %d MiB file (close included)", *fsMiB), mbs(w), fmt.Sprintf("%.0f%% of raw/3", 100*w/(raw/3)))
	// A fresh open: the kernel's page cache is dropped at open
	// (close-to-open), so this reads through the mount.
	t0 = time.Now()
	f, err = os.Open(big)
	check(err)
	got, err := io.Copy(io.Discard, f)
	check(err)
	check(f.Close())
	r := float64(got) / time.Since(t0).Seconds()
	add("FS read it back", mbs(r), fmt.Sprintf("%.2f× raw write", r/raw))
}

func timeTool(name string, args ...string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		check(fmt.Errorf("%s %v: %v: %s", name, args, err, out))
	}
	return time.Since(t0)
}
