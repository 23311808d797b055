// Package paxos is per-block single-decree Paxos for Shoal's mutable blocks,
// in the style of CASPaxos: each block is a rewritable register whose every
// change (a new signed version, or a new acceptor set) is one Paxos decision
// among that block's own acceptors. There is no leader and no log; any
// client may propose. This package holds both sides as plain state machines
// over small interfaces (Storage for the acceptor, Transport for the
// proposer), so they are tested without a network; the blockstore serves the
// acceptor over gRPC and shared/dht drives the proposer.
package paxos

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	bpb "shoal/proto/blockstorepb"
	"shoal/shared/block"
	"shoal/shared/rpc"
)

// Rejections an acceptor sends back; defined in shared/rpc so they keep
// their identity across gRPC.
var (
	ErrStaleVersion = rpc.ErrStaleVersion
	ErrBadRequest   = rpc.ErrBadRequest
)

// Storage keeps acceptor records. Store need not be durable by itself;
// Sync makes every Store that returned before it durable (a WAL sync), so
// concurrent acceptor operations share one fsync.
type Storage interface {
	Load(addr block.Address) (*bpb.AcceptorRecord, error) // nil, nil when absent
	Store(addr block.Address, rec *bpb.AcceptorRecord) error
	Sync() error
}

// Acceptor is the acceptor side for every block of one node.
//
// A block's lock is held only while its record is read, checked and
// written, never across the fsync: a hot block would otherwise be limited
// to one operation per fsync. No answer leaves before the sync covering
// every write it depends on (its own, and any other it may have read) has
// finished, so nothing a proposer was told can be lost in a crash.
//
// A promise also starts a short lease (RoundLease) during which a prepare
// from another proposer is refused as if its ballot were stale: the round
// in flight gets to finish its accept instead of being pre-empted, which is
// what turns a duel on a hot block into a queue. Refusing a promise is
// always safe in Paxos; the lease is in memory only and ends early once
// the promised ballot's accept arrives, so a proposer that dies mid-round
// delays the block by at most one lease.
type Acceptor struct {
	store   Storage
	maxSize int
	locks   [256]sync.Mutex
	// RoundLease is how long a promise shields its round; 0 disables it.
	RoundLease time.Duration
	now        func() time.Time
	leases     [256]map[block.Address]lease // guarded by locks[i]

	stored atomic.Uint64 // Stores made
	synced atomic.Uint64 // Stores known durable
}

// durable returns once the first upTo Stores are durable.
func (a *Acceptor) durable(upTo uint64) error {
	if a.synced.Load() >= upTo {
		return nil
	}
	target := a.stored.Load()
	if err := a.store.Sync(); err != nil {
		return err
	}
	for {
		cur := a.synced.Load()
		if cur >= target || a.synced.CompareAndSwap(cur, target) {
			return nil
		}
	}
}

// write stores rec under the block's lock (see after).
func (a *Acceptor) write(addr block.Address, rec *bpb.AcceptorRecord) error {
	if err := a.store.Store(addr, rec); err != nil {
		return err
	}
	a.stored.Add(1)
	return nil
}

// NewAcceptor returns an acceptor over store; payloads above maxSize are
// refused.
func NewAcceptor(store Storage, maxSize int) *Acceptor {
	return &Acceptor{store: store, maxSize: maxSize, RoundLease: DefaultRoundLease, now: time.Now}
}

// DefaultRoundLease covers a round's accept under load (a round trip and an
// fsync at each acceptor) with room to spare.
const DefaultRoundLease = 30 * time.Millisecond

type lease struct {
	ballot *bpb.Ballot
	until  time.Time
}

// leased reports whether another proposer's round holds addr; the caller
// holds addr's lock.
func (a *Acceptor) leased(addr block.Address, b *bpb.Ballot) (*bpb.Ballot, bool) {
	l, ok := a.leases[addr[0]][addr]
	if !ok {
		return nil, false
	}
	if a.now().After(l.until) {
		delete(a.leases[addr[0]], addr)
		return nil, false
	}
	return l.ballot, l.ballot.Proposer != b.Proposer
}

func (a *Acceptor) grantLease(addr block.Address, b *bpb.Ballot) {
	if a.RoundLease <= 0 {
		return
	}
	m := a.leases[addr[0]]
	if m == nil || len(m) > 4096 {
		m = map[block.Address]lease{}
		a.leases[addr[0]] = m
	}
	m[addr] = lease{b, a.now().Add(a.RoundLease)}
}

// endLease ends the lease of ballot b once its accept arrived.
func (a *Acceptor) endLease(addr block.Address, b *bpb.Ballot) {
	if l, ok := a.leases[addr[0]][addr]; ok && Compare(l.ballot, b) <= 0 {
		delete(a.leases[addr[0]], addr)
	}
}

