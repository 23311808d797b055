package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a CPU profile of `shoal serve` to the file named
// by the environment variable cpuEnv (SHOAL_CPU_PROFILE) until the
// returned function runs (at shutdown), so a benchmark can see where a
// running service spends its time; other commands, such as `shoal get`,
// take theirs from SHOAL_CLI_CPU_PROFILE, so that clients a benchmark runs
// beside a profiled cluster do not write over its profile. At shutdown it
// also writes the allocations since start to the file named by allocEnv,
// if any (serve: SHOAL_ALLOC_PROFILE; where the garbage comes from:
// `go tool pprof -sample_index=alloc_space`).
func startCPUProfile(cpuEnv, allocEnv string) func() {
	stopCPU := func() {}
	if path := os.Getenv(cpuEnv); path != "" {
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
		if path := os.Getenv(allocEnv); allocEnv != "" && path != "" {
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
