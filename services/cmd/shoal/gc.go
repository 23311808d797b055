package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// serveGCPercent is the garbage collector's target for `shoal serve`
// (Go's default is 100). Streams allocate a buffer per chunk on every hop,
// and the all-in-one's live heap is small (~35 MB), so the collector ran
// 28 times during one 256 MiB get (GODEBUG=gctrace=1); at 200 it runs 7
// times and the all-in-one spends 16-20% less CPU per get, alternated
// against 100 (see the README's numbers), for a heap
// up to three times the live one instead of two (RSS after the dedup
// benchmark's load 202 -> 375 MiB; 400 gave a little more for 877 MiB).
// GOGC, when set, wins.
const serveGCPercent = 200

// memoryLimitShare is the part of a cgroup's memory limit the heap may
// use before the collector works harder (GOMEMLIMIT, when set, wins): a
// larger GC target must not take a container past its limit.
const memoryLimitShare = 0.9

// tuneGC sets the collector's target and, in a memory-limited cgroup (a
// container with a memory limit), a soft memory limit under it.
func tuneGC(log *slog.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if limit, ok := cgroupMemoryLimit(); ok {
		soft := int64(float64(limit) * memoryLimitShare)
		debug.SetMemoryLimit(soft)
		log.Info("memory limit from cgroup", "cgroup_bytes", limit, "soft_limit_bytes", soft)
	}
}

// cgroupMemoryLimit reads this process's cgroup memory limit (v2, then
// v1); ok is false when there is none.
func cgroupMemoryLimit() (int64, bool) {
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		return parseMemoryLimit(string(b))
	}
	return 0, false
}

// parseMemoryLimit reads a cgroup memory limit file's content: "max" (v2)
// or a number of bytes, where v1 writes "no limit" as a number near 2^63.
func parseMemoryLimit(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0, false
	}
	return n, true
}
