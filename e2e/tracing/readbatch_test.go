package tracing

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"shoal/e2e/framework"
	"shoal/services/dedup"
	"shoal/services/s3/cluster"
	"shoal/shared/block"
	"shoal/shared/rpc"
	"shoal/shared/telemetry"
)

// Small reads that share a ReadBatch call each keep a way into it: the
// call runs in the trace of one of them, and its combine.round span links
// every other one.
func TestReadBatchTraces(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	otel.SetTextMapPropagator(propagation.TraceContext{})
	c := framework.Start(t, framework.Options{Nodes: 3, MaxBlockSize: block.MaxSealed})
	d := c.StartDedup(dedup.Config{})
	conn, err := rpc.Dial(d.Service.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	data := cluster.NewData(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var refs [][]byte
	for i := range 8 {
		ref, _, err := data.Write(ctx, "traced", "", bytes.NewReader([]byte(fmt.Sprintf("object %d", i))))
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}

	const reads = 48
	roots := make([]trace.SpanContext, reads)
	var wg sync.WaitGroup
	for i := range reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, sp := telemetry.Tracer().Start(ctx, "s3.get")
			defer sp.End()
			roots[i] = sp.SpanContext()
			rc, err := data.Read(rctx, refs[i%len(refs)], 0, 8)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(rc)
			if want := fmt.Sprintf("object %d", i%len(refs))[:8]; string(b) != want {
				t.Errorf("read %d: %q, want %q", i, b, want)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if n := data.BatchedReads.Load(); n != reads {
		t.Fatalf("%d reads went through ReadBatch, want %d", n, reads)
	}

	const rpcName = "shoal.dedup.v1.Dedup/ReadBatch"
	inCall := map[trace.TraceID]bool{} // traces holding a ReadBatch client span
	linked := map[trace.SpanID]bool{}
	for _, s := range rec.Ended() {
		switch {
		case s.Name() == rpcName && s.SpanKind() == trace.SpanKindClient:
			inCall[s.SpanContext().TraceID()] = true
		case s.Name() == "combine.round":
			items := 0
			for _, a := range s.Attributes() {
				if a.Key == "round.items" {
					items = int(a.Value.AsInt64())
				}
			}
			if l := len(s.Links()); l < 1 || l > items {
				t.Errorf("combine.round of %d reads has %d links", items, l)
			}
			for _, l := range s.Links() {
				linked[l.SpanContext.SpanID()] = true
			}
		}
	}
	for i, r := range roots {
		if !inCall[r.TraceID()] && !linked[r.SpanID()] {
			t.Errorf("read %d: its trace holds no ReadBatch call and no batch links to it", i)
		}
	}
	t.Logf("%d reads in %d batches", reads, data.Batches.Load())
}
