package paxos

import (
	"fmt"
	"slices"
)

// A block's acceptor set (its config) is the Quorum of its decided state.
// Changing it is a decision like any other, but one that must carry its
// knowledge from the old set to the new: once the new set decides alone,
// no majority of the old set may still decide. A majority of the new set
// holding the moved state does not say that (when the sets differ by more
// than one node, a majority of each can be disjoint: {a,d} of {a,b,d} and
// {b,c} of {a,b,c}), and a proposer finding the moved state there cannot
// tell whether a majority of the old set took it too.
//
// So a move goes through a joint config, as in Raft: the state first names
// both sets, the new one, then an empty id, then the old one, and every
// decision in a joint config needs a majority of each set. Deciding the
// joint state needs a majority of the old set, whose members then refuse
// the old set's rounds (their state names another config); a second
// decision, on the joint config, settles the block on the new set, and is
// only made once the joint state is chosen (Raft's rule: the config in
// force is committed before the next is proposed). Any proposer that finds
// a joint state settles it (see settle), so a mover dying between the two
// steps leaves nothing behind; and as every acceptor of the move takes
// part in the joint config's rounds (see compatible), a move left half
// done in any way can always be finished or overtaken.
const jointSep = ""

// splitConfig returns the sets of q: the new and old set of a joint
// config, or q itself and nil.
func splitConfig(q []string) (newSet, oldSet []string) {
	if i := slices.Index(q, jointSep); i >= 0 {
		return q[:i], q[i+1:]
	}
	return q, nil
}

// IsJoint reports whether q is the joint config of a move in progress.
func IsJoint(q []string) bool { return slices.Contains(q, jointSep) }

// Target returns the set q settles on: the new set of a joint config, q
// itself otherwise.
func Target(q []string) []string {
	n, _ := splitConfig(q)
	return n
}

// jointConfig names both sets of a move from oldSet to newSet.
func jointConfig(newSet, oldSet []string) []string {
	return append(append(slices.Clone(newSet), jointSep), oldSet...)
}

// Members returns every node id of q, once each.
func Members(q []string) []string {
	out := make([]string, 0, len(q))
	for _, n := range q {
		if n != jointSep && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// SameConfig reports whether two configs are the same: the same set, or
// joint with the same new and the same old set.
func SameConfig(a, b []string) bool {
	an, ao := splitConfig(a)
	bn, bo := splitConfig(b)
	return IsJoint(a) == IsJoint(b) && SameSet(an, bn) && SameSet(ao, bo)
}

// compatible reports whether an acceptor whose state names config held
// takes part in rounds on config req: its own config, or the joint config
// of a move from or to it. A joint config's quorums hold a majority of
// both its sets, so they meet every quorum of either: the joint config
// needs no sealing from them, and with every acceptor of the move taking
// part in it, it always has its quorums (a move half done can be finished
// or overtaken whatever state each acceptor was left in). A member that
// took the joint state takes part in nothing else: that is what seals the
// old set, and what keeps the new one from deciding before the joint
// state is chosen.
func compatible(held, req []string) bool {
	if SameConfig(held, req) {
		return true
	}
	if !IsJoint(req) || IsJoint(held) {
		return false
	}
	n, o := splitConfig(req)
	return SameSet(held, o) || SameSet(held, n)
}

// satisfied reports whether the nodes in has hold a majority of every set
// of config q.
func satisfied(q []string, has func(string) bool) bool {
	n, o := splitConfig(q)
	if !majorityIn(n, has) {
		return false
	}
	return !IsJoint(q) || majorityIn(o, has)
}

func majorityIn(set []string, has func(string) bool) bool {
	c := 0
	for _, x := range set {
		if has(x) {
			c++
		}
	}
	return c >= majority(len(set))
}

// nodeSet is a set of node ids, for satisfied.
type nodeSet map[string]bool

func (s nodeSet) has(n string) bool { return s[n] }

// checkConfig refuses a malformed config.
func checkConfig(q []string) error {
	n, o := splitConfig(q)
	if len(n) == 0 || IsJoint(q) && (len(o) == 0 || IsJoint(o)) {
		return fmt.Errorf("%w: malformed acceptor set %q", ErrBadRequest, q)
	}
	return nil
}
