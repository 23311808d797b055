package dedup

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"shoal/shared/block"
	"shoal/shared/combine"
)

// The root journal takes a Write's root add off the Write's path.
//
// Adding a root is a Paxos round on its shard, and with 4,096 shards
// concurrent Writes rarely share one: that round was about a quarter of the
// cluster's work for a 4 KiB write. Instead each dedup process appends its
// Writes' adds to a journal of its own, where concurrent Writes share
// rounds, and later folds the journal into the shards in large batches,
// many adds per shard round.
//
// Layout: a registry block lists the journals with a heartbeat time each;
// a journal is a ring of journalHeads mutable blocks (heads), filled one
// after the other, of up to ~headEntries entries (sequence number, root
// key, delta). Sequence numbers grow in append order across the ring.
//
// Why the collector still sees every live root (with collect.go):
//
//   - The collector reads the registry, then every head of every journal,
//     then the shards. A root's use count is its count in the shards plus
//     the journal entries its shard has not folded in: those above the
//     shard's watermark for that journal (liveCounts).
//   - A fold applies a snapshot of a journal, every entry up to its highest
//     sequence number S, to each shard in one round that also raises the
//     shard's watermark for the journal to S and skips the entries at or
//     below the old watermark. The snapshot is of heads nobody appends to
//     any more (those the owner has left, or all of them once the owner has
//     stopped or the journal is retired), so it holds every entry up to S
//     that no earlier fold took. A fold retried after a crash, or two
//     processes folding one journal, count each entry once. Entries leave
//     the heads only after every shard round has succeeded.
//   - So an entry appended before the collector read its head is counted
//     exactly once: from the head if its shard had not folded it when read
//     (later), else from the shard (the watermark then keeps the head's copy
//     out). An entry appended after that read belongs to a Write that
//     publishes after T0, whose blocks are young.
//   - Only a Write's own add is journaled: a Write touches every block it
//     references, which is what makes missing its late add safe. Retain (a
//     copy), Patch and every release change the shards directly, so a
//     copy's add and its source's release still meet in one block, in
//     order. A release that finds no use in the shards (its add still in a
//     journal) records a negative count there, which the fold cancels.
//   - A registered journal whose owner stopped heartbeating is retired by
//     another process: every head is first marked retired (an append to a
//     retired head fails, and its writer falls back to the shards and a new
//     journal), then the journal is folded, then dropped from the registry.
//     A live owner retired by mistake (a long pause, clock skew) loses
//     nothing.
const (
	journalHeads = 512
	headEntries  = 256
	// foldAfter is how many heads fill before the owner folds: ~65k
	// entries, ~16 per shard round.
	foldAfter = journalHeads / 2
)

const registryName = "shoal/dedup/roots/journals"

func headName(id string, i int) string {
	return fmt.Sprintf("shoal/dedup/roots/j/%s/%03x", id, i)
}

// journalEntry is one change to a root's count.
type journalEntry struct {
	seq   uint64
	k     string
	delta int64
}

// head is a decoded head block.
type head struct {
	retired bool
	entries []journalEntry
}

const headVersion = 1

func encodeHead(h head) []byte {
	b := []byte{headVersion, 0}
	if h.retired {
		b[1] = 1
	}
	b = binary.AppendUvarint(b, uint64(len(h.entries)))
	for _, e := range h.entries {
		b = binary.AppendUvarint(b, e.seq)
		b = binary.AppendUvarint(b, uint64(len(e.k)))
		b = append(b, e.k...)
		b = binary.AppendVarint(b, e.delta)
	}
	return b
}

func decodeHead(b []byte) (head, error) {
	var h head
	if len(b) == 0 {
		return h, nil
	}
	if len(b) < 2 || b[0] != headVersion {
		return h, fmt.Errorf("%w: journal head", errRootsFormat)
	}
	h.retired = b[1]&1 != 0
	d := &decoder{b: b[2:]}
	n := d.count(3)
	h.entries = make([]journalEntry, 0, n)
	for range n {
		e := journalEntry{seq: d.uvarint(), k: d.bytes(), delta: d.varint()}
		if d.bad {
			break
		}
		h.entries = append(h.entries, e)
	}
	if d.bad || len(d.b) != 0 {
		return h, fmt.Errorf("%w: journal head", errRootsFormat)
	}
	return h, nil
}

const registryVersion = 1

// encodeRegistry encodes journal id -> last heartbeat (Unix seconds).
func encodeRegistry(m map[string]int64) []byte {
	ids := slices.Sorted(maps.Keys(m))
	b := []byte{registryVersion}
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
		b = binary.AppendVarint(b, m[id])
	}
	return b
}

