package main

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"shoal/services/dedup/client"
	shoalfs "shoal/services/fs"
	"shoal/shared/dht"
	"shoal/shared/edge"
)

// The file-system commands talk to the cluster directly (DHT through
// -placement), signing volume heads and inodes with the fs signing key
// (-key-file, by default <data>/fs/signing.key, created on first use).
// Every mount of a volume and the admin commands must share that key.

const fsUsage = `usage:
  shoal fs create NAME [-policy P]   create a file-system volume (P: the dedup tier's default)
  shoal fs list                      list volumes
  shoal fs delete NAME               delete a volume mounted nowhere, releasing its data
  shoal mount VOLUME DIR             mount a volume with FUSE, in the foreground until
                                     SIGINT/SIGTERM or fusermount3 -u DIR
common flags: -placement HOST:PORT[,...] -data DIR -key-file FILE -dedup HOST:PORT
mount flags: -nats URL (invalidations between mounts) -cache-mib N -spool-dir DIR`

const defaultDedupAddr = "127.0.0.1:7300"

func cmdFS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 {
		return usagef("%s", fsUsage)
	}
	switch args[0] {
	case "create":
		var pol string
		return withFS(ctx, "fs create", args[1:], stderr, 1, func(fs *flag.FlagSet) {
			fs.StringVar(&pol, "policy", "", "storage policy of the files' data, e.g. chunk=cdc:16k/64k/256k,redundancy=ec:4+2 (default: the dedup tier's)")
		}, func(ctx context.Context, reg *shoalfs.Registry, _ *client.Client, a []string) error {
			if err := reg.Create(ctx, a[0], pol); err != nil {
				return asUsage(err, shoalfs.ErrInvalid, shoalfs.ErrExists)
			}
			fmt.Fprintln(stdout, a[0])
			return nil
		})
	case "list":
		return withFS(ctx, "fs list", args[1:], stderr, 0, nil, func(ctx context.Context, reg *shoalfs.Registry, _ *client.Client, _ []string) error {
			vols, err := reg.List(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPOLICY\tCREATED")
			for _, v := range vols {
				pol := v.Policy
				if pol == "" {
					pol = "(default)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Name, pol, v.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		})
	case "delete":
		return withFS(ctx, "fs delete", args[1:], stderr, 1, nil, func(ctx context.Context, reg *shoalfs.Registry, dc *client.Client, a []string) error {
			return asUsage(reg.Delete(ctx, a[0], dc), shoalfs.ErrNotFound, shoalfs.ErrInvalid)
		})
	}
	return usagef("%s", fsUsage)
}

// cmdMount mounts a volume and serves it until a signal (which unmounts
// it) or an external unmount.
func cmdMount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var spoolDir, natsURL string
	var cacheMiB int
	return withFS(ctx, "mount", args, stderr, 2, func(fs *flag.FlagSet) {
		fs.StringVar(&spoolDir, "spool-dir", "", "directory for the spools of files being written (default: the OS temp dir)")
		fs.IntVar(&cacheMiB, "cache-mib", 64, "cache of file data read, in MiB")
		fs.StringVar(&natsURL, "nats", "nats://127.0.0.1:4222", "NATS carrying invalidations between the mounts of a volume (empty: none; other mounts' changes are then seen at open and within 1 s)")
	}, func(ctx context.Context, reg *shoalfs.Registry, dc *client.Client, a []string) error {
		vol, dir := a[0], a[1]
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return usagef("mount point %s is not a directory", dir)
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		cfg := shoalfs.Config{CacheBytes: cacheMiB << 20, SpoolDir: spoolDir, Log: log}
		if natsURL != "" {
			nc, err := nats.Connect(natsURL, append(edge.NATSOptions(), nats.Name("shoal mount "+vol), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))...)
			if err != nil {
				log.Warn("no invalidations between mounts (changes seen at open and within 1 s)", "nats", natsURL, "err", err)
			} else {
				defer nc.Close()
				cfg.NATS = nc
			}
		}
		fsys, err := reg.Open(ctx, vol, dc, cfg)
		if err != nil {
			return asUsage(err, shoalfs.ErrNotFound, shoalfs.ErrInvalid)
		}
		srv, err := fsys.Mount(dir)
		if err != nil {
			return fmt.Errorf("mounting %s at %s: %w", vol, dir, err)
		}
		fmt.Fprintf(stdout, "mounted %s at %s\n", vol, dir)
		done := make(chan struct{})
		go func() {
			srv.Wait()
			close(done)
		}()
		select {
		case <-done: // unmounted from outside (fusermount3 -u)
			return nil
		case <-ctx.Done():
		}
		if err := srv.Unmount(); err != nil {
			return fmt.Errorf("unmounting %s: %w (is it in use?)", dir, err)
		}
		<-done
		return nil
	})
}

// withFS is withCluster for the fs commands, whose default key file is
// created on first use (no server creates it), plus -dedup: it parses
// flags (before or after the nargs positional arguments), loads the key,
// connects to the cluster through -placement, waits for a write quorum of
// storage nodes and dials the dedup tier (lazily), then runs fn.
func withFS(ctx context.Context, name string, args []string, stderr io.Writer, nargs int, extra func(*flag.FlagSet),
	fn func(ctx context.Context, reg *shoalfs.Registry, dc *client.Client, args []string) error) error {
	return withDedup(ctx, name, "fs", true, fsUsage, args, stderr, nargs, extra,
		func(ctx context.Context, cl *dht.Client, key ed25519.PrivateKey, dc *client.Client, pos []string) error {
			return fn(ctx, shoalfs.NewRegistry(cl, key), dc, pos)
		})
}
