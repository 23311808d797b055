package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	dpb "shoal/proto/dedupb"
	"shoal/services/dedup/client"
	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/rpc"
)

var (
	dedupMiB  = flag.Int("dedup-mib", 1024, "MiB streamed through the dedup tier per phase (0 skips the dedup section)")
	dedupOnly = flag.String("dedup-only", "", `run one dedup policy: "R=3" or "EC 4+2" (default both)`)
)

// dedupBench measures the dedup tier end to end (client → gRPC → dedup →
// storage nodes): a unique put, a re-put of the same bytes (all chunks
// deduplicated), and a sequential get, at R=3 on the 3-node all-in-one and
// with EC 4+2 on a 6-node one (-nodes=6; 4+2 needs six nodes), each as a
// ratio to the raw disk figure of the same run. Every node shares this
// machine's one disk, so a put writes R (or (k+m)/k) times its size to it.
func dedupBench(raw float64) {
	if *dedupMiB <= 0 {
		return
	}
	size := int64(*dedupMiB) << 20
	hopW, hopR := grpcHop(size)
	add(fmt.Sprintf("one gRPC hop, stream %d MiB in", *dedupMiB), mbs(hopW), "dedup client → a server that discards it: baseline for put")
	add(fmt.Sprintf("one gRPC hop, stream %d MiB out", *dedupMiB), mbs(hopR), "a server sending memory → dedup client: baseline for get")
	for _, tc := range []struct {
		name, policy string
		nodes        int
		amp          float64 // bytes written to the disk per logical byte
	}{
		{"R=3", "", 3, 3},
		{"EC 4+2", "redundancy=ec:4+2", 6, 1.5},
	} {
		if *dedupOnly != "" && *dedupOnly != tc.name {
			continue
		}
		proc, addr, place := startDedupCluster(filepath.Join(*dir, "dedup-"+strings.ReplaceAll(tc.name, " ", "")), tc.nodes)
		cl, err := client.Dial(addr)
		check(err)
		ctx := context.Background()
		pid := proc.Process.Pid
		cpu := startCPU(pid)
		start := time.Now()
		ref, n, _, err := cl.Write(ctx, tc.policy, "", keystream(1, size))
		check(err)
		put := float64(n) / time.Since(start).Seconds()
		add(fmt.Sprintf("dedup put %d MiB unique, %s", *dedupMiB, tc.name), mbs(put),
			fmt.Sprintf("%.0f%% of raw/%.1f (default chunking, zstd)%s", 100*put*tc.amp/raw, tc.amp, cpu.perMiB(n)))

		cpu = startCPU(pid)

		start = time.Now()
		_, _, _, err = cl.Write(ctx, tc.policy, "", keystream(1, size))
		check(err)
		reput := float64(size) / time.Since(start).Seconds()
		add(fmt.Sprintf("dedup re-put same %d MiB, %s", *dedupMiB, tc.name), mbs(reput), fmt.Sprintf("%.2f× raw, %.2f× one hop%s", reput/raw, reput/hopW, cpu.perMiB(size)))

		// The same again, offered by hash (WriteOffered, what `shoal put`
		// and FUSE closes use): cut and hashed here (this process's CPU
		// includes making the stream), not sent.
		cpu, self := startCPU(pid), startCPU(os.Getpid())
		start = time.Now()
		_, _, _, err = cl.WriteOffered(ctx, tc.policy, "", keystream(1, size))
		check(err)
		offered := float64(size) / time.Since(start).Seconds()
		add(fmt.Sprintf("dedup re-put same %d MiB offered, %s", *dedupMiB, tc.name), mbs(offered),
			fmt.Sprintf("%.2f× raw, %.2f× re-put sent%s%s", offered/raw, offered/reput, cpu.perMiB(size), self.perMiBOf("client", size)))

		// New data offered: every chunk is asked for, and hashed twice.
		cpu, self = startCPU(pid), startCPU(os.Getpid())
		start = time.Now()
		_, _, _, err = cl.WriteOffered(ctx, tc.policy, "", keystream(2, size))
		check(err)
		newOffered := float64(size) / time.Since(start).Seconds()
		add(fmt.Sprintf("dedup put %d MiB unique offered, %s", *dedupMiB, tc.name), mbs(newOffered),
			fmt.Sprintf("%.0f%% of raw/%.1f, %.2f× put sent%s%s", 100*newOffered*tc.amp/raw, tc.amp, newOffered/put, cpu.perMiB(size), self.perMiBOf("client", size)))

		// Sequential get through the tier, then read from the nodes
		// directly (ReadDirect, what `shoal get` does by default).
		getOnce := func(c *client.Client) (float64, string) {
			cpu, self := startCPU(pid), startCPU(os.Getpid())
			start := time.Now()
			rc, err := c.Read(ctx, ref, "", 0, -1)
			check(err)
			got, err := io.Copy(io.Discard, rc)
			check(err)
			rc.Close()
			if got != size {
				check(fmt.Errorf("dedup get returned %d of %d bytes", got, size))
			}
			return float64(got) / time.Since(start).Seconds(), cpu.perMiB(got) + self.perMiBOf("client", got)
		}
		get, cpuNote := getOnce(cl)
		add(fmt.Sprintf("dedup get %d MiB sequential, %s", *dedupMiB, tc.name), mbs(get), fmt.Sprintf("through the tier, %.2f× raw, %.2f× one hop%s", get/raw, get/hopR, cpuNote))
		dc, err := dht.New(dht.Config{Placement: []string{place}, MaxBlockSize: block.MaxSealed}, slog.New(slog.DiscardHandler))
		check(err)
		direct, err := client.Dial(addr)
		check(err)
		check(direct.ReadDirect(dc))
		dget, cpuNote := getOnce(direct)
		if direct.DirectReads() == 0 {
			check(fmt.Errorf("dedup get: the direct read went through the tier"))
		}
		add(fmt.Sprintf("dedup get %d MiB sequential direct, %s", *dedupMiB, tc.name), mbs(dget), fmt.Sprintf("from the nodes (shoal get), %.2f× raw, %.2f× through the tier%s", dget/raw, dget/get, cpuNote))
		direct.Close()
		dc.Close()
		add(fmt.Sprintf("all-in-one RSS after dedup, %s", tc.name), fmt.Sprintf("%.0f MiB", rssMiB(proc.Process.Pid)), fmt.Sprintf("%d storage nodes + placement + NATS + dedup", tc.nodes))
		cl.Close()
		// SIGTERM, so a SHOAL_CPU_PROFILE set for the run gets written
		// (the EC cluster's overwrites the R=3 one's; -dedup-only picks one).
		_ = proc.Process.Signal(syscall.SIGTERM)
		_ = proc.Wait()
	}
}