func decodeRegistry(b []byte) (map[string]int64, error) {
	m := map[string]int64{}
	if len(b) == 0 {
		return m, nil
	}
	if b[0] != registryVersion {
		return nil, fmt.Errorf("%w: journal registry", errRootsFormat)
	}
	d := &decoder{b: b[1:]}
	n := d.count(2)
	for range n {
		id := d.bytes()
		m[id] = d.varint()
	}
	if d.bad || len(d.b) != 0 {
		return nil, fmt.Errorf("%w: journal registry", errRootsFormat)
	}
	return m, nil
}

var (
	errHeadFull    = errors.New("dedup: journal head full")
	errHeadRetired = errors.New("dedup: journal retired")
	// errNoJournal sends a round's adds to the shards directly.
	errNoJournal = errors.New("dedup: journal unusable")
)

// journal is this process's journal. Its appends run one round at a time
// (one combine key), so only the committer touches id, cur and seq.
//
// Only heads the writer has left (full) are folded while it runs: their
// entries were all decided before any entry of a later head was proposed,
// so a snapshot of them holds every entry up to its highest sequence
// number. A snapshot taken while appends go on could miss a lower entry in
// one head and see a higher one in the next, and the watermark would then
// skip the lower one for good.
type journal struct {
	rs *rootSet
	q  *combine.Queues[int, *rootChange]

	id  string
	cur int    // the head being filled
	seq uint64 // the last sequence number given

	mu sync.Mutex
	// current is the id appends go to (id, readable outside rounds), and
	// registered says whether it is in the registry.
	current    string
	registered bool
	// left is the heads the writer has left and no fold has emptied yet,
	// in the order they filled.
	left []int
	// closed sends every add to the shards (the process is stopping).
	closed   bool
	rounds   sync.WaitGroup
	folds    sync.WaitGroup
	folding  bool
	lastFold time.Time
}

// journalRound bounds the adds of one append round (~20 KiB).
const journalRound = 256

func newJournal(rs *rootSet) *journal {
	j := &journal{rs: rs, lastFold: time.Now()}
	j.newID()
	j.q = combine.New(journalRound, roundTimeout, func(ctx context.Context, _ int, batch []*rootChange) {
		err := j.append(ctx, batch)
		if errors.Is(err, errNoJournal) {
			err = j.direct(ctx, batch)
		}
		for _, c := range batch {
			if c.err == nil {
				c.err = err
			}
		}
	})
	return j
}

// newID starts a new journal (at start, and when this one was retired).
func (j *journal) newID() {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	j.id, j.cur = hex.EncodeToString(b), 0
	j.mu.Lock()
	j.current, j.registered, j.left = j.id, false, nil
	j.mu.Unlock()
}

// add journals delta uses of (volume, ref); it returns once the change is
// durable, in the journal or (when the journal cannot take it) the shards.
func (j *journal) add(ctx context.Context, volume string, ref []byte, delta int) error {
	c := &rootChange{k: rootKey(volume, ref), delta: delta}
	if err := j.q.Do(ctx, 0, c); err != nil {
		return err
	}
	return c.err
}

// direct applies a round's adds to the shards.
func (j *journal) direct(ctx context.Context, batch []*rootChange) error {
	var wg sync.WaitGroup
	for _, c := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vol, ref, err := splitKey(c.k)
			if err == nil {
				err = j.rs.add(ctx, vol, ref, c.delta)
			}
			c.err = err
		}()
	}
	wg.Wait()
	return nil
}

// append writes a round's adds to the current head, moving to the next
// when it is full. errNoJournal: the journal is closed or retired, or the
// next head is still waiting for a fold (the ring is full).
func (j *journal) append(ctx context.Context, batch []*rootChange) error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return errNoJournal
	}
	registered := j.registered
	j.rounds.Add(1)
	j.mu.Unlock()
	defer j.rounds.Done()
	if !registered {
		// Registered before its first entry, so that no collection can
		// miss an entry for want of the journal's name.
		if err := j.rs.heartbeat(ctx, j.id, true); err != nil {
			return err
		}
		j.mu.Lock()
		j.registered = true
		j.mu.Unlock()
	}
	for {
		err := j.rs.dht.UpdateName(ctx, j.rs.key, headName(j.id, j.cur), func(cur []byte, _ bool) ([]byte, error) {
			h, err := decodeHead(cur)
			switch {
			case err != nil:
				return nil, err
			case h.retired:
				return nil, errHeadRetired
			case len(h.entries) >= headEntries:
				return nil, errHeadFull
			}
			for _, c := range batch {
				j.seq++
				h.entries = append(h.entries, journalEntry{seq: j.seq, k: c.k, delta: int64(c.delta)})
			}
			return encodeHead(h), nil
		})
		switch {
		case errors.Is(err, errHeadFull):
			next := (j.cur + 1) % journalHeads
			j.mu.Lock()
			blocked := slices.Contains(j.left, next)
			if !blocked {
				j.left = append(j.left, j.cur)
				j.cur = next
			}
			fold := blocked || len(j.left) >= foldAfter
			j.mu.Unlock()
			if fold {
				j.foldInBackground()
			}
			if blocked {
				return errNoJournal
			}
		case errors.Is(err, errHeadRetired), errors.Is(err, block.ErrNotFound):
			// Retired by another process: start a new journal.
			j.newID()
			return errNoJournal
		default:
			return err
		}
	}
}

