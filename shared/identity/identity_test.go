package identity

import (
	"errors"
	"os"
	"testing"
)

func TestStore(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	u, err := s.Create("alice")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(s.path("alice"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	if _, err := s.Create("alice"); !errors.Is(err, ErrUserExists) {
		t.Fatalf("duplicate: %v", err)
	}
	v, err := s.Load("alice")
	if err != nil || !v.Public().Equal(u.Public()) {
		t.Fatalf("load: %v", err)
	}
	if _, err := s.Load("bob"); !errors.Is(err, ErrNoUser) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := s.Create("../evil"); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	if _, created, err := s.LoadOrCreate("carol"); err != nil || !created {
		t.Fatalf("load or create: %v %v", created, err)
	}
	names, _ := s.List()
	if len(names) != 2 || names[0] != "alice" || names[1] != "carol" {
		t.Fatalf("list: %v", names)
	}
}