// Compare orders ballots: by round, then proposer id. nil is the lowest.
func Compare(a, b *bpb.Ballot) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	case a.Round != b.Round:
		if a.Round < b.Round {
			return -1
		}
		return 1
	case a.Proposer < b.Proposer:
		return -1
	case a.Proposer > b.Proposer:
		return 1
	}
	return 0
}

// SameSet reports whether two acceptor sets hold the same node ids.
func SameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func (a *Acceptor) lock(addr block.Address) func() {
	m := &a.locks[addr[0]]
	m.Lock()
	return m.Unlock
}

func (a *Acceptor) load(addr block.Address) (*bpb.AcceptorRecord, error) {
	rec, err := a.store.Load(addr)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		rec = &bpb.AcceptorRecord{}
	}
	return rec, nil
}

// wrongQuorum reports whether the proposer's config is not one this
// acceptor takes part in, given the block's config as it knows it (see
// compatible in config.go).
func wrongQuorum(rec *bpb.AcceptorRecord, quorum []string) bool {
	return rec.State != nil && len(rec.State.Quorum) > 0 && !compatible(rec.State.Quorum, quorum)
}

// Prepare promises not to accept ballots below req.Ballot and returns what
// was accepted so far.
func (a *Acceptor) Prepare(req *bpb.PrepareRequest) (*bpb.PrepareResponse, error) {
	addr, err := block.FromBytes(req.Address)
	if err != nil {
		return nil, err
	}
	if req.Ballot == nil || len(req.Quorum) == 0 {
		return nil, fmt.Errorf("%w: prepare needs a ballot and a quorum", ErrBadRequest)
	}
	return after(a, addr, func(rec *bpb.AcceptorRecord) (*bpb.PrepareResponse, error) {
		return a.prepare(addr, req, rec)
	})
}

func (a *Acceptor) prepare(addr block.Address, req *bpb.PrepareRequest, rec *bpb.AcceptorRecord) (*bpb.PrepareResponse, error) {
	if wrongQuorum(rec, req.Quorum) {
		return &bpb.PrepareResponse{Outcome: bpb.Outcome_OUTCOME_WRONG_QUORUM, Quorum: rec.State.Quorum, Accepted: rec.Accepted, State: rec.State}, nil
	}
	if Compare(req.Ballot, rec.Promised) <= 0 || Compare(req.Ballot, rec.Accepted) <= 0 {
		return &bpb.PrepareResponse{Outcome: bpb.Outcome_OUTCOME_STALE_BALLOT, Promised: maxBallot(rec.Promised, rec.Accepted)}, nil
	}
	if holder, ok := a.leased(addr, req.Ballot); ok {
		return &bpb.PrepareResponse{Outcome: bpb.Outcome_OUTCOME_STALE_BALLOT, Promised: holder}, nil
	}
	rec.Promised = req.Ballot
	if err := a.write(addr, rec); err != nil {
		return nil, err
	}
	a.grantLease(addr, req.Ballot)
	return &bpb.PrepareResponse{Outcome: bpb.Outcome_OUTCOME_OK, Accepted: rec.Accepted, State: rec.State}, nil
}

func maxBallot(a, b *bpb.Ballot) *bpb.Ballot {
	if Compare(a, b) >= 0 {
		return a
	}
	return b
}

// validate checks a proposed state against what this acceptor holds.
func (a *Acceptor) validate(st *bpb.MutableState, rec *bpb.AcceptorRecord) error {
	if st == nil || len(st.Quorum) == 0 {
		return fmt.Errorf("%w: state without an acceptor set", ErrBadRequest)
	}
	if err := checkConfig(st.Quorum); err != nil {
		return err
	}
	prev := rec.State
	if prev == nil && !st.Named && len(st.Writers) > 0 {
		// A node new to the block cannot check the ACL's history; it takes
		// the signed ACL, and the block's older acceptors (a majority) check
		// that history.
		prev = &bpb.MutableState{Writers: st.Writers}
	}
	if err := block.VerifyMutable(st, prev, a.maxSize); err != nil {
		return err
	}
	if rec.State != nil {
		if st.Version < rec.State.Version {
			return fmt.Errorf("%w: %d < %d", ErrStaleVersion, st.Version, rec.State.Version)
		}
		if !proto.Equal(&bpb.MutableState{Owner: rec.State.Owner, Derivation: rec.State.Derivation, Named: rec.State.Named},
			&bpb.MutableState{Owner: st.Owner, Derivation: st.Derivation, Named: st.Named}) {
			return block.ErrBadDerivation
		}
	}
	return nil
}

