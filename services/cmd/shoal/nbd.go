package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"shoal/services/dedup/client"
	"shoal/services/nbd"
	"shoal/shared/dht"
)

// The volume commands talk to the cluster directly (DHT through
// -placement), signing volume heads with the NBD signing key (-key-file,
// by default <data>/nbd/signing.key as the all-in-one creates it). Only
// delete needs the dedup tier (-dedup), to release the volume's data.

const nbdUsage = `usage:
  shoal nbd create NAME -size SIZE [-policy P]   create a volume (SIZE: bytes or 512M, 10G, 1T)
  shoal nbd list                                 list volumes (name, size, policy, holder)
  shoal nbd stat NAME                            show one volume
  shoal nbd delete NAME                          delete a volume no server holds
  shoal nbd unlock NAME                          break the write lease of a dead server (its unflushed writes are lost)
common flags: -placement HOST:PORT[,...] -data DIR -key-file FILE -dedup HOST:PORT`

func cmdNBD(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 {
		return usagef("%s", nbdUsage)
	}
	switch args[0] {
	case "create":
		var size, pol string
		return withNBD(ctx, "nbd create", args[1:], stderr, 1, func(fs *flag.FlagSet) {
			fs.StringVar(&size, "size", "", "volume size: bytes, or with a K, M, G or T suffix (powers of 1024)")
			fs.StringVar(&pol, "policy", "", "storage policy; chunking must be fixed, e.g. chunk=fixed:64k,redundancy=ec:4+2 (default "+nbd.DefaultPolicy+")")
		}, func(ctx context.Context, reg *nbd.Registry, _ *client.Client, a []string) error {
			n, err := parseSize(size)
			if err != nil {
				return usageError{err.Error()}
			}
			if err := reg.Create(ctx, a[0], n, pol); err != nil {
				return asUsage(err, nbd.ErrInvalid, nbd.ErrExists)
			}
			fmt.Fprintln(stdout, a[0])
			return nil
		})
	case "list":
		return withNBD(ctx, "nbd list", args[1:], stderr, 0, nil, func(ctx context.Context, reg *nbd.Registry, _ *client.Client, _ []string) error {
			vols, err := reg.List(ctx)
			if err != nil {
				return err
			}
			return printVolumes(stdout, vols)
		})
	case "stat":
		return withNBD(ctx, "nbd stat", args[1:], stderr, 1, nil, func(ctx context.Context, reg *nbd.Registry, _ *client.Client, a []string) error {
			v, err := reg.Stat(ctx, a[0])
			if err != nil {
				return asUsage(err, nbd.ErrNotFound)
			}
			return printVolumes(stdout, []nbd.Info{v})
		})
	case "unlock":
		return withNBD(ctx, "nbd unlock", args[1:], stderr, 1, nil, func(ctx context.Context, reg *nbd.Registry, _ *client.Client, a []string) error {
			was, err := reg.BreakLease(ctx, a[0])
			if err != nil {
				return asUsage(err, nbd.ErrNotFound)
			}
			if was == "" {
				was = "nobody"
			}
			fmt.Fprintf(stdout, "%s: lease of %s broken\n", a[0], was)
			return nil
		})
	case "delete":
		return withNBD(ctx, "nbd delete", args[1:], stderr, 1, nil, func(ctx context.Context, reg *nbd.Registry, dc *client.Client, a []string) error {
			return asUsage(reg.Delete(ctx, a[0], dc), nbd.ErrNotFound)
		})
	}
	return usagef("%s", nbdUsage)
}

func printVolumes(w io.Writer, vols []nbd.Info) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tPOLICY\tHELD BY\tCREATED")
	for _, v := range vols {
		holder := v.Holder
		if holder == "" {
			holder = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", v.Name, v.Size, v.Policy, holder, v.Created.Format(time.RFC3339))
	}
	return tw.Flush()
}

// parseSize reads 1048576, 512K, 64M, 10G or 1T (powers of 1024).
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("-size is required")
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad -size %q", s)
	}
	return n * mult, nil
}

// withNBD runs fn with the volume registry and a dedup client.
func withNBD(ctx context.Context, name string, args []string, stderr io.Writer, nargs int, extra func(*flag.FlagSet),
	fn func(ctx context.Context, reg *nbd.Registry, dc *client.Client, args []string) error) error {
	return withDedup(ctx, name, "nbd", false, nbdUsage, args, stderr, nargs, extra,
		func(ctx context.Context, cl *dht.Client, key ed25519.PrivateKey, dc *client.Client, pos []string) error {
			return fn(ctx, nbd.NewRegistry(cl, key), dc, pos)
		})
}
