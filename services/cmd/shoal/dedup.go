package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"shoal/services/dedup/client"
	"shoal/shared/block"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
	"shoal/shared/dht"
)

// dedupFlags are the flags every dedup-tier command takes.
func dedupFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := newFlags(name, stderr)
	addr := fs.String("dedup", "127.0.0.1:7300", "dedup service address")
	return fs, addr
}

// parseInterleaved parses flags given before and after the positional
// arguments (`shoal put FILE --policy P`), which flag.Parse alone stops at.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func dialDedup(addr string) (*client.Client, error) {
	return client.Dial(addr)
}

// parseRefArg reads a reference in its printed form; a malformed one is a
// usage mistake.
func parseRefArg(s string) ([]byte, error) {
	ref, err := manifest.ParseRefString(s)
	if err != nil {
		return nil, usagef("malformed reference %q: %v", s, err)
	}
	return ref.MarshalBinary()
}

func cmdPut(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, addr := dedupFlags("put", stderr)
	pol := fs.String("policy", "", "storage policy, e.g. chunk=cdc:16k/64k/256k,compress=zstd:3,encrypt=on,redundancy=ec:4+2 (default: the default policy)")
	vol := fs.String("volume", "", "volume (its derived key encrypts the data when the policy says encrypt=on)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: shoal put FILE|- [--policy P] [--volume V]")
	}
	if *pol != "" {
		if _, err := policy.Parse(*pol); err != nil {
			return usagef("%v", err)
		}
	}
	r := stdin
	if pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	c, err := dialDedup(*addr)
	if err != nil {
		return err
	}
	defer c.Close()
	// Offered: data already in the cluster (a file put again, a copy) is
	// hashed here and not sent.
	bin, _, _, err := c.WriteOffered(ctx, *pol, *vol, r)
	if err != nil {
		return err
	}
	ref, err := manifest.ParseRef(bin)
	if err != nil {
		return fmt.Errorf("dedup service returned a bad reference: %w", err)
	}
	fmt.Fprintln(stdout, ref.String())
	return nil
}

func cmdGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, addr := dedupFlags("get", stderr)
	out := fs.String("o", "", "write to this file instead of stdout")
	vol := fs.String("volume", "", "volume of an encrypted reference")
	place := fs.String("placement", "", "placement address(es), comma-separated: read unencrypted data from the storage nodes directly (default: the all-in-one's 127.0.0.1:7100 when -dedup is its address; \"none\" reads through the dedup tier)")
	ref, c, err := refCommand(fs, args, addr, "usage: shoal get REF [-o FILE]")
	if err != nil {
		return err
	}
	defer c.Close()
	if *place == "" && *addr == defaultDedupAddr {
		*place = "127.0.0.1:7100"
	}
	if *place != "" && *place != "none" {
		if dc := directReads(ctx, c, strings.Split(*place, ",")); dc != nil {
			defer dc.Close()
		}
	}
	rc, err := c.Read(ctx, ref, *vol, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	if *out == "" {
		_, err = io.Copy(stdout, rc)
		return err
	}
	return writeOut(*out, rc)
}

// writeOut writes r to the file at path. A regular file (or a new one) is
// written beside the target and renamed over it, so a failed read leaves
// no partial file under the requested name; anything else that exists
// there (a device such as /dev/null, a FIFO) is written in place, since
// renaming over it would replace the device node with a plain file.
func writeOut(path string, r io.Reader) error {
	mode := os.FileMode(0o666) &^ umask()
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, r); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".shoal-get-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	// CreateTemp makes the file 0600; give it the mode a shell redirect
	// (or the file it replaces) would have.
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// umask reads the process's file mode creation mask (setting it back at
// once: the CLI is single-threaded here).
func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

func cmdStat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, addr := dedupFlags("stat", stderr)
	vol := fs.String("volume", "", "volume of an encrypted reference")
	ref, c, err := refCommand(fs, args, addr, "usage: shoal stat REF")
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.Stat(ctx, ref, *vol)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "size              %d\n", st.Size)
	fmt.Fprintf(stdout, "chunks            %d\n", st.Chunks)
	fmt.Fprintf(stdout, "stored bytes      %d\n", st.Stored)
	fmt.Fprintf(stdout, "physical bytes    %d   (with parity, one copy)\n", st.Physical)
	fmt.Fprintf(stdout, "unique bytes      %d\n", st.Unique)
	fmt.Fprintf(stdout, "compression ratio %.2f\n", st.CompressionRatio())
	fmt.Fprintf(stdout, "dedup ratio       %.2f   (within this stream)\n", st.DedupRatio())
	fmt.Fprintf(stdout, "policy            %s\n", st.Policy)
	return nil
}

func cmdDF(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, addr := dedupFlags("df", stderr)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("usage: shoal df")
	}
	c, err := dialDedup(*addr)
	if err != nil {
		return err
	}
	defer c.Close()
	u, err := c.Usage(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "logical bytes     %d   (live references, each use counted)\n", u.Logical)
	fmt.Fprintf(stdout, "physical bytes    %d   (held by storage nodes, replicas and parity included)\n", u.Physical)
	fmt.Fprintf(stdout, "blocks            %d\n", u.Blocks)
	fmt.Fprintf(stdout, "segment files     %d   (on the nodes' disks: blocks of 1 KiB and more, and deleted ones' space until compacted)\n", u.Segments)
	fmt.Fprintf(stdout, "root journals     %d   (%d root changes not yet folded into the root set)\n", u.Journals, u.JournalEntries)
	if u.Logical > 0 {
		fmt.Fprintf(stdout, "physical/logical  %.2f\n", float64(u.Physical)/float64(u.Logical))
	}
	return nil
}

func cmdGC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, addr := dedupFlags("gc", stderr)
	grace := fs.Duration("grace", 6*time.Hour, "keep blocks touched more recently than this; must exceed the longest write in progress")
	dry := fs.Bool("dry-run", false, "count what would be reclaimed, delete nothing")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("usage: shoal gc [--grace D] [--dry-run]")
	}
	if *grace < 0 {
		return usagef("--grace must not be negative")
	}
	c, err := dialDedup(*addr)
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Collect(ctx, *grace, *dry)
	if err != nil {
		return err
	}
	verb := "swept"
	if *dry {
		verb = "would sweep"
	}
	fmt.Fprintf(stdout, "marked %d blocks reachable from live references; %s %d block copies, %d bytes\n", res.Marked, verb, res.Swept, res.FreedBytes)
	return nil
}

// refCommand parses the flags and the single REF argument of a command
// that reads a reference, and dials the dedup tier (addr is read after
// parsing, so -dedup on the command line counts).
func refCommand(fs *flag.FlagSet, args []string, addr *string, usage string) ([]byte, *client.Client, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if len(pos) != 1 {
		return nil, nil, usagef("%s", usage)
	}
	ref, err := parseRefArg(pos[0])
	if err != nil {
		return nil, nil, err
	}
	c, err := dialDedup(*addr)
	if err != nil {
		return nil, nil, err
	}
	return ref, c, nil
}

// directReads sets c to read unencrypted data from the storage nodes
// (client.ReadDirect) through a DHT client on the placement replicas at
// place, if one answers within two seconds; otherwise reads go through the
// dedup tier as before. The DHT client, if any, is the caller's to close.
func directReads(ctx context.Context, c *client.Client, place []string) *dht.Client {
	dc, err := dht.New(dht.Config{Placement: place, MaxBlockSize: block.MaxSealed}, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil
	}
	vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := dc.RefreshView(vctx); err != nil || c.ReadDirect(dc) != nil {
		dc.Close()
		return nil
	}
	return dc
}
