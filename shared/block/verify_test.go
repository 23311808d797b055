package block

import (
	"crypto/ed25519"
	"testing"

	"google.golang.org/protobuf/proto"

	bpb "shoal/proto/blockstorepb"
)

// A signature checked once is not checked again, but a state changed in
// any signed field after its signature was cached still fails: the cache
// is keyed by the exact message, signature and writer.
func TestSignatureCacheKeepsForgeriesOut(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	salt := []byte("0123456789abcdef")
	addr := MutableAddress(pub, salt)
	st := &bpb.MutableState{Address: addr[:], Owner: pub, Derivation: salt, Version: 3, Payload: []byte("v3")}
	Sign(st, priv)
	for i := range 2 {
		if err := VerifyMutable(st, nil, 0); err != nil {
			t.Fatalf("check %d of a valid state: %v", i+1, err)
		}
	}
	for name, change := range map[string]func(*bpb.MutableState){
		"payload":   func(s *bpb.MutableState) { s.Payload = []byte("v4") },
		"version":   func(s *bpb.MutableState) { s.Version = 4 },
		"tombstone": func(s *bpb.MutableState) { s.Tombstone = true },
		"signature": func(s *bpb.MutableState) { s.Signature[0] ^= 1 },
	} {
		forged := proto.Clone(st).(*bpb.MutableState)
		change(forged)
		if err := VerifyMutable(forged, nil, 0); err == nil {
			t.Errorf("a state with its %s changed after its signature was checked passed", name)
		}
	}
	other, _, _ := ed25519.GenerateKey(nil)
	forged := proto.Clone(st).(*bpb.MutableState)
	forged.Writer = other
	if err := VerifyMutable(forged, nil, 0); err == nil {
		t.Error("a cached signature passed under another writer")
	}
}

// A version signed in this process is known to verify: its acceptors in
// this process find it in the verified set instead of checking it again.
func TestSignedVersionsAreKnownGood(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	salt := []byte("fedcba9876543210")
	addr := MutableAddress(pub, salt)
	st := &bpb.MutableState{Address: addr[:], Owner: pub, Derivation: salt, Version: 1, Payload: []byte("v1")}
	Sign(st, priv)
	verified.Lock()
	_, ok := verified.m[verifiedKey(st.Writer, signedBytes(st), st.Signature)]
	verified.Unlock()
	if !ok {
		t.Fatal("a version signed here is not in the verified set")
	}
	if !ed25519.Verify(pub, signedBytes(st), st.Signature) {
		t.Fatal("the remembered signature does not verify")
	}
	if err := VerifyMutable(st, nil, 0); err != nil {
		t.Fatal(err)
	}
}
