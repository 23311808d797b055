// Package linearizability checks mutable blocks with porcupine: clients
// read, write and compare-and-set a few blocks of a multi-process cluster
// while a fault injector kills (SIGKILL), pauses (SIGSTOP) and restarts
// storage nodes and moves blocks between acceptor sets. Every history must
// be linearizable.
//
// SHOAL_LIN_SECONDS sets the run length (default 20); SHOAL_LIN_SEED
// replays a seed.
package linearizability

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"shoal/e2e/framework"
	"shoal/shared/block"
	"shoal/shared/paxos"
)

type opKind int

const (
	opRead opKind = iota
	opWrite
	opCAS
)

type input struct {
	key      int
	kind     opKind
	value    string // write: new; cas: new
	expected string // cas
}

type output struct {
	value   string // read
	ok      bool   // cas succeeded
	unknown bool   // outcome unknown (error or timeout)
}

var errCASMismatch = errors.New("test: cas expected value mismatch")

func model() porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := map[int][]porcupine.Operation{}
			for _, op := range h {
				k := op.Input.(input).key
				by[k] = append(by[k], op)
			}
			var out [][]porcupine.Operation
			for _, ops := range by {
				out = append(out, ops)
			}
			return out
		},
		Init: func() interface{} { return "init" },
		Step: func(state, in, out interface{}) (bool, interface{}) {
			s, i, o := state.(string), in.(input), out.(output)
			switch i.kind {
			case opRead:
				return o.value == s, s
			case opWrite:
				return true, i.value
			default:
				if o.unknown {
					// Either it happened (if it could) or it did not.
					if s == i.expected {
						return true, i.value
					}
					return true, s
				}
				if o.ok {
					return s == i.expected, i.value
				}
				return s != i.expected, s
			}
		},
		DescribeOperation: func(in, out interface{}) string {
			i, o := in.(input), out.(output)
			switch i.kind {
			case opRead:
				return fmt.Sprintf("k%d read -> %q", i.key, o.value)
			case opWrite:
				return fmt.Sprintf("k%d write %q (unknown=%v)", i.key, i.value, o.unknown)
			}
			return fmt.Sprintf("k%d cas %q->%q ok=%v unknown=%v", i.key, i.expected, i.value, o.ok, o.unknown)
		},
	}
}

func envInt(k string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(k), 10, 64); err == nil {
		return v
	}
	return def
}

