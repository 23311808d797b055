package catalog

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, n := range []string{"a", "vol-1.data_2", "0", strings.Repeat("x", 63)} {
		if !ValidName(n) {
			t.Errorf("%q refused", n)
		}
	}
	for _, n := range []string{"", "-x", ".x", "a/b", "a b", "../etc", strings.Repeat("x", 64), "é"} {
		if ValidName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}
