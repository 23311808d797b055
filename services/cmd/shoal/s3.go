package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"shoal/services/dedup/client"
	"shoal/services/s3"
	"shoal/services/s3/cluster"
	"shoal/shared/dht"
	"shoal/shared/identity"
	"shoal/shared/rpc"
)

// The S3 admin commands talk to the cluster directly (DHT through
// -placement), signing metadata with the S3 signing key: the file
// -key-file, by default <data>/s3/signing.key as the all-in-one creates it
// (env SHOAL_DATA or ./data). They need no S3 endpoint and no access key,
// and the key file is what authorizes them.

const s3Usage = `usage:
  shoal s3 key create [-user U]   print AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... (eval-able)
  shoal s3 key list               list access keys (id, user, created)
  shoal s3 key delete ID          delete an access key
  shoal bucket create NAME [-policy P] [-user U]
common flags: -placement HOST:PORT[,...] -data DIR -key-file FILE`

func cmdS3(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 || args[0] != "key" {
		return usagef("%s", s3Usage)
	}
	switch args[1] {
	case "create":
		user := "admin"
		return withS3(ctx, "s3 key create", args[2:], stderr, 0, func(fs *flag.FlagSet) {
			fs.StringVar(&user, "user", user, "user the key authenticates as")
		}, func(ctx context.Context, srv *s3.Server, _ []string) error {
			id, secret, err := srv.CreateKey(ctx, user)
			if errors.Is(err, s3.ErrInvalidUser) {
				return usageError{err.Error()}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", id, secret)
			return nil
		})
	case "list":
		return withS3(ctx, "s3 key list", args[2:], stderr, 0, nil, func(ctx context.Context, srv *s3.Server, _ []string) error {
			keys, err := srv.ListKeys(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACCESS KEY ID\tUSER\tCREATED")
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.User, k.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		})
	case "delete":
		return withS3(ctx, "s3 key delete", args[2:], stderr, 1, nil, func(ctx context.Context, srv *s3.Server, a []string) error {
			return srv.DeleteKey(ctx, a[0])
		})
	}
	return usagef("%s", s3Usage)
}

func cmdBucket(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 || args[0] != "create" {
		return usagef("%s", s3Usage)
	}
	pol, user := "", "admin"
	return withS3(ctx, "bucket create", args[1:], stderr, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&pol, "policy", "", "storage policy, e.g. redundancy=ec:2+2,encrypt=on (default: the dedup tier's)")
		fs.StringVar(&user, "user", user, "owner of the bucket")
	}, func(ctx context.Context, srv *s3.Server, a []string) error {
		err := srv.CreateBucket(ctx, a[0], user, pol)
		if errors.Is(err, s3.ErrConfig) {
			return usageError{err.Error()}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, a[0])
		return nil
	})
}

// withS3 parses flags (before or after the nargs positional arguments) and
// runs fn with an S3 server object bound to the cluster's metadata.
func withS3(ctx context.Context, name string, args []string, stderr io.Writer, nargs int, extra func(*flag.FlagSet),
	fn func(ctx context.Context, srv *s3.Server, args []string) error) error {
	return withCluster(ctx, name, "s3", false, s3Usage, args, stderr, nargs, extra,
		func(ctx context.Context, cl *dht.Client, key ed25519.PrivateKey, pos []string) error {
			// Key and bucket administration never touches object data; the
			// dedup connection is lazy and stays unused.
			conn, err := rpc.Dial(s3.DefaultConfig().Dedup)
			if err != nil {
				return err
			}
			defer conn.Close()
			srv, err := s3.New(s3.DefaultConfig(), cluster.NewData(conn), cluster.NewMeta(cl, key), nil)
			if err != nil {
				return err
			}
			return fn(ctx, srv, pos)
		})
}

// withDedup is withCluster plus -dedup and a (lazily connected) client of
// the dedup tier, for the frontends whose admin commands store data.
func withDedup(ctx context.Context, name, frontend string, createKey bool, usage string, args []string, stderr io.Writer, nargs int, extra func(*flag.FlagSet),
	fn func(ctx context.Context, cl *dht.Client, key ed25519.PrivateKey, dc *client.Client, args []string) error) error {
	var dedupAddr string
	return withCluster(ctx, name, frontend, createKey, usage, args, stderr, nargs, func(fs *flag.FlagSet) {
		fs.StringVar(&dedupAddr, "dedup", defaultDedupAddr, "dedup service address")
		if extra != nil {
			extra(fs)
		}
	}, func(ctx context.Context, cl *dht.Client, key ed25519.PrivateKey, pos []string) error {
		dc, err := client.Dial(dedupAddr)
		if err != nil {
			return err
		}
		defer dc.Close()
		// Reads of unencrypted data (a mount's files) come from the nodes.
		if err := dc.ReadDirect(cl); err != nil {
			return err
		}
		return fn(ctx, cl, key, dc, pos)
	})
}

// asUsage makes err a usage error (exit 2) when it is one of the
// sentinels: the user's mistake, not a failure.
func asUsage(err error, sentinels ...error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return usageError{err.Error()}
		}
	}
	return err
}

// withCluster is what the admin commands of a frontend share: it parses
// flags (before or after the nargs positional arguments), loads the
// frontend's signing key (-key-file, default <data>/<frontend>/signing.key,
// created when missing if createKey: no server creates the file-system
// key), connects to the cluster through -placement and waits for a write
// quorum of storage nodes, then runs fn.
func withCluster(ctx context.Context, name, frontend string, createKey bool, usage string, args []string, stderr io.Writer, nargs int, extra func(*flag.FlagSet),
	fn func(ctx context.Context, cl *dht.Client, key ed25519.PrivateKey, args []string) error) error {
	fs := newFlags(name, stderr)
	var dc dht.Config
	dc.RegisterFlags("", fs)
	data := fs.String("data", envOr("SHOAL_DATA", "./data"), "data directory of the all-in-one (for the default key file)")
	keyFile := fs.String("key-file", "", frontend+" signing key file (default <data>/"+frontend+"/signing.key)")
	wait := fs.Duration("wait", 10*time.Second, "how long to wait for enough storage nodes")
	if extra != nil {
		extra(fs)
	}
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != nargs {
		return usagef("%s", usage)
	}
	var key ed25519.PrivateKey
	switch {
	case *keyFile != "":
		k, err := identity.LoadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("%s signing key: %w (see -key-file)", frontend, err)
		}
		key = k
	case createKey:
		u, _, err := identity.Store{Dir: filepath.Join(*data, frontend)}.LoadOrCreate("signing")
		if err != nil {
			return fmt.Errorf("%s signing key: %w (see -key-file)", frontend, err)
		}
		key = u.Key
	default:
		k, err := identity.LoadFile(filepath.Join(*data, frontend, "signing.key"))
		if err != nil {
			return fmt.Errorf("%s signing key: %w (see -key-file)", frontend, err)
		}
		key = k
	}
	if err := dc.Validate(); err != nil {
		return err
	}
	cl, err := dht.New(dc, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	if err := cl.WaitForNodes(wctx, cl.Config().WriteQuorum); err != nil {
		return err
	}
	return fn(ctx, cl, key, pos)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
