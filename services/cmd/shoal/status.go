package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	ppb "shoal/proto/placementpb"
	"shoal/shared/edge"
	"shoal/shared/rpc"
)

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	addr := fs.String("placement", "127.0.0.1:7100", "placement service address")
	out := fs.String("o", "table", "output format: table or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out != "table" && *out != "json" {
		return usagef("-o must be table or json")
	}
	cc, err := rpc.Dial(*addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := ppb.NewPlacementClient(cc).GetView(ctx, &ppb.GetViewRequest{})
	if err != nil {
		return fmt.Errorf("placement %s: %w", *addr, err)
	}
	if *out == "json" {
		b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(v)
		if err != nil {
			return err
		}
		var pretty any
		_ = json.Unmarshal(b, &pretty)
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(pretty)
	}
	nodes := append([]*ppb.Node(nil), v.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Id < nodes[j].Id })
	fmt.Fprintf(stdout, "epoch %d, %d nodes\n", v.Epoch, len(nodes))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tZONE\tSTATE\tBLOCKS\tUSED\tCAPACITY")
	for _, n := range nodes {
		capacity := "unlimited"
		if n.CapacityBytes > 0 {
			capacity = bytesHuman(n.CapacityBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Id, n.Addr, n.Zone,
			strings.ToLower(strings.TrimPrefix(n.State.String(), "NODE_STATE_")), n.Blocks, bytesHuman(n.UsedBytes), capacity)
	}
	return tw.Flush()
}

func bytesHuman(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func cmdHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("health", stderr)
	httpURL := fs.String("http", "", "check an HTTP service instead (the S3 frontend): healthy when URL answers with a status below 500")
	nbdAddr := fs.String("nbd", "", "check an NBD server instead: healthy when HOST:PORT greets as fixed-newstyle NBD")
	natsURL := fs.String("nats", "", "check a NATS server instead: healthy when URL accepts a client and answers a ping")
	proxy := fs.String("proxy", "", "reach the gRPC service through this edge proxy (HOST:PORT; the edge's own health check)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *proxy != "" {
		// rpc.Dial takes the proxy from the environment (shared/edge).
		if err := os.Setenv(edge.Env, *proxy); err != nil {
			return err
		}
	}
	if *natsURL != "" {
		if fs.NArg() != 0 {
			return usagef("usage: shoal health -nats URL")
		}
		return natsHealth(*natsURL, stdout)
	}
	if *nbdAddr != "" {
		if fs.NArg() != 0 {
			return usagef("usage: shoal health -nbd HOST:PORT")
		}
		return nbdHealth(ctx, *nbdAddr, stdout)
	}
	if *httpURL != "" {
		if fs.NArg() != 0 {
			return usagef("usage: shoal health HOST:PORT | shoal health -http URL")
		}
		return httpHealth(ctx, *httpURL, stdout)
	}
	if fs.NArg() != 1 {
		return usagef("usage: shoal health HOST:PORT | shoal health -http URL")
	}
	cc, err := rpc.Dial(fs.Arg(0))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s: %s", fs.Arg(0), resp.Status)
	}
	fmt.Fprintln(stdout, "SERVING")
	return nil
}

// natsHealth is the health check of the NATS tier: a client connection and
// a ping round trip (PING/PONG), which a member only answers once it serves.
func natsHealth(url string, stdout io.Writer) error {
	nc, err := nats.Connect(url, nats.Timeout(3*time.Second), nats.NoReconnect(), nats.Name("shoal health"))
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := nc.FlushTimeout(3 * time.Second); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	fmt.Fprintln(stdout, "SERVING")
	return nil
}

// nbdHealth is the health check of the NBD frontend: the server's greeting,
// then an orderly NBD_OPT_ABORT, so the check leaves no half-open session.
func nbdHealth(ctx context.Context, addr string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	var greet [18]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil {
		return fmt.Errorf("%s: no NBD greeting: %w", addr, err)
	}
	const optMagic = 0x49484156454F5054 // "IHAVEOPT"
	if string(greet[:8]) != "NBDMAGIC" || binary.BigEndian.Uint64(greet[8:16]) != optMagic {
		return fmt.Errorf("%s: not a newstyle NBD server", addr)
	}
	var msg [20]byte
	binary.BigEndian.PutUint32(msg[0:4], 1) // NBD_FLAG_C_FIXED_NEWSTYLE
	binary.BigEndian.PutUint64(msg[4:12], optMagic)
	binary.BigEndian.PutUint32(msg[12:16], 2) // NBD_OPT_ABORT, no data
	if _, err := c.Write(msg[:]); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "SERVING")
	return nil
}

// httpHealth is the health check of an HTTP frontend: any answer below 500
// means it serves (the S3 frontend answers an anonymous request with an S3
// error such as 403, which is still an answer).
func httpHealth(ctx context.Context, url string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usagef("-http: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	fmt.Fprintln(stdout, "SERVING")
	return nil
}
