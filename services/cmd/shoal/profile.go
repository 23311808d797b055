package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a CPU profile of `shoal serve` to
// $SHOAL_CPU_PROFILE until the returned function runs (at shutdown), so a
// benchmark can see where a running service spends its time.
func startCPUProfile() func() {
	path := os.Getenv("SHOAL_CPU_PROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "shoal: cpu profile: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
