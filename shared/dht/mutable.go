package dht

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/proto"

	bpb "shoal/proto/blockstorepb"
	"shoal/shared/block"
	"shoal/shared/paxos"
	"shoal/shared/telemetry"
)

var (
	// ErrConflict means the block changed under a compare-and-set; the
	// error is a *ConflictError carrying the current value.
	ErrConflict = errors.New("dht: version conflict")
	// ErrExists means a create found the block (or name) already there.
	ErrExists = errors.New("dht: already exists")
	// ErrNotMutable means an address holds no mutable block.
	ErrNotMutable = errors.New("dht: not a mutable block")
)

// ConflictError returns the current value so the caller can merge and retry.
type ConflictError struct {
	Current *Mutable
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%v: block is at version %d", ErrConflict, e.Current.Version)
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Mutable is a decided version of a mutable or named block.
type Mutable struct {
	Address   block.Address
	Version   uint64
	Payload   []byte
	Owner     ed25519.PublicKey
	Writers   []ed25519.PublicKey
	Tombstone bool
	// Quorum is the block's acceptor set; during a move, the set it moves
	// to (shared/paxos, config.go).
	Quorum []string
}

func fromState(st *bpb.MutableState) *Mutable {
	a, _ := block.FromBytes(st.Address)
	m := &Mutable{Address: a, Version: st.Version, Payload: st.Payload, Owner: st.Owner, Tombstone: st.Tombstone, Quorum: paxos.Target(st.Quorum)}
	for _, w := range st.Writers {
		m.Writers = append(m.Writers, w)
	}
	return m
}

var errMalformedReply = errors.New("dht: acceptor answered with the wrong kind of reply")

// grpcTransport reaches acceptors by node id through the current view, in
// the node's Paxos batches (see batch.go).
type grpcTransport struct{ c *Client }

func (t grpcTransport) call(ctx context.Context, id string, op *bpb.PaxosOp) (*bpb.PaxosResult, error) {
	t.c.mu.RLock()
	n := t.c.byID[id]
	t.c.mu.RUnlock()
	if n == nil {
		return nil, fmt.Errorf("dht: node %s not in view", id)
	}
	cctx, cancel := t.c.callCtx(ctx)
	defer cancel()
	return t.c.paxosCall(cctx, n, op)
}

func (t grpcTransport) Prepare(ctx context.Context, id string, req *bpb.PrepareRequest) (*bpb.PrepareResponse, error) {
	r, err := t.call(ctx, id, &bpb.PaxosOp{Op: &bpb.PaxosOp_Prepare{Prepare: req}})
	if err == nil && r.GetPrepare() == nil {
		err = errMalformedReply
	}
	return r.GetPrepare(), err
}

func (t grpcTransport) Accept(ctx context.Context, id string, req *bpb.AcceptRequest) (*bpb.AcceptResponse, error) {
	r, err := t.call(ctx, id, &bpb.PaxosOp{Op: &bpb.PaxosOp_Accept{Accept: req}})
	if err == nil && r.GetAccept() == nil {
		err = errMalformedReply
	}
	return r.GetAccept(), err
}

func (t grpcTransport) Learn(ctx context.Context, id string, req *bpb.LearnRequest) error {
	_, err := t.call(ctx, id, &bpb.PaxosOp{Op: &bpb.PaxosOp_Learn{Learn: req}})
	return err
}

func (t grpcTransport) Peek(ctx context.Context, id string, req *bpb.PeekRequest) (*bpb.PeekResponse, error) {
	r, err := t.call(ctx, id, &bpb.PaxosOp{Op: &bpb.PaxosOp_Peek{Peek: req}})
	if err == nil && r.GetPeek() == nil {
		err = errMalformedReply
	}
	return r.GetPeek(), err
}

func (c *Client) proposer() *paxos.Proposer {
	c.propOnce.Do(func() {
		var r [8]byte
		_, _ = rand.Read(r[:])
		c.prop = paxos.NewProposer("p-"+hex.EncodeToString(r[:]), grpcTransport{c})
	})
	return c.prop
}

// PaxosStats exposes the proposer's counters (rounds, conflicts, moves).
func (c *Client) PaxosStats() *paxos.Stats { return &c.proposer().Stats }

// guess is the acceptor set placement computes for a new block.
func (c *Client) guess(ctx context.Context, addr block.Address) ([]string, error) {
	ranked, err := c.ranked(ctx, addr[:])
	if err != nil {
		return nil, err
	}
	r := min(c.cfg.Replicas, len(ranked))
	out := make([]string, r)
	for i := range out {
		out[i] = ranked[i].Id
	}
	return out, nil
}

func (c *Client) propose(ctx context.Context, op string, addr block.Address, change paxos.Change) (*bpb.MutableState, error) {
	ctx, sp := telemetry.Tracer().Start(ctx, "dht."+op)
	defer sp.End()
	if sp.IsRecording() { // the address's hex costs even when tracing is off
		sp.SetAttributes(attribute.String("block.address", addr.String()))
	}
	g, err := c.guess(ctx, addr)
	if err != nil {
		return nil, err
	}
	st, err := c.proposer().Propose(ctx, addr, g, change)
	if err != nil {
		sp.RecordError(err)
	}
	return st, err
}

func newSalt() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}

