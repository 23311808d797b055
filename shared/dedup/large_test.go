package dedup_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"shoal/shared/block"
	"shoal/shared/dedup"
	"shoal/shared/dedup/manifest"
	"shoal/shared/dedup/policy"
)

// countStore keeps manifest nodes and only the address and size of data
// blocks, so streams far larger than RAM can be written and their trees
// walked.
type countStore struct {
	mu     sync.Mutex
	sizes  map[block.Address]int
	nodes  map[block.Address][]byte
	puts   int64
	hashes bool // verify like a storage node would
}

func newCountStore() *countStore {
	return &countStore{sizes: map[block.Address]int{}, nodes: map[block.Address][]byte{}, hashes: true}
}

var nodeMagic = []byte{'S', 'H', 'N', 1}

func (s *countStore) Put(_ context.Context, data []byte) (block.Address, error) {
	a := block.Sum(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	s.sizes[a] = len(data)
	if bytes.HasPrefix(data, nodeMagic) {
		s.nodes[a] = bytes.Clone(data)
	}
	return a, nil
}

func (s *countStore) Get(_ context.Context, a block.Address) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.nodes[a]; ok {
		return b, nil
	}
	return nil, block.ErrNotFound
}

func (s *countStore) Has(_ context.Context, addrs []block.Address) ([]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]bool, len(addrs))
	for i, a := range addrs {
		_, out[i] = s.sizes[a]
	}
	return out, nil
}

func (s *countStore) PutShard(_ context.Context, _ block.Address, _ int, data []byte) (block.Address, error) {
	return block.Sum(data), nil
}

func (s *countStore) GetShard(context.Context, block.Address, int, block.Address) ([]byte, error) {
	return nil, block.ErrNotFound
}

func (s *countStore) Delete(context.Context, block.Address) error { return nil }

// genReader yields n pseudo-random bytes, sampling the heap every 64 MiB.
type genReader struct {
	rng      *rand.ChaCha8
	left     int64
	sinceMem int64
	peakHeap uint64
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.left)]
	_, _ = g.rng.Read(p)
	g.left -= int64(len(p))
	if g.sinceMem += int64(len(p)); g.sinceMem >= 64<<20 {
		g.sinceMem = 0
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		g.peakHeap = max(g.peakHeap, ms.HeapInuse)
	}
	return len(p), nil
}

// TestLargeStreamBoundedMemory writes 2 GiB through the whole pipeline and
// asserts the heap stays bounded, then walks the resulting tree.
func TestLargeStreamBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 2 GiB; run without -short")
	}
	const size = 2 << 30
	store := newCountStore()
	w, err := dedup.NewWriter(store, dedup.WriterConfig{Policy: policy.Default(), MaxInFlight: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	gen := &genReader{rng: rand.NewChaCha8([32]byte{7}), left: size}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	ref, err := w.Write(context.Background(), gen)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Size != size {
		t.Fatalf("size %d", ref.Size)
	}
	grew := int64(gen.peakHeap) - int64(base.HeapInuse)
	t.Logf("2 GiB written: depth %d, %d blocks, heap peak %d MiB above a %d MiB base",
		ref.Depth, len(store.sizes), grew>>20, base.HeapInuse>>20)
	// 64 MiB in flight (plaintext + sealed), pooled buffers awaiting GC,
	// zstd state, the dedup window: well under 256 MiB, whatever the size.
	if grew > 256<<20 {
		t.Fatalf("heap grew %d MiB writing 2 GiB", grew>>20)
	}
	r := newReader(t, store, dedup.ReaderConfig{})
	st, err := r.Stat(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Chunks < size/(256<<10) || st.Chunks > size/(16<<10) {
		t.Fatalf("stat %+v", st)
	}
	all, err := r.Reachable(context.Background(), []manifest.Ref{ref})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(store.sizes) {
		t.Fatalf("tree reaches %d blocks, store holds %d", len(all), len(store.sizes))
	}
}
