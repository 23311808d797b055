package sizedcache

import "testing"

func TestBudget(t *testing.T) {
	c := New[int, string](100)
	c.Put(1, "a", 40)
	c.Put(2, "b", 40)
	if v, ok := c.Get(1); !ok || v != "a" || c.Bytes() != 80 {
		t.Fatalf("get 1: %q %v, %d bytes", v, ok, c.Bytes())
	}
	c.Put(1, "a2", 10) // replacing counts the new size only
	if c.Bytes() != 50 {
		t.Fatalf("after replace: %d bytes", c.Bytes())
	}
	c.Put(3, "c", 80) // over budget: something goes until it fits
	if c.Bytes() > 100 {
		t.Fatalf("over budget: %d bytes", c.Bytes())
	}
	c.Drop(3)
	c.Drop(3) // dropping an absent key changes nothing
	n := 0
	for _, k := range []int{1, 2, 3} {
		if _, ok := c.Get(k); ok {
			n++
		}
	}
	if _, ok := c.Get(3); ok || c.Bytes() < 0 || (n == 0) != (c.Bytes() == 0) {
		t.Fatalf("after drops: %d entries, %d bytes", n, c.Bytes())
	}
}
