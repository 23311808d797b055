// Package combine applies writes aimed at the same key in shared rounds.
//
// A mutable block takes one Paxos round per change; when many requests in
// one process change the same block (the tail shard of an index, a shard
// of a reference set), one round per request makes that block's round
// trips the limit on requests per second, however many clients there are.
// Instead the first request to find a key idle starts a committer, which
// runs a round with every item queued by then, then the next lot, until
// the queue is empty. No request waits for more than the round in progress
// and its own.
package combine

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"shoal/shared/telemetry"
)

// Queues holds one queue per key. The zero value is not usable; use New.
type Queues[K comparable, T any] struct {
	max     int
	timeout time.Duration
	run     func(ctx context.Context, key K, batch []T)

	mu sync.Mutex
	m  map[K]*queue[T]
}

type queue[T any] struct {
	items []entry[T]
	// running is set while a committer drains the queue.
	running bool
}

type entry[T any] struct {
	item T
	span trace.SpanContext // the queuing request's
	done chan struct{}
}

// roundLinks bounds the request spans a round's span links to.
const roundLinks = 32

// New returns queues whose rounds carry at most max items. run applies a
// round; it must record each item's outcome in the item itself (items are
// usually pointers). A round runs with its own context, bounded by
// timeout, carrying the values (the trace) of the request that started the
// committer but not its cancellation: it serves other requests too.
func New[K comparable, T any](max int, timeout time.Duration, run func(ctx context.Context, key K, batch []T)) *Queues[K, T] {
	return &Queues[K, T]{max: max, timeout: timeout, run: run, m: map[K]*queue[T]{}}
}

// Do queues item under key and returns once a round that included it has
// run, or with ctx's error if ctx ends first (the item may still be
// applied, as a request whose reply was lost may be).
func (qs *Queues[K, T]) Do(ctx context.Context, key K, item T) error {
	e := entry[T]{item: item, span: trace.SpanContextFromContext(ctx), done: make(chan struct{})}
	qs.mu.Lock()
	q := qs.m[key]
	if q == nil {
		q = &queue[T]{}
		qs.m[key] = q
	}
	q.items = append(q.items, e)
	lead := !q.running
	q.running = true
	qs.mu.Unlock()
	if lead {
		go qs.drain(context.WithoutCancel(ctx), key, q)
	}
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Queued counts the items waiting (not those in a round being applied).
func (qs *Queues[K, T]) Queued() int {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	n := 0
	for _, q := range qs.m {
		n += len(q.items)
	}
	return n
}

func (qs *Queues[K, T]) drain(ctx context.Context, key K, q *queue[T]) {
	for {
		qs.mu.Lock()
		n := min(len(q.items), qs.max)
		if n == 0 {
			q.running = false
			delete(qs.m, key)
			qs.mu.Unlock()
			return
		}
		lot := q.items[:n:n]
		q.items = q.items[n:]
		qs.mu.Unlock()
		batch := make([]T, n)
		for i, e := range lot {
			batch[i] = e.item
		}
		rctx, cancel := context.WithTimeout(ctx, qs.timeout)
		rctx, sp := roundSpan(rctx, lot)
		qs.run(rctx, key, batch)
		if sp != nil {
			sp.End()
		}
		cancel()
		for _, e := range lot {
			close(e.done)
		}
	}
}

// roundSpan starts a span for a round serving other requests than the one
// whose trace it runs in (that of the request that started the committer,
// which for a later round may have ended), linking theirs: each request's
// trace still leads to the round that applied its item. A round serving
// only that request gets none.
func roundSpan[T any](ctx context.Context, lot []entry[T]) (context.Context, trace.Span) {
	own := trace.SpanContextFromContext(ctx)
	var links []trace.Link
	for _, e := range lot {
		if e.span.IsValid() && !e.span.Equal(own) && len(links) < roundLinks {
			links = append(links, trace.Link{SpanContext: e.span})
		}
	}
	if len(links) == 0 {
		return ctx, nil
	}
	return telemetry.Tracer().Start(ctx, "combine.round", trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("round.items", len(lot))))
}
