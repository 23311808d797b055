// Command shoal is Shoal's one binary: `shoal serve` runs services, the
// other subcommands are the operator's tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// exitUsage and exitFailure are the CLI's exit codes.
const (
	exitUsage   = 2
	exitFailure = 1
)

// usageError marks a mistake in how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const topUsage = `usage: shoal <command> [flags]

commands:
  serve                 run services (-target=all by default: NATS, placement, 3 storage nodes)
  status                show the cluster view (-o json for scripts)
  block put [FILE|-]    store an immutable block, print its address
  block get ADDR        write a block's bytes to stdout (immutable or mutable)
  block stat ADDR       show which nodes hold a block
  block create-mutable [FILE|-]   create a mutable block signed by -user, print its address
  block update ADDR FILE|-        write the next version of a mutable block
  name set NAME ADDR    bind a name (under your key) to an address
  name get NAME         resolve a name (-owner PUBKEY for another user's)
  name rm NAME          remove a name (signed tombstone)
  user create|list|export [NAME]  manage local signing keys
  health ADDR           check a service's gRPC health (exit 0 when serving)
  s3 key create|list|delete       manage S3 access keys (eval $(shoal s3 key create))
  bucket create NAME [-policy P]  create an S3 bucket with a storage policy
  nbd create|list|stat|delete     manage block-device volumes (served at nbd://HOST:10809/NAME)
  fs create|list|delete NAME      manage file-system volumes
  mount VOLUME DIR      mount a file-system volume with FUSE (foreground; Ctrl-C or fusermount3 -u ends it)
  volume-plugin         serve the Docker volume plugin (the managed plugin's entrypoint, see stacks/README.md)
  put FILE|- [--policy P] [--volume V]   store a stream through the dedup tier, print its reference
  get REF [-o FILE]     read a stream back (verified) to stdout or FILE
  stat REF              size, chunks, stored bytes, dedup and compression ratios
  df                    logical vs physical bytes, cluster-wide
  gc [--grace D] [--dry-run]   reclaim blocks no live reference reaches

Run 'shoal <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return exitUsage
	}
	if args[0] != "serve" { // serve starts its own, after its set-up
		defer startCPUProfile("SHOAL_CLI_CPU_PROFILE", "")()
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(ctx, args[1:], stdout, stderr)
	case "block":
		err = cmdBlock(ctx, args[1:], stdin, stdout, stderr)
	case "user":
		err = cmdUser(ctx, args[1:], stdout, stderr)
	case "name":
		err = cmdName(ctx, args[1:], stdout, stderr)
	case "health":
		err = cmdHealth(ctx, args[1:], stdout, stderr)
	case "s3":
		err = cmdS3(ctx, args[1:], stdout, stderr)
	case "bucket":
		err = cmdBucket(ctx, args[1:], stdout, stderr)
	case "nbd":
		err = cmdNBD(ctx, args[1:], stdout, stderr)
	case "fs":
		err = cmdFS(ctx, args[1:], stdout, stderr)
	case "mount":
		err = cmdMount(ctx, args[1:], stdout, stderr)
	case "volume-plugin":
		err = cmdVolumePlugin(ctx, args[1:], stdout, stderr)
	case "put":
		err = cmdPut(ctx, args[1:], stdin, stdout, stderr)
	case "get":
		err = cmdGet(ctx, args[1:], stdout, stderr)
	case "stat":
		err = cmdStat(ctx, args[1:], stdout, stderr)
	case "df":
		err = cmdDF(ctx, args[1:], stdout, stderr)
	case "gc":
		err = cmdGC(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, topUsage)
		return 0
	default:
		err = usagef("unknown command %q", args[0])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case isUsage(err):
		fmt.Fprintf(stderr, "shoal: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "shoal: %v\n", err)
		return exitFailure
	}
}

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// newFlags makes a subcommand's flag set; its parse errors are usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("shoal "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}
