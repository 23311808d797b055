// Package cpus tells CPU-bound work how many cores it may use. A process
// hosting storage nodes raises GOMAXPROCS above the core count (fsyncs hold
// Ps; see services/app), which is right for goroutines that block in
// syscalls and wrong for sizing pools of CPU-bound workers or per-worker
// state such as zstd encoders.
package cpus

import "runtime"

// base is GOMAXPROCS as the process started: the core count, the cgroup
// limit, or the GOMAXPROCS environment variable.
var base = runtime.GOMAXPROCS(0)

// N is how many CPU-bound workers to run.
func N() int { return base }