// Accept accepts state at ballot unless a higher ballot was promised.
func (a *Acceptor) Accept(req *bpb.AcceptRequest) (*bpb.AcceptResponse, error) {
	if req.State == nil || req.Ballot == nil || len(req.Quorum) == 0 {
		return nil, fmt.Errorf("%w: accept needs a ballot, a state and a quorum", ErrBadRequest)
	}
	addr, err := block.FromBytes(req.State.Address)
	if err != nil {
		return nil, err
	}
	return after(a, addr, func(rec *bpb.AcceptorRecord) (*bpb.AcceptResponse, error) {
		return a.accept(addr, req, rec)
	})
}

func (a *Acceptor) accept(addr block.Address, req *bpb.AcceptRequest, rec *bpb.AcceptorRecord) (*bpb.AcceptResponse, error) {
	if wrongQuorum(rec, req.Quorum) {
		return &bpb.AcceptResponse{Outcome: bpb.Outcome_OUTCOME_WRONG_QUORUM, Quorum: rec.State.Quorum}, nil
	}
	if Compare(req.Ballot, rec.Promised) < 0 || Compare(req.Ballot, rec.Accepted) < 0 {
		return &bpb.AcceptResponse{Outcome: bpb.Outcome_OUTCOME_STALE_BALLOT, Promised: maxBallot(rec.Promised, rec.Accepted)}, nil
	}
	if Compare(req.Ballot, rec.Accepted) == 0 {
		// A retransmission: same ballot, same state is fine; a different
		// state under one ballot is a protocol violation.
		if proto.Equal(req.State, rec.State) {
			return &bpb.AcceptResponse{Outcome: bpb.Outcome_OUTCOME_OK}, nil
		}
		return &bpb.AcceptResponse{Outcome: bpb.Outcome_OUTCOME_STALE_BALLOT, Promised: rec.Accepted}, nil
	}
	if err := a.validate(req.State, rec); err != nil {
		return nil, err
	}
	rec.Promised, rec.Accepted, rec.State = req.Ballot, req.Ballot, req.State
	if n := req.PromiseNext; n != nil && n.Proposer == req.Ballot.Proposer && Compare(n, req.Ballot) > 0 {
		// Phase 1 of the proposer's next ballot, done now: what it would
		// learn is exactly the state it is sending.
		rec.Promised = n
	}
	if err := a.write(addr, rec); err != nil {
		return nil, err
	}
	a.endLease(addr, req.Ballot)
	return &bpb.AcceptResponse{Outcome: bpb.Outcome_OUTCOME_OK}, nil
}

// Learn installs a decided state on an acceptor that is behind. Learning a
// chosen value is always safe; validation keeps it from being a way around
// signatures or version order.
func (a *Acceptor) Learn(req *bpb.LearnRequest) error {
	if req.State == nil || req.Ballot == nil {
		return fmt.Errorf("%w: learn needs a ballot and a state", ErrBadRequest)
	}
	addr, err := block.FromBytes(req.State.Address)
	if err != nil {
		return err
	}
	_, err = after(a, addr, func(rec *bpb.AcceptorRecord) (struct{}, error) {
		if Compare(req.Ballot, rec.Accepted) <= 0 {
			return struct{}{}, nil
		}
		if err := a.validate(req.State, rec); err != nil {
			return struct{}{}, err
		}
		rec.Accepted, rec.State = req.Ballot, req.State
		rec.Promised = maxBallot(rec.Promised, req.Ballot)
		return struct{}{}, a.write(addr, rec)
	})
	return err
}

// Peek returns the accepted state without promising.
func (a *Acceptor) Peek(req *bpb.PeekRequest) (*bpb.PeekResponse, error) {
	addr, err := block.FromBytes(req.Address)
	if err != nil {
		return nil, err
	}
	return after(a, addr, func(rec *bpb.AcceptorRecord) (*bpb.PeekResponse, error) {
		if st := rec.State; st != nil && req.KnownVersion > 0 && st.Version == req.KnownVersion {
			// The asker holds this version: only what identifies it.
			return &bpb.PeekResponse{Accepted: rec.Accepted, PayloadOmitted: true, State: &bpb.MutableState{
				Address: st.Address, Owner: st.Owner, Derivation: st.Derivation, Named: st.Named,
				Version: st.Version, Tombstone: st.Tombstone, Quorum: st.Quorum}}, nil
		}
		return &bpb.PeekResponse{Accepted: rec.Accepted, State: rec.State}, nil
	})
}

// after runs fn on addr's record under the block's lock, then waits, with
// the lock released, until every write fn made or may have read is
// durable, and only then lets fn's answer go out.
func after[T any](a *Acceptor, addr block.Address, fn func(rec *bpb.AcceptorRecord) (T, error)) (T, error) {
	unlock := a.lock(addr)
	rec, err := a.load(addr)
	var out T
	if err == nil {
		out, err = fn(rec)
	}
	seq := a.stored.Load()
	unlock()
	if err != nil {
		var zero T
		return zero, err
	}
	if err := a.durable(seq); err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}
