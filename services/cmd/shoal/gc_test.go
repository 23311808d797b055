package main

import (
	"log/slog"
	"runtime/debug"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"max\n", 0, false},                 // cgroup v2, no limit
		{"536870912\n", 536870912, true},    // 512 MiB
		{"9223372036854771712\n", 0, false}, // cgroup v1's "no limit"
		{"0\n", 0, false},
		{"-1\n", 0, false},
		{"lots\n", 0, false},
	} {
		got, ok := parseMemoryLimit(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// serve raises the GC target unless GOGC says otherwise.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	log := slog.New(slog.DiscardHandler)

	t.Setenv("GOGC", "")
	debug.SetGCPercent(100)
	tuneGC(log)
	if got := debug.SetGCPercent(100); got != serveGCPercent {
		t.Fatalf("GC percent %d after tuneGC, want %d", got, serveGCPercent)
	}

	t.Setenv("GOGC", "123")
	debug.SetGCPercent(123)
	tuneGC(log)
	if got := debug.SetGCPercent(100); got != 123 {
		t.Fatalf("GC percent %d after tuneGC with GOGC=123 set", got)
	}
}
