package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strconv"

	"shoal/shared/block"
	"shoal/shared/dht"
)

// mutableBench measures Paxos-backed mutable blocks on the all-in-one:
// uncontended updates (one block per client), quorum reads, and one hot
// block with 8 writers.
func mutableBench(cl *dht.Client, clients, ops int) {
	_, key, _ := ed25519.GenerateKey(nil)
	ctx := context.Background()
	addrs := make([]block.Address, clients)
	for i := range addrs {
		a, err := cl.CreateMutable(ctx, key, []byte("0"), nil)
		check(err)
		addrs[i] = a
	}
	per := ops / clients
	up := measureWorkers(per*clients, clients, func(w, i int) {
		_, err := cl.Update(ctx, key, addrs[w], func(cur []byte, _ uint64) ([]byte, error) {
			return strconv.AppendInt(nil, int64(i), 10), nil
		})
		check(err)
	})
	add(fmt.Sprintf("mutable update, %d clients, own blocks", clients), fmt.Sprintf("%.0f ops/s", up.rate()), fmt.Sprintf("p50 %v p99 %v (target >= 2000/s)", up.pct(50), up.pct(99)))
	rd := measure(per*clients, clients, func(i int) {
		_, err := cl.GetMutable(ctx, addrs[i%clients])
		check(err)
	})
	add(fmt.Sprintf("mutable quorum read, %d clients", clients), fmt.Sprintf("%.0f ops/s", rd.rate()), fmt.Sprintf("p50 %v p99 %v (target >= 10000/s)", rd.pct(50), rd.pct(99)))

	// Each hot-block writer is its own proposer, as separate clients are.
	hot, err := cl.CreateMutable(ctx, key, []byte("0"), nil)
	check(err)
	writers := make([]*dht.Client, 8)
	for i := range writers {
		w, err := dht.New(cl.Config(), nil)
		check(err)
		defer w.Close()
		writers[i] = w
	}
	const each = 50
	hb := measureWorkers(8*each, 8, func(w, _ int) {
		_, err := writers[w].Update(ctx, key, hot, func(cur []byte, _ uint64) ([]byte, error) {
			n, _ := strconv.Atoi(string(cur))
			return strconv.AppendInt(nil, int64(n+1), 10), nil
		})
		check(err)
	})
	// Every increment must have landed exactly once.
	final, err := cl.GetMutable(ctx, hot)
	check(err)
	if n, _ := strconv.Atoi(string(final.Payload)); n != 8*each {
		check(fmt.Errorf("hot block counter is %d after %d increments", n, 8*each))
	}
	var rounds, conflicts int64
	for _, w := range writers {
		rounds += w.PaxosStats().Rounds.Load()
		conflicts += w.PaxosStats().Conflicts.Load()
	}
	add("one hot block, 8 writers", fmt.Sprintf("%.0f ops/s", hb.rate()),
		fmt.Sprintf("p99 %v; %.2f Paxos rounds and %.2f conflicts per update", hb.pct(99), float64(rounds)/float64(8*each), float64(conflicts)/float64(8*each)))
}
