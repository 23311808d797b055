package block

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	a := Sum([]byte("hello"))
	b, err := Parse(a.String())
	if err != nil || a != b {
		t.Fatalf("round trip: %v %v %v", a, b, err)
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 64), strings.Repeat("a", 63)} {
		if _, err := Parse(bad); !errors.Is(err, ErrBadAddress) {
			t.Errorf("Parse(%q) = %v, want ErrBadAddress", bad, err)
		}
	}
	if _, err := FromBytes(make([]byte, 31)); !errors.Is(err, ErrBadAddress) {
		t.Errorf("FromBytes(31 bytes) = %v", err)
	}
}

func TestValidate(t *testing.T) {
	data := []byte("some block")
	addr := Sum(data)
	if err := Validate(addr, KindImmutable, data, 0); err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), data...)
	tampered[0] ^= 1
	if err := Validate(addr, KindImmutable, tampered, 0); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("tampered: %v", err)
	}
	if err := Validate(addr, KindImmutable, data, 4); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	if err := Validate(addr, Kind(9), data, 0); !errors.Is(err, ErrBadKind) {
		t.Fatalf("kind: %v", err)
	}
	// The well-known SHA-256 of "abc" pins the hash function.
	if got := Sum([]byte("abc")).String(); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("sha256(abc) = %s", got)
	}
}
