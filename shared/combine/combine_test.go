package combine

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

type item struct {
	n     int
	round int
}

// Items queued behind a round in progress go together in the next round,
// in the order they were queued, and each caller returns only after the
// round that carried its item.
func TestRoundsCombineQueuedItems(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var rounds [][]int
	qs := New(100, time.Minute, func(_ context.Context, key string, batch []*item) {
		mu.Lock()
		r := len(rounds)
		ns := make([]int, len(batch))
		for i, it := range batch {
			ns[i], it.round = it.n, r
		}
		rounds = append(rounds, ns)
		mu.Unlock()
		if r == 0 {
			close(entered)
			<-release
		}
	})
	ctx := context.Background()
	first := &item{n: 0}
	firstDone := make(chan error, 1)
	go func() { firstDone <- qs.Do(ctx, "k", first) }()
	<-entered

	const n = 20
	items := make([]*item, n)
	errs := make(chan error, n)
	for i := range n {
		items[i] = &item{n: i + 1, round: -1}
		// Queued one after another, so the order is known.
		go func() { errs <- qs.Do(ctx, "k", items[i]) }()
		waitQueued(t, qs, i+1)
	}
	close(release)
	if err := <-firstDone; err != nil || first.round != 0 {
		t.Fatalf("first item: %v, round %d", err, first.round)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(rounds) != 2 || len(rounds[1]) != n {
		t.Fatalf("rounds %v, want [0] then all %d queued items", rounds, n)
	}
	for i, v := range rounds[1] {
		if v != i+1 {
			t.Fatalf("second round %v is out of queue order", rounds[1])
		}
	}
	for _, it := range items {
		if it.round != 1 {
			t.Fatalf("item %d returned before its round ran", it.n)
		}
	}
	if qs.Queued() != 0 || len(qs.m) != 0 {
		t.Fatal("queue not retired once empty")
	}
}

// A round is bounded by max items; the rest go in the next.
func TestRoundSize(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	qs := New(3, time.Minute, func(_ context.Context, _ int, batch []int) {
		mu.Lock()
		sizes = append(sizes, len(batch))
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
	})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = qs.Do(ctx, 1, 0) }()
	<-entered
	for i := range 7 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = qs.Do(ctx, 1, i) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for qs.Queued() < 7 {
		if time.Now().After(deadline) {
			t.Fatal("items not queued")
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 4 || sizes[1] != 3 || sizes[2] != 3 || sizes[3] != 1 {
		t.Fatalf("round sizes %v, want [1 3 3 1]", sizes)
	}
}

// A caller whose context ends stops waiting; the round still runs for the
// others, on a context of its own.
func TestCallerCancelDoesNotStopRound(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var roundErr error
	qs := New(10, time.Minute, func(ctx context.Context, _ string, _ []int) {
		close(entered)
		<-release
		roundErr = ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- qs.Do(ctx, "k", 1) }()
	<-entered
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Do after cancel: %v", err)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for qs.Queued() != 0 || func() bool { qs.mu.Lock(); defer qs.mu.Unlock(); return len(qs.m) != 0 }() {
		if time.Now().After(deadline) {
			t.Fatal("round did not finish")
		}
		runtime.Gosched()
	}
	if roundErr != nil {
		t.Fatalf("the round's context ended with its caller's: %v", roundErr)
	}
}

// A round serving requests other than the one whose trace it runs in links
// their spans; a round serving only that one starts no span of its own.
func TestRoundSpanLinksItsRequests(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	tr := otel.Tracer("test")

	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	qs := New(100, time.Minute, func(ctx context.Context, _ string, batch []*item) {
		once.Do(func() { close(entered); <-release })
	})
	leadCtx, lead := tr.Start(context.Background(), "lead")
	leadDone := make(chan error, 1)
	go func() { leadDone <- qs.Do(leadCtx, "k", &item{}) }()
	<-entered
	var queued []trace.SpanContext
	errs := make(chan error, 3)
	for i := range 3 {
		ctx, sp := tr.Start(context.Background(), "queued")
		queued = append(queued, sp.SpanContext())
		go func() { errs <- qs.Do(ctx, "k", &item{}); sp.End() }()
		waitQueued(t, qs, i+1)
	}
	close(release)
	if err := <-leadDone; err != nil {
		t.Fatal(err)
	}
	lead.End()
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var rounds []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "combine.round" {
			rounds = append(rounds, s)
		}
	}
	if len(rounds) != 1 {
		t.Fatalf("%d combine.round spans, want 1 (the lead's own round starts none)", len(rounds))
	}
	r := rounds[0]
	if r.Parent().SpanID() != lead.SpanContext().SpanID() {
		t.Fatal("the round does not run in the lead request's trace")
	}
	linked := map[trace.SpanID]bool{}
	for _, l := range r.Links() {
		linked[l.SpanContext.SpanID()] = true
	}
	for i, q := range queued {
		if !linked[q.SpanID()] {
			t.Errorf("queued request %d is not linked from its round", i)
		}
	}
	if len(r.Links()) != 3 {
		t.Errorf("%d links, want 3", len(r.Links()))
	}
}

// waitQueued waits until n items wait behind the round in progress.
func waitQueued[K comparable, T any](t *testing.T, qs *Queues[K, T], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for qs.Queued() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d items queued", qs.Queued(), n)
		}
		runtime.Gosched()
	}
}
