package block

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	bpb "shoal/proto/blockstorepb"
)

// WithPayload is proto.Clone with the payload replaced, sharing the new
// payload and nothing of the original state.
func TestWithPayload(t *testing.T) {
	st := &bpb.MutableState{Address: []byte{1, 2}, Owner: []byte{3}, Derivation: []byte{4}, Named: true, Version: 7,
		Payload: []byte("old payload"), Writers: [][]byte{{5, 6}}, Tombstone: true, Writer: []byte{7}, Signature: []byte{8},
		Quorum: []string{"a", "b", "c"}, RecentOps: []uint64{1, 2}}
	orig := proto.Clone(st).(*bpb.MutableState)
	payload := []byte("new payload")
	out := WithPayload(st, payload)
	want := proto.Clone(st).(*bpb.MutableState)
	want.Payload = payload
	if !proto.Equal(out, want) {
		t.Fatalf("got %v, want %v", out, want)
	}
	if &out.Payload[0] != &payload[0] {
		t.Fatal("the payload was copied")
	}
	out.Address[0]++
	out.Writers[0][0]++
	out.Writer[0]++
	out.Quorum[0] = "x"
	out.RecentOps[0] = 9
	if !proto.Equal(st, orig) || !bytes.Equal(st.Payload, []byte("old payload")) {
		t.Fatalf("the copy shares state with the original: %v", st)
	}
}
