// Package randtest holds what randomized tests share: a seed that can be
// replayed and a step count that can be raised, both from the environment.
package randtest

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// Seed is the seed of a randomized test: $env when set (to replay a run),
// else the clock. It is logged, so any run can be replayed.
func Seed(t testing.TB, env string) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(env); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", env, s, err)
		}
		seed = v
	}
	t.Logf("seed %d (set %s to replay)", seed, env)
	return seed
}

// Count is a randomized test's number of steps: $env when set, else def.
func Count(t testing.TB, env string, def int) int {
	t.Helper()
	s := os.Getenv(env)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		t.Fatalf("%s=%q: want a positive count", env, s)
	}
	return v
}
