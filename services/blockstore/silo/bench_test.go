package silo

import (
	"crypto/rand"
	"sync/atomic"
	"testing"

	"shoal/shared/block"
)

// BenchmarkPutSmallParallel is the storage node's share of a 4 KiB put:
// many concurrent writers, each returning only once its block is durable.
// Group commit is what makes this scale past one fsync per block.
func BenchmarkPutSmallParallel(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetParallelism(32) // 64 writers on 2 cores
	b.SetBytes(4096)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		data := make([]byte, 4096)
		for pb.Next() {
			_, _ = rand.Read(data)
			if _, err := s.Put(block.Sum(data), block.KindImmutable, data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetSmallParallel reads 4 KiB blocks back at random.
func BenchmarkGetSmallParallel(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	addrs := make([]block.Address, 20000)
	data := make([]byte, 4096)
	for i := range addrs {
		_, _ = rand.Read(data)
		addrs[i] = block.Sum(data)
		if _, err := s.Put(addrs[i], block.KindImmutable, data); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Uint64
	b.SetParallelism(32)
	b.SetBytes(4096)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(7919) % uint64(len(addrs))
			if _, _, err := s.Get(addrs[i]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHasAbsent is the "already stored?" check a put makes for a new
// block, against a silo holding 100k small blocks.
func BenchmarkHasAbsent(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	items := make([]Item, 0, 1000)
	data := make([]byte, 4096)
	for i := 0; i < 100; i++ {
		items = items[:0]
		for j := 0; j < 1000; j++ {
			_, _ = rand.Read(data[:64])
			items = append(items, Item{Addr: block.Sum(data), Kind: block.KindImmutable, Data: data})
		}
		s.PutMany(items)
	}
	probe := make([]block.Address, 4096)
	for i := range probe {
		_, _ = rand.Read(probe[i][:])
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ok, _ := s.Has(probe[i%len(probe)]); ok {
			b.Fatal("present")
		}
	}
}
