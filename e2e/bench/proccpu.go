package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU is the CPU time (user + system) process pid has used so far, or
// an error when /proc cannot tell.
func procCPU(pid int) (time.Duration, error) {
	cpu, _, err := procStat(pid)
	return cpu, err
}

// procStat is procCPU and the minor page faults the process has taken:
// on this kind of virtual machine a first touch of a page costs
// microseconds, so fresh memory per MiB moved is a cost of its own.
func procStat(pid int) (time.Duration, int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("bench: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// minflt is field 10, utime and stime fields 14 and 15; f[0] is
	// field 3.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("bench: short /proc/%d/stat", pid)
	}
	flt, err0 := strconv.ParseInt(f[7], 10, 64)
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err0, err1, err2); err != nil {
		return 0, 0, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, flt, nil
}

// cpuMeter measures a process's CPU time across a phase: on a shared,
// noisy machine the CPU a cluster spends per operation moves much less
// from run to run than the operations per second do.
type cpuMeter struct {
	pid    int
	start  time.Duration
	faults int64
	err    error
}

func startCPU(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid}
	m.start, m.faults, m.err = procStat(pid)
	return m
}

// used is the CPU time the process used since startCPU (ok false when
// /proc could not tell).
func (m *cpuMeter) used() (time.Duration, bool) {
	d, _, ok := m.usedFaults()
	return d, ok
}

// usedFaults is used and the minor page faults taken since startCPU.
func (m *cpuMeter) usedFaults() (time.Duration, int64, bool) {
	end, flt, err := procStat(m.pid)
	if m.err != nil || err != nil {
		return 0, 0, false
	}
	return end - m.start, flt - m.faults, true
}

// perOp describes the CPU used since startCPU per operation, and the
// minor page faults ("" if /proc could not tell): at ~17 µs a first touch
// on this VM, faults are a visible part of a small operation's cost.
func (m *cpuMeter) perOp(ops int) string {
	d, flt, ok := m.usedFaults()
	if !ok || ops <= 0 {
		return ""
	}
	return fmt.Sprintf(", cluster CPU %.2f ms/op (%.1f page faults/op)", float64(d)/float64(time.Millisecond)/float64(ops), float64(flt)/float64(ops))
}

// perOpOf is perOp naming whose CPU it is.
func (m *cpuMeter) perOpOf(who string, ops int) string {
	d, ok := m.used()
	if !ok || ops <= 0 {
		return ""
	}
	return fmt.Sprintf(", %s CPU %.2f ms/op", who, float64(d)/float64(time.Millisecond)/float64(ops))
}

// perMiB describes the CPU used since startCPU per MiB moved ("" if /proc
// could not tell): for streams, the steadier figure beside MB/s.
func (m *cpuMeter) perMiB(bytes int64) string { return m.perMiBOf("cluster", bytes) }

// perMiBOf is perMiB naming whose CPU it is.
func (m *cpuMeter) perMiBOf(who string, bytes int64) string {
	d, flt, ok := m.usedFaults()
	if !ok || bytes <= 0 {
		return ""
	}
	mib := float64(bytes) / (1 << 20)
	return fmt.Sprintf(", %s CPU %.1f ms/MiB (%.0f page faults/MiB)", who, float64(d)/float64(time.Millisecond)/mib, float64(flt)/mib)
}

// settle waits until process pid is idle (under a tenth of a core for
// 200 ms, at most 30 s): a phase's writes acknowledged at the quorum leave
// replica writes, index and compaction work running after it, and the next
// phase would otherwise measure that too.
func settle(pid int) {
	prev, err := procCPU(pid)
	for deadline := time.Now().Add(30 * time.Second); err == nil && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		var now time.Duration
		if now, err = procCPU(pid); err == nil && now-prev < 20*time.Millisecond {
			return
		}
		prev = now
	}
}