func TestLinearizableUnderFaults(t *testing.T) {
	seed := uint64(envInt("SHOAL_LIN_SEED", time.Now().UnixNano()))
	dur := time.Duration(envInt("SHOAL_LIN_SECONDS", 20)) * time.Second
	t.Logf("seed %d (replay with SHOAL_LIN_SEED=%d), %v", seed, seed, dur)
	rng := rand.New(rand.NewPCG(seed, seed>>1))

	c := framework.StartProcCluster(t, 4)
	admin := c.Client(2 * time.Second)
	_, owner, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	const keys, clients = 3, 6
	var addrs []block.Address
	for range keys {
		a, err := admin.CreateMutable(context.Background(), owner, []byte("init"), nil)
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	ids := make([]string, len(c.Nodes))
	for i, p := range c.Nodes {
		ids[i] = framework.NodeID(t, p)
	}

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var mu sync.Mutex
	var history []porcupine.Operation
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for ci := range clients {
		cl := c.Client(time.Second)
		crng := rand.New(rand.NewPCG(seed+uint64(ci)+1, 7))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				in := input{key: crng.IntN(keys)}
				switch r := crng.IntN(10); {
				case r < 4:
					in.kind = opRead
				case r < 7:
					in.kind = opWrite
					in.value = fmt.Sprintf("c%d-%d", ci, n)
				default:
					in.kind = opCAS
					in.value = fmt.Sprintf("c%d-%d", ci, n)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var out output
				call := now()
				addr := addrs[in.key]
				switch in.kind {
				case opRead:
					m, err := cl.GetMutable(ctx, addr)
					if err != nil {
						cancel()
						continue // a failed read has no effect
					}
					out.value = string(m.Payload)
				case opWrite:
					_, err := cl.Update(ctx, owner, addr, func([]byte, uint64) ([]byte, error) { return []byte(in.value), nil })
					out.unknown = err != nil
				case opCAS:
					// Expect what this client last saw (or a guess).
					m, err := cl.GetMutable(ctx, addr)
					if err != nil {
						cancel()
						continue
					}
					in.expected = string(m.Payload)
					call = now()
					_, err = cl.Update(ctx, owner, addr, func(cur []byte, _ uint64) ([]byte, error) {
						if string(cur) != in.expected {
							return nil, errCASMismatch
						}
						return []byte(in.value), nil
					})
					switch {
					case err == nil:
						out.ok = true
					case errors.Is(err, paxos.ErrIndeterminate):
						out.unknown = true
					case errors.Is(err, errCASMismatch):
					default:
						out.unknown = true
					}
				}
				cancel()
				ret := now()
				if out.unknown {
					// The operation may take effect at any later time.
					ret = 1 << 62
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: ci, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}

	// Fault injector: one fault at a time, so a majority of every block's
	// acceptors stays reachable and the clients make progress. timeline
	// records each fault's time (on the history's clock) for diagnosis.
	faults := map[string]int{}
	var timeline []string
	event := func(format string, args ...any) {
		timeline = append(timeline, fmt.Sprintf("%6d ms  ", now()/1e6)+fmt.Sprintf(format, args...))
	}
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		victim := rng.IntN(len(c.Nodes))
		p := c.Nodes[victim]
		switch rng.IntN(3) {
		case 0:
			event("kill %s", ids[victim])
			p.Kill()
			faults["kill"]++
			wait(rng, 300, 1200)
			event("restart %s", ids[victim])
			p.Restart()
			p.Field("blockstore", 20*time.Second)
			event("%s up", ids[victim])
		case 1:
			event("pause %s", ids[victim])
			if err := p.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			faults["pause"]++
			wait(rng, 300, 1500)
			event("resume %s", ids[victim])
			if err := p.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		default:
			// Move one block to a different set of three acceptors.
			k := rng.IntN(keys)
			skip := rng.IntN(len(ids))
			var set []string
			for i, id := range ids {
				if i != skip {
					set = append(set, id)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			event("move k%d to %v", k, set)
			if err := admin.MoveMutable(ctx, addrs[k], set); err == nil {
				faults["move"]++
				event("move of k%d done", k)
			} else {
				t.Logf("move of k%d failed (allowed under faults): %v", k, err)
				event("move of k%d failed: %v", k, err)
			}
			cancel()
		}
		wait(rng, 200, 600)
	}
	close(stop)
	wg.Wait()

	completed := map[opKind]int{}
	unknown := 0
	for _, op := range history {
		if op.Output.(output).unknown {
			unknown++
		} else {
			completed[op.Input.(input).kind]++
		}
	}
	t.Logf("%d operations (%d reads, %d writes, %d cas completed; %d with unknown outcome); faults %v",
		len(history), completed[opRead], completed[opWrite], completed[opCAS], unknown, faults)
	if completed[opWrite]+completed[opCAS] < 50 {
		t.Fatalf("too little progress under faults: %v", completed)
	}
	res, info := porcupine.CheckOperationsVerbose(model(), history, 2*time.Minute)
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Fatal("linearizability check timed out")
	default:
		f, err := os.CreateTemp("", "shoal-lin-*.html")
		if err == nil {
			_ = porcupine.Visualize(model(), info, f)
			f.Close()
			t.Errorf("history visualization: %s", f.Name())
		}
		dumpHistory(t, history)
		dumpPartial(t, info)
		t.Logf("faults (node ids %v):", ids)
		for _, e := range timeline {
			t.Log("   " + e)
		}
		t.Fatalf("history is not linearizable (seed %d)", seed)
	}
}

// wait pauses the fault injector between faults; it orders nothing.
func wait(rng *rand.Rand, loMs, hiMs int) {
	time.Sleep(time.Duration(loMs+rng.IntN(hiMs-loMs)) * time.Millisecond)
}

// dumpHistory writes each key's operations in call order, for diagnosis.
func dumpHistory(t *testing.T, h []porcupine.Operation) {
	f, err := os.CreateTemp("", "shoal-lin-*.txt")
	if err != nil {
		return
	}
	defer f.Close()
	sorted := append([]porcupine.Operation(nil), h...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	for _, op := range sorted {
		in, out := op.Input.(input), op.Output.(output)
		ret := "?"
		if op.Return < 1<<62 {
			ret = fmt.Sprint(op.Return / 1e6)
		}
		fmt.Fprintf(f, "k%d c%d [%d..%s ms] %s\n", in.key, op.ClientId, op.Call/1e6, ret, model().DescribeOperation(in, out))
	}
	t.Errorf("history dump: %s", f.Name())
}

// dumpPartial logs, for each key, the end of the longest linearizable
// prefix and the first operations that could not be placed after it.
func dumpPartial(t *testing.T, info porcupine.LinearizationInfo) {
	for _, part := range info.PartialLinearizationsOperations() {
		var best []porcupine.Operation
		for _, lin := range part {
			if len(lin) > len(best) {
				best = lin
			}
		}
		if len(best) == 0 {
			continue
		}
		in := map[porcupine.Operation]bool{}
		for _, op := range best {
			in[op] = true
		}
		t.Logf("key k%d: longest linearizable prefix has %d ops; its last ones:", best[0].Input.(input).key, len(best))
		for _, op := range best[max(0, len(best)-8):] {
			t.Logf("   c%d [%d..%d ms] %s", op.ClientId, op.Call/1e6, op.Return/1e6, model().DescribeOperation(op.Input, op.Output))
		}
	}
}
