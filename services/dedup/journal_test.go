package dedup

import (
	"errors"
	"maps"
	"testing"
)

func TestFoldCountsEachEntryOnce(t *testing.T) {
	st := newShardState()
	first := &rootChange{fold: &foldBatch{journal: "j1", upto: 3, entries: []journalEntry{
		{seq: 1, k: "a", delta: 1}, {seq: 3, k: "b", delta: 1},
	}}}
	if !first.applyTo(st) {
		t.Fatal("first fold changed nothing")
	}
	// The same snapshot again (a fold retried after a crash, or run by two
	// processes): nothing changes.
	if first.applyTo(st) {
		t.Fatal("a snapshot folded twice changed the shard")
	}
	// A later snapshot still holding entry 3 (its removal from the head
	// was lost) adds only what is new.
	later := &rootChange{fold: &foldBatch{journal: "j1", upto: 7, entries: []journalEntry{
		{seq: 3, k: "b", delta: 1}, {seq: 5, k: "a", delta: 1}, {seq: 7, k: "b", delta: -1},
	}}}
	if !later.applyTo(st) {
		t.Fatal("later fold changed nothing")
	}
	want := map[string]int64{"a": 2}
	if !maps.Equal(st.counts, want) || st.folded["j1"] != 7 {
		t.Fatalf("counts %v folded %v, want %v and j1 at 7", st.counts, st.folded, want)
	}
	// Another journal's watermark is its own.
	other := &rootChange{fold: &foldBatch{journal: "j2", upto: 2, entries: []journalEntry{{seq: 2, k: "a", delta: 1}}}}
	if !other.applyTo(st) || st.counts["a"] != 3 {
		t.Fatalf("second journal's fold: counts %v", st.counts)
	}
}

func TestReleaseBeforeFold(t *testing.T) {
	st := newShardState()
	// The release of a root whose add is still journaled finds nothing...
	rel := &rootChange{k: "a", delta: -1}
	if rel.applyTo(st) || !rel.absent {
		t.Fatal("a plain release of an absent root changed the shard")
	}
	// ...so it is forced, and the fold's add cancels it.
	if !(&rootChange{k: "a", delta: -1, force: true}).applyTo(st) || st.counts["a"] != -1 {
		t.Fatalf("forced release: %v", st.counts)
	}
	if !(&rootChange{fold: &foldBatch{journal: "j", upto: 1, entries: []journalEntry{{seq: 1, k: "a", delta: 1}}}}).applyTo(st) {
		t.Fatal("fold changed nothing")
	}
	if len(st.counts) != 0 {
		t.Fatalf("counts after the fold: %v, want none", st.counts)
	}
	// A plain release never takes a count below zero.
	st.counts["b"] = 1
	(&rootChange{k: "b", delta: -1}).applyTo(st)
	(&rootChange{k: "b", delta: -1}).applyTo(st)
	if _, ok := st.counts["b"]; ok {
		t.Fatalf("b: %v", st.counts)
	}
}

// shardsWith returns shards where key k's current shard holds st.
func shardsWith(k string, st shardState) []shardState {
	shards := make([]shardState, rootShards+legacyShards)
	for i := range shards {
		shards[i] = newShardState()
	}
	shards[shardOf(k)] = st
	return shards
}

func TestLiveCounts(t *testing.T) {
	const k = "key"
	for _, tc := range []struct {
		name    string
		journal []journalEntry
		shard   map[string]int64
		folded  uint64
		want    int64 // 0: not live
	}{
		{name: "journaled only", journal: []journalEntry{{seq: 4, k: k, delta: 1}}, want: 1},
		// The collector read the head, then the fold ran, then it read the
		// shard: the entry is in both, and counts once.
		{name: "folded after the head was read", journal: []journalEntry{{seq: 4, k: k, delta: 1}}, shard: map[string]int64{k: 1}, folded: 4, want: 1},
		{name: "released before the fold", journal: []journalEntry{{seq: 4, k: k, delta: 1}}, shard: map[string]int64{k: -1}, want: 0},
		{name: "copy retained, source released", journal: []journalEntry{{seq: 4, k: k, delta: 1}}, shard: map[string]int64{}, want: 1},
		{name: "two uses, one folded", journal: []journalEntry{{seq: 2, k: k, delta: 1}, {seq: 9, k: k, delta: 1}}, shard: map[string]int64{k: 1}, folded: 2, want: 2},
		{name: "a failed write taken back", journal: []journalEntry{{seq: 2, k: k, delta: 1}, {seq: 3, k: k, delta: -1}}, want: 0},
	} {
		st := newShardState()
		maps.Copy(st.counts, tc.shard)
		if tc.folded > 0 {
			st.folded["j"] = tc.folded
		}
		got := liveCounts(map[string][]journalEntry{"j": tc.journal}, shardsWith(k, st))[k]
		if got != tc.want {
			t.Errorf("%s: %d uses, want %d", tc.name, got, tc.want)
		}
	}
}

func TestRootFormats(t *testing.T) {
	st := newShardState()
	st.counts["a"], st.counts["bb"] = 2, -1
	st.folded["j1"] = 99
	got, err := decodeRoots(encodeRoots(st))
	if err != nil || !maps.Equal(got.counts, st.counts) || !maps.Equal(got.folded, st.folded) {
		t.Fatalf("shard round trip: %+v, %v", got, err)
	}
	// The first format: unsigned counts, no watermarks.
	v1 := []byte{1, 1, 1, 'a', 3}
	if got, err := decodeRoots(v1); err != nil || got.counts["a"] != 3 {
		t.Fatalf("format 1: %+v, %v", got, err)
	}
	h := head{retired: true, entries: []journalEntry{{seq: 1, k: "a", delta: 1}, {seq: 2, k: "b", delta: -1}}}
	gh, err := decodeHead(encodeHead(h))
	if err != nil || !gh.retired || len(gh.entries) != 2 || gh.entries[1] != h.entries[1] {
		t.Fatalf("head round trip: %+v, %v", gh, err)
	}
	reg := map[string]int64{"j1": 5, "j2": 1 << 40}
	greg, err := decodeRegistry(encodeRegistry(reg))
	if err != nil || !maps.Equal(greg, reg) {
		t.Fatalf("registry round trip: %v, %v", greg, err)
	}
	// Truncated or padded blocks are refused, not misread.
	for name, b := range map[string][]byte{
		"shard":    encodeRoots(st),
		"head":     encodeHead(h),
		"registry": encodeRegistry(reg),
	} {
		for _, bad := range [][]byte{b[:len(b)-1], append(append([]byte{}, b...), 0)} {
			var err error
			switch name {
			case "shard":
				_, err = decodeRoots(bad)
			case "head":
				_, err = decodeHead(bad)
			case "registry":
				_, err = decodeRegistry(bad)
			}
			if !errors.Is(err, errRootsFormat) {
				t.Errorf("%s of %d bytes (from %d): %v, want a format error", name, len(bad), len(b), err)
			}
		}
	}
}
