package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/telemetry"
)

func cmdBlock(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("usage: shoal block put|get|stat ...")
	}
	sub := args[0]
	switch sub {
	case "create-mutable":
		return blockCreateMutable(ctx, args[1:], stdin, stdout, stderr)
	case "update":
		return blockUpdate(ctx, args[1:], stdin, stdout, stderr)
	}
	fs := newFlags("block "+sub, stderr)
	var cfg dht.Config
	cfg.RegisterFlags("", fs)
	fs.Lookup("placement").Usage = "placement service address(es)"
	wait := fs.Duration("wait", 10*time.Second, "how long to wait for enough storage nodes")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	var run func(context.Context, *dht.Client) error
	switch sub {
	case "put":
		if fs.NArg() > 1 {
			return usagef("usage: shoal block put [FILE|-]")
		}
		data, err := readInput(fs.Arg(0), stdin, cfg.MaxBlockSize)
		if err != nil {
			return err
		}
		run = func(ctx context.Context, c *dht.Client) error {
			addr, err := c.Put(ctx, data)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, addr)
			return nil
		}
	case "get", "stat":
		if fs.NArg() != 1 {
			return usagef("usage: shoal block %s ADDR", sub)
		}
		addr, err := block.Parse(fs.Arg(0))
		if err != nil {
			return usageError{err.Error()}
		}
		if sub == "get" {
			run = func(ctx context.Context, c *dht.Client) error {
				data, err := c.Get(ctx, addr)
				if errors.Is(err, block.ErrNotFound) {
					// Not an immutable block: try it as a mutable one.
					var m *dht.Mutable
					if m, err = c.GetMutable(ctx, addr); err == nil {
						data = m.Payload
					}
				}
				if err != nil {
					return err
				}
				_, err = stdout.Write(data)
				return err
			}
		} else {
			run = func(ctx context.Context, c *dht.Client) error { return blockStat(ctx, c, addr, stdout) }
		}
	default:
		return usagef("unknown block command %q", sub)
	}
	shutdown, err := telemetry.Setup(ctx, "shoal-cli")
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	ctx, sp := telemetry.Tracer().Start(ctx, "cli.block."+sub)
	defer sp.End()
	c, err := dht.New(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	if err := c.WaitForNodes(wctx, c.Config().WriteQuorum); err != nil {
		return err
	}
	err = run(ctx, c)
	if err != nil {
		sp.RecordError(err)
	}
	sp.SetAttributes(attribute.Bool("ok", err == nil))
	return err
}

// readInput reads a whole block, refusing more than limit bytes without
// reading the rest of the input.
func readInput(name string, stdin io.Reader, limit int) ([]byte, error) {
	r := stdin
	if name != "" && name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if n > int64(limit) {
		return nil, usageError{fmt.Sprintf("%v: input is larger than the maximum block size of %d bytes (see -max-block-size)", block.ErrTooLarge, limit)}
	}
	return buf.Bytes(), nil
}

func blockStat(ctx context.Context, c *dht.Client, addr block.Address, stdout io.Writer) error {
	placed, err := c.Locate(ctx, addr)
	if err != nil {
		return err
	}
	holders, err := c.Holders(ctx, addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "address  %s\n", addr)
	fmt.Fprintln(stdout, "placed on:")
	for i, n := range placed {
		fmt.Fprintf(stdout, "  %d. %s (%s, zone %s) holds=%v\n", i+1, n.Id, n.Addr, n.Zone, holders[n.Id])
	}
	var others []string
	for id, ok := range holders {
		if !ok {
			continue
		}
		isPlaced := false
		for _, n := range placed {
			isPlaced = isPlaced || n.Id == id
		}
		if !isPlaced {
			others = append(others, id)
		}
	}
	sort.Strings(others)
	for _, id := range others {
		fmt.Fprintf(stdout, "  also held by %s\n", id)
	}
	count := 0
	for _, ok := range holders {
		if ok {
			count++
		}
	}
	fmt.Fprintf(stdout, "copies   %d\n", count)
	if count == 0 {
		return fmt.Errorf("%w: %s", block.ErrNotFound, addr)
	}
	return nil
}
