package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a CPU profile of `shoal serve` (or of any other
// command) to $SHOAL_CPU_PROFILE until the returned function runs (at
// shutdown), so a benchmark can see where a running service or a client
// such as `shoal get` spends its time; at shutdown
// it also writes the allocations since start to $SHOAL_ALLOC_PROFILE
// (where the garbage comes from: `go tool pprof -sample_index=alloc_space`).
func startCPUProfile() func() {
	stopCPU := func() {}
	if path := os.Getenv("SHOAL_CPU_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "shoal: cpu profile: %v\n", err)
		} else {
			stopCPU = func() {
				pprof.StopCPUProfile()
				_ = f.Close()
			}
		}
	}
	return func() {
		stopCPU()
		if path := os.Getenv("SHOAL_ALLOC_PROFILE"); path != "" {
			if err := writeAllocProfile(path); err != nil {
				fmt.Fprintf(os.Stderr, "shoal: allocation profile: %v\n", err)
			}
		}
	}
}

func writeAllocProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