// CreateMutable creates a mutable block owned by key, writable also by
// writers, and returns its address.
func (c *Client) CreateMutable(ctx context.Context, key ed25519.PrivateKey, payload []byte, writers []ed25519.PublicKey) (block.Address, error) {
	owner := key.Public().(ed25519.PublicKey)
	salt := newSalt()
	addr := block.MutableAddress(owner, salt)
	st := &bpb.MutableState{Address: addr[:], Owner: owner, Derivation: salt, Version: 1, Payload: payload}
	for _, w := range writers {
		st.Writers = append(st.Writers, w)
	}
	block.Sign(st, key)
	_, err := c.propose(ctx, "create", addr, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur != nil {
			return nil, ErrExists
		}
		return st, nil
	})
	return addr, err
}

// GetMutable returns the latest decided version (a quorum read).
func (c *Client) GetMutable(ctx context.Context, addr block.Address) (*Mutable, error) {
	return c.GetMutableIfChanged(ctx, addr, 0)
}

// GetMutableIfChanged returns the block unless its version is still v, so
// a cache holding version v revalidates without the payload moving: it
// returns nil, nil when v is current. v = 0 always reads the block.
func (c *Client) GetMutableIfChanged(ctx context.Context, addr block.Address, v uint64) (*Mutable, error) {
	ctx, sp := telemetry.Tracer().Start(ctx, "dht.get_mutable")
	defer sp.End()
	if sp.IsRecording() {
		sp.SetAttributes(attribute.String("block.address", addr.String()), attribute.Int64("known_version", int64(v)))
	}
	g, err := c.guess(ctx, addr)
	if err != nil {
		return nil, err
	}
	st, current, err := c.proposer().ReadKnown(ctx, addr, g, v)
	if err != nil || current {
		return nil, err
	}
	return fromState(st), nil
}

func nextVersion(cur *bpb.MutableState, key ed25519.PrivateKey, payload []byte, tombstone bool) *bpb.MutableState {
	st := block.WithPayload(cur, payload)
	st.Version++
	st.Tombstone = tombstone
	block.Sign(st, key)
	return st
}

// Update runs fn on the current payload and writes its result as the next
// version, retrying fn on conflicts (with backoff inside the proposer). It
// returns the decided version.
func (c *Client) Update(ctx context.Context, key ed25519.PrivateKey, addr block.Address, fn func(cur []byte, version uint64) ([]byte, error)) (uint64, error) {
	st, err := c.propose(ctx, "update", addr, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil || cur.Tombstone {
			return nil, fmt.Errorf("%w: %s", block.ErrNotFound, addr)
		}
		p, err := fn(cur.Payload, cur.Version)
		if err != nil {
			return nil, err
		}
		return nextVersion(cur, key, p, false), nil
	})
	if err != nil {
		return 0, err
	}
	return st.Version, nil
}

// CompareAndSet writes payload as version expect+1 if the block is still at
// version expect; otherwise it returns a *ConflictError with the current
// value. On success it returns expect+1, the version holding payload.
//
// That is not always the block's version by the time the call returns:
// an earlier, uncertain attempt of this call may have been carried forward
// by another proposer, and further changes made on top of it before this
// call learned so. A caller keeping payload as version expect+1 is then
// merely behind, and its next compare-and-set conflicts and shows it the
// current value, as after any concurrent change.
func (c *Client) CompareAndSet(ctx context.Context, key ed25519.PrivateKey, addr block.Address, expect uint64, payload []byte) (uint64, error) {
	_, err := c.propose(ctx, "cas", addr, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil || cur.Tombstone {
			return nil, fmt.Errorf("%w: %s", block.ErrNotFound, addr)
		}
		if cur.Version != expect {
			return nil, &ConflictError{Current: fromState(cur)}
		}
		return nextVersion(cur, key, payload, false), nil
	})
	if err != nil {
		return 0, err
	}
	return expect + 1, nil
}

