package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"shoal/shared/block"
	"shoal/shared/dht"
	"shoal/shared/identity"
)

func cmdUser(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("usage: shoal user create|list|export [NAME]")
	}
	fs := newFlags("user "+args[0], stderr)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	store := identity.DefaultStore()
	switch args[0] {
	case "create":
		if fs.NArg() != 1 {
			return usagef("usage: shoal user create NAME")
		}
		u, err := store.Create(fs.Arg(0))
		if errors.Is(err, identity.ErrBadName) {
			return usageError{err.Error()}
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", u.Name, hex.EncodeToString(u.Public()))
	case "list":
		names, err := store.List()
		if err != nil {
			return err
		}
		for _, n := range names {
			u, err := store.Load(n)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s %s\n", n, hex.EncodeToString(u.Public()))
		}
	case "export":
		if fs.NArg() != 1 {
			return usagef("usage: shoal user export NAME")
		}
		u, err := store.Load(fs.Arg(0))
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, hex.EncodeToString(u.Public()))
	default:
		return usagef("unknown user command %q", args[0])
	}
	return nil
}

// withClient parses a subcommand's flags (plus the DHT's) and runs fn with
// a connected client.
func withClient(ctx context.Context, name string, args []string, stderr io.Writer, extra func(fsArgs []string) error,
	fn func(ctx context.Context, c *dht.Client, user identity.User, args []string) error) error {
	fs := newFlags(name, stderr)
	var cfg dht.Config
	cfg.RegisterFlags("", fs)
	userName := fs.String("user", identity.DefaultUser, "user whose key signs the write")
	wait := fs.Duration("wait", 10*time.Second, "how long to wait for enough storage nodes")
	if err := parse(fs, args); err != nil {
		return err
	}
	if extra != nil {
		if err := extra(fs.Args()); err != nil {
			return err
		}
	}
	u, created, err := identity.DefaultStore().LoadOrCreate(*userName)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stderr, "shoal: created user %q (key in %s)\n", u.Name, identity.DefaultStore().Dir)
	}
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
	return fn(ctx, c, u, fs.Args())
}

func nargs(n int, usage string) func([]string) error {
	return func(a []string) error {
		if len(a) != n {
			return usagef("usage: %s", usage)
		}
		return nil
	}
}

func blockCreateMutable(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return withClient(ctx, "block create-mutable", args, stderr, func(a []string) error {
		if len(a) > 1 {
			return usagef("usage: shoal block create-mutable [FILE|-]")
		}
		return nil
	}, func(ctx context.Context, c *dht.Client, u identity.User, a []string) error {
		name := ""
		if len(a) == 1 {
			name = a[0]
		}
		data, err := readInput(name, stdin, c.Config().MaxBlockSize)
		if err != nil {
			return err
		}
		addr, err := c.CreateMutable(ctx, u.Key, data, nil)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, addr)
		return nil
	})
}

func blockUpdate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return withClient(ctx, "block update", args, stderr, nargs(2, "shoal block update ADDR FILE|-"),
		func(ctx context.Context, c *dht.Client, u identity.User, a []string) error {
			addr, err := block.Parse(a[0])
			if err != nil {
				return usageError{err.Error()}
			}
			data, err := readInput(a[1], stdin, c.Config().MaxBlockSize)
			if err != nil {
				return err
			}
			v, err := c.Update(ctx, u.Key, addr, func([]byte, uint64) ([]byte, error) { return data, nil })
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "version %d\n", v)
			return nil
		})
}

func cmdName(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("usage: shoal name set NAME ADDR | get NAME [-owner PUBKEY] | rm NAME")
	}
	switch args[0] {
	case "set":
		return withClient(ctx, "name set", args[1:], stderr, nargs(2, "shoal name set NAME ADDR"),
			func(ctx context.Context, c *dht.Client, u identity.User, a []string) error {
				addr, err := block.Parse(a[1])
				if err != nil {
					return usageError{err.Error()}
				}
				return c.SetName(ctx, u.Key, a[0], addr[:])
			})
	case "rm":
		return withClient(ctx, "name rm", args[1:], stderr, nargs(1, "shoal name rm NAME"),
			func(ctx context.Context, c *dht.Client, u identity.User, a []string) error {
				return c.DeleteName(ctx, u.Key, a[0])
			})
	case "get":
		var owner string
		rest := args[1:]
		// -owner is the only flag of its own; the rest are the client's.
		for i := 0; i < len(rest); i++ {
			if (rest[i] == "-owner" || rest[i] == "--owner") && i+1 < len(rest) {
				owner = rest[i+1]
				rest = append(append([]string{}, rest[:i]...), rest[i+2:]...)
				break
			}
		}
		return withClient(ctx, "name get", rest, stderr, nargs(1, "shoal name get NAME [-owner PUBKEY]"),
			func(ctx context.Context, c *dht.Client, u identity.User, a []string) error {
				pub := u.Public()
				if owner != "" {
					b, err := hex.DecodeString(owner)
					if err != nil || len(b) != 32 {
						return usagef("-owner takes a 64-character hex public key")
					}
					pub = b
				}
				m, err := c.ResolveName(ctx, pub, a[0])
				if err != nil {
					return err
				}
				if len(m.Payload) == block.AddressSize {
					fmt.Fprintln(stdout, hex.EncodeToString(m.Payload))
				} else {
					_, err = stdout.Write(m.Payload)
				}
				return err
			})
	}
	return usagef("unknown name command %q", args[0])
}