// foldInBackground starts a fold of the heads left behind, unless one is
// running or the journal is closing.
func (j *journal) foldInBackground() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.folding || j.closed {
		return
	}
	j.folds.Add(1)
	go func() {
		defer j.folds.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		j.foldLeft(ctx)
	}()
}

// foldLeft folds the heads the writer has left, unless a fold is running.
func (j *journal) foldLeft(ctx context.Context) {
	j.mu.Lock()
	if j.folding || len(j.left) == 0 {
		j.mu.Unlock()
		return
	}
	j.folding = true
	id, heads := j.current, slices.Clone(j.left)
	j.mu.Unlock()
	err := j.rs.fold(ctx, id, heads)
	j.mu.Lock()
	j.folding = false
	if err == nil {
		j.lastFold = time.Now()
		if j.current == id {
			j.left = slices.DeleteFunc(j.left, func(h int) bool { return slices.Contains(heads, h) })
		}
	}
	j.mu.Unlock()
	if err != nil {
		j.rs.log.Warn("dedup: folding the root journal", "journal", id, "err", err)
	}
}

// close sends later adds to the shards, waits for the rounds and folds in
// progress, folds the whole journal and drops it from the registry (or
// leaves it to be retired by another process if that fails).
func (j *journal) close(ctx context.Context) error {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.rounds.Wait()
	j.folds.Wait()
	j.mu.Lock()
	id, registered := j.current, j.registered
	j.mu.Unlock()
	if !registered {
		return nil
	}
	if err := j.rs.fold(ctx, id, nil); err != nil {
		return err
	}
	return j.rs.unregister(ctx, id)
}

// errUnregistered: a heartbeat found its journal retired.
var errUnregistered = errors.New("dedup: journal no longer registered")

// heartbeat refreshes journal id's time in the registry; register adds it
// if absent, otherwise its absence (a retired journal) is errUnregistered.
func (rs *rootSet) heartbeat(ctx context.Context, id string, register bool) error {
	now := time.Now().Unix()
	return rs.dht.UpdateName(ctx, rs.key, registryName, func(cur []byte, _ bool) ([]byte, error) {
		m, err := decodeRegistry(cur)
		if err != nil {
			return nil, err
		}
		if _, ok := m[id]; !ok && !register {
			return nil, errUnregistered
		}
		m[id] = now
		return encodeRegistry(m), nil
	})
}

// tend is the journals' housekeeping, run every beat by each process: it
// refreshes this process's heartbeat, retires journals whose owners have
// been silent for staleAfter, and folds this process's journal once half
// its ring has filled or foldEvery has passed since its last fold (the
// heads it has left, that is: the current one waits until it fills).
func (j *journal) tend(ctx context.Context, staleAfter, foldEvery time.Duration) {
	rs := j.rs
	j.mu.Lock()
	id, registered, due := j.current, j.registered, len(j.left) >= foldAfter || time.Since(j.lastFold) > foldEvery
	j.mu.Unlock()
	if registered {
		if err := rs.heartbeat(ctx, id, false); err != nil {
			rs.log.Warn("dedup: root journal heartbeat", "journal", id, "err", err)
		}
	}
	reg, err := rs.registry(ctx)
	if err != nil {
		rs.log.Warn("dedup: root journal registry", "err", err)
		return
	}
	now := time.Now()
	for other, seen := range reg {
		if other == id || now.Sub(time.Unix(seen, 0)) <= staleAfter {
			continue
		}
		if err := rs.retire(ctx, other); err != nil {
			rs.log.Warn("dedup: retiring a silent root journal", "journal", other, "err", err)
		} else {
			rs.log.Info("dedup: retired a silent root journal", "journal", other)
		}
	}
	if registered && due {
		j.foldLeft(ctx)
	}
}