// keystream is n incompressible, unique bytes (AES-CTR), cheap to make.
func keystream(seed byte, n int64) io.Reader {
	key := make([]byte, 16)
	key[0] = seed
	b, err := aes.NewCipher(key)
	check(err)
	return io.LimitReader(cipher.StreamReader{S: cipher.NewCTR(b, make([]byte, 16)), R: zeroReader{}}, n)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// startDedupCluster runs NATS, placement, nodes storage nodes and the dedup
// tier in one process, every port chosen by the kernel, and returns the
// dedup address from the banner.
func startDedupCluster(data string, nodes int) (*exec.Cmd, string, string) {
	cmd := shoalCmd("serve", "-target=nats,placement,blockstore,dedup", "-data="+data, fmt.Sprintf("-nodes=%d", nodes),
		"-nats.listen=127.0.0.1:0", "-placement.listen=127.0.0.1:0", "-blockstore.listen=127.0.0.1:0", "-dedup.listen=127.0.0.1:0")
	b := startBanner(cmd)
	addr, place := b.get("dedup"), b.get("placement")
	if addr == "" || place == "" {
		check(fmt.Errorf("dedup cluster printed no dedup or placement endpoint"))
	}
	// The banner is printed once every node is started, but placement
	// learns of them from heartbeats: wait until a tiny write succeeds.
	cl, err := client.Dial(addr)
	check(err)
	defer cl.Close()
	deadline := time.Now().Add(30 * time.Second)
	pol := ""
	if nodes >= 6 {
		pol = "redundancy=ec:4+2"
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ref, _, _, err := cl.Write(ctx, pol, "", strings.NewReader("warm-up"))
		if err == nil {
			err = cl.Release(ctx, ref, "")
		}
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			check(fmt.Errorf("dedup cluster not ready: %w", err))
		}
		time.Sleep(100 * time.Millisecond) // retry interval while nodes join
	}
	return cmd, addr, place
}

// grpcHop measures one gRPC hop on this machine with the dedup client and
// Shoal's server options and codec, against a server that only discards
// what it receives or sends the same memory again: the ceiling of a tier's
// bytes crossing one process boundary, which a dedup put crosses to the
// tier and again to the nodes, and a get from the nodes and again to the
// client. It returns MB/s in (client → server) and out.
func grpcHop(size int64) (in, out float64) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	srv := grpc.NewServer(rpc.ServerOptions()...)
	dpb.RegisterDedupServer(srv, &memDedup{size: size})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cl, err := client.Dial(lis.Addr().String())
	check(err)
	defer cl.Close()
	ctx := context.Background()
	start := time.Now()
	_, n, _, err := cl.Write(ctx, "", "", keystream(3, size))
	check(err)
	if n != size {
		check(fmt.Errorf("gRPC hop: server received %d of %d bytes", n, size))
	}
	in = float64(size) / time.Since(start).Seconds()
	start = time.Now()
	rc, err := cl.Read(ctx, nil, "", 0, -1)
	check(err)
	got, err := io.Copy(io.Discard, rc)
	check(err)
	rc.Close()
	if got != size {
		check(fmt.Errorf("gRPC hop: read %d of %d bytes", got, size))
	}
	return in, float64(got) / time.Since(start).Seconds()
}

// memDedup is a dedup server that stores nothing: Write counts what it
// receives, Read sends size bytes of one buffer in messages of the real
// server's size.
type memDedup struct {
	dpb.UnimplementedDedupServer
	size int64
}

func (m *memDedup) Write(stream dpb.Dedup_WriteServer) error {
	var n int64
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&dpb.WriteResponse{Size: n})
		}
		if err != nil {
			return err
		}
		n += int64(len(req.Data))
	}
}

func (m *memDedup) Read(_ *dpb.ReadRequest, stream dpb.Dedup_ReadServer) error {
	buf, err := io.ReadAll(keystream(4, 1<<20))
	check(err)
	for left := m.size; left > 0; {
		n := min(left, int64(len(buf)))
		if err := stream.Send(&dpb.ReadResponse{Data: buf[:n]}); err != nil {
			return err
		}
		left -= n
	}
	return nil
}