// CreateName binds name (under key's owner) to value, once: it fails with
// ErrExists if the name is bound.
func (c *Client) CreateName(ctx context.Context, key ed25519.PrivateKey, name string, value []byte) error {
	return c.setName(ctx, key, name, value, true)
}

// SetName binds name to value, creating or updating it.
func (c *Client) SetName(ctx context.Context, key ed25519.PrivateKey, name string, value []byte) error {
	return c.setName(ctx, key, name, value, false)
}

func (c *Client) setName(ctx context.Context, key ed25519.PrivateKey, name string, value []byte, once bool) error {
	owner := key.Public().(ed25519.PublicKey)
	addr := block.NamedAddress(owner, name)
	_, err := c.propose(ctx, "set_name", addr, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil {
			return firstNamed(key, addr, name, value), nil
		}
		if once && !cur.Tombstone {
			return nil, fmt.Errorf("%w: name %q", ErrExists, name)
		}
		return nextVersion(cur, key, value, false), nil
	})
	return err
}

// firstNamed is the signed first version of key's name at addr.
func firstNamed(key ed25519.PrivateKey, addr block.Address, name string, value []byte) *bpb.MutableState {
	st := &bpb.MutableState{Address: addr[:], Owner: key.Public().(ed25519.PublicKey), Derivation: []byte(name), Named: true, Version: 1, Payload: value}
	block.Sign(st, key)
	return st
}

// UpdateName is a read-modify-write of owner's name in one Paxos round: fn
// gets the current value (exists false when the name was never bound) and
// returns the new one. A removed name (tombstone) is ErrNotFound: its
// owner retired it for good.
func (c *Client) UpdateName(ctx context.Context, key ed25519.PrivateKey, name string, fn func(cur []byte, exists bool) ([]byte, error)) error {
	owner := key.Public().(ed25519.PublicKey)
	addr := block.NamedAddress(owner, name)
	_, err := c.propose(ctx, "update_name", addr, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur != nil && cur.Tombstone {
			return nil, fmt.Errorf("%w: name %q was removed", block.ErrNotFound, name)
		}
		var old []byte
		if cur != nil {
			old = cur.Payload
		}
		p, err := fn(old, cur != nil)
		if err != nil {
			return nil, err
		}
		if cur == nil {
			return firstNamed(key, addr, name, p), nil
		}
		return nextVersion(cur, key, p, false), nil
	})
	return err
}

// ResolveName returns the value bound to owner's name.
func (c *Client) ResolveName(ctx context.Context, owner ed25519.PublicKey, name string) (*Mutable, error) {
	m, err := c.GetMutable(ctx, block.NamedAddress(owner, name))
	if err != nil {
		return nil, err
	}
	if m.Tombstone {
		return nil, fmt.Errorf("%w: name %q was removed", block.ErrNotFound, name)
	}
	return m, nil
}

// DeleteName removes a name with a signed tombstone.
func (c *Client) DeleteName(ctx context.Context, key ed25519.PrivateKey, name string) error {
	addr := block.NamedAddress(key.Public().(ed25519.PublicKey), name)
	_, err := c.propose(ctx, "delete_name", addr, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil || cur.Tombstone {
			return nil, fmt.Errorf("%w: name %q", block.ErrNotFound, name)
		}
		return nextVersion(cur, key, nil, true), nil
	})
	return err
}

// MoveMutable changes a block's acceptor set through decisions on the
// block itself (used when a replica is lost or placement changes): one on
// the joint config of both sets, which new members receive and a majority
// of the old set seals, then one settling the block on the new set (see
// shared/paxos, config.go).
func (c *Client) MoveMutable(ctx context.Context, addr block.Address, quorum []string) error {
	_, err := c.propose(ctx, "move", addr, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil {
			return nil, fmt.Errorf("%w: %s", block.ErrNotFound, addr)
		}
		n := proto.Clone(cur).(*bpb.MutableState)
		n.Quorum = quorum
		return n, nil
	})
	return err
}

// DeleteMutable marks a mutable block deleted with a signed tombstone; reads
// then report it not found. The block's acceptors keep the tombstone so an
// older version can never be replayed over it.
func (c *Client) DeleteMutable(ctx context.Context, key ed25519.PrivateKey, addr block.Address) error {
	_, err := c.propose(ctx, "delete", addr, func(cur *bpb.MutableState) (*bpb.MutableState, error) {
		if cur == nil || cur.Tombstone {
			return nil, fmt.Errorf("%w: %s", block.ErrNotFound, addr)
		}
		return nextVersion(cur, key, nil, true), nil
	})
	return err
}