func (rs *rootSet) unregister(ctx context.Context, id string) error {
	err := rs.dht.UpdateName(ctx, rs.key, registryName, func(cur []byte, _ bool) ([]byte, error) {
		m, err := decodeRegistry(cur)
		if err != nil {
			return nil, err
		}
		if _, ok := m[id]; !ok {
			return nil, errNoChange
		}
		delete(m, id)
		return encodeRegistry(m), nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	return err
}

// registry reads the registered journals and their heartbeat times.
func (rs *rootSet) registry(ctx context.Context) (map[string]int64, error) {
	m, err := rs.dht.GetMutable(ctx, block.NamedAddress(rs.pub, registryName))
	if errors.Is(err, block.ErrNotFound) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dedup: journal registry: %w", err)
	}
	return decodeRegistry(m.Payload)
}

// readJournal reads the given heads of journal id, or every head if nil
// (quorum reads), and returns their entries, sorted by sequence number,
// and which heads hold any.
func (rs *rootSet) readJournal(ctx context.Context, id string, which []int) ([]journalEntry, []int, error) {
	if which == nil {
		which = make([]int, journalHeads)
		for i := range which {
			which[i] = i
		}
	}
	heads := make([]head, journalHeads)
	err := forEach(ctx, len(which), func(ctx context.Context, n int) error {
		i := which[n]
		m, err := rs.dht.GetMutable(ctx, block.NamedAddress(rs.pub, headName(id, i)))
		if errors.Is(err, block.ErrNotFound) {
			return nil
		}
		if err == nil && !m.Tombstone {
			heads[i], err = decodeHead(m.Payload)
		}
		if err != nil {
			return fmt.Errorf("dedup: journal %s head %d: %w", id, i, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	var (
		out  []journalEntry
		used []int
	)
	for i, h := range heads {
		if len(h.entries) > 0 {
			out = append(out, h.entries...)
			used = append(used, i)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out, used, nil
}

// readJournals reads the registry, then every registered journal.
func (rs *rootSet) readJournals(ctx context.Context) (map[string][]journalEntry, error) {
	reg, err := rs.registry(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]journalEntry, len(reg))
	for id := range reg {
		es, _, err := rs.readJournal(ctx, id, nil)
		if err != nil {
			return nil, err
		}
		out[id] = es
	}
	return out, nil
}

// fold applies a snapshot of the given heads of journal id (nil: all) to
// the shards, then removes the snapshot's entries from the heads. Safe to
// run twice, or concurrently, provided that no entry is appended to the
// heads it reads and every entry below one of theirs is either in them or
// folded already (see journal).
func (rs *rootSet) fold(ctx context.Context, id string, heads []int) error {
	es, used, err := rs.readJournal(ctx, id, heads)
	if err != nil || len(es) == 0 {
		return err
	}
	upto := es[len(es)-1].seq
	byShard := map[int][]journalEntry{}
	for _, e := range es {
		s := shardOf(e.k)
		byShard[s] = append(byShard[s], e)
	}
	shards := slices.Collect(maps.Keys(byShard))
	err = forEach(ctx, len(shards), func(ctx context.Context, i int) error {
		s := shards[i]
		c := &rootChange{fold: &foldBatch{journal: id, upto: upto, entries: byShard[s]}}
		if err := rs.queues.Do(ctx, s, c); err != nil {
			return err
		}
		return c.err
	})
	if err != nil {
		return fmt.Errorf("dedup: folding journal %s: %w", id, err)
	}
	return forEach(ctx, len(used), func(ctx context.Context, i int) error {
		return rs.updateHead(ctx, id, used[i], func(h *head) bool {
			kept := h.entries[:0]
			for _, e := range h.entries {
				if e.seq > upto {
					kept = append(kept, e)
				}
			}
			changed := len(kept) != len(h.entries)
			h.entries = kept
			return changed
		})
	})
}

// updateHead changes head i of journal id if change says it did, creating
// the head if need be. A removed head is left alone.
func (rs *rootSet) updateHead(ctx context.Context, id string, i int, change func(h *head) bool) error {
	err := rs.dht.UpdateName(ctx, rs.key, headName(id, i), func(cur []byte, _ bool) ([]byte, error) {
		h, err := decodeHead(cur)
		if err != nil {
			return nil, err
		}
		if !change(&h) {
			return nil, errNoChange
		}
		return encodeHead(h), nil
	})
	if errors.Is(err, errNoChange) || errors.Is(err, block.ErrNotFound) {
		return nil
	}
	return err
}

// retire takes over journal id, whose owner stopped heartbeating: it marks
// every head retired (so the owner, if it is still alive, appends no
// more), folds the journal and drops it from the registry.
func (rs *rootSet) retire(ctx context.Context, id string) error {
	err := forEach(ctx, journalHeads, func(ctx context.Context, i int) error {
		return rs.updateHead(ctx, id, i, func(h *head) bool {
			was := h.retired
			h.retired = true
			return !was
		})
	})
	if err != nil {
		return fmt.Errorf("dedup: retiring journal %s: %w", id, err)
	}
	if err := rs.fold(ctx, id, nil); err != nil {
		return err
	}
	return rs.unregister(ctx, id)
}
