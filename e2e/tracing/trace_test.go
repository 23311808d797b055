// Package tracing checks that one block write produces one trace whose span
// tree reaches from the caller through the DHT to every replica's silo, and
// that small reads sharing a batched call each keep a trace into it.
package tracing

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"shoal/e2e/framework"
	"shoal/shared/dht"
	"shoal/shared/telemetry"
)

func TestPutSpanTree(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	c := framework.Start(t, framework.Options{Nodes: 3})
	cl := c.Client(dht.Config{})
	if err := cl.WaitForNodes(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	ctx, root := telemetry.Tracer().Start(context.Background(), "cli.block.put")
	addr, err := cl.Put(ctx, []byte("traced block"))
	if err != nil {
		t.Fatal(err)
	}
	root.End()
	// The third replica may still be writing after the quorum returned.
	// Spans are recorded when they end, and the last client span ends after
	// its server span and silo write: wait for all nine.
	framework.Eventually(t, 10*time.Second, "3 silo.put spans and 6 Put RPC spans", func() bool {
		n := 0
		for _, s := range rec.Ended() {
			if (s.Name() == "silo.put" || s.Name() == "shoal.blockstore.v1.BlockStore/PutBatch") && s.SpanContext().TraceID() == root.SpanContext().TraceID() {
				n++
			}
		}
		return n == 9
	})
	tid := root.SpanContext().TraceID()
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == tid {
			byID[s.SpanContext().SpanID()] = s
		}
	}
	parentName := func(s sdktrace.ReadOnlySpan) string {
		if p, ok := byID[s.Parent().SpanID()]; ok {
			return p.Name()
		}
		return ""
	}
	const rpcName = "shoal.blockstore.v1.BlockStore/PutBatch"
	counts := map[string]int{}
	for _, s := range byID {
		switch s.Name() {
		case "dht.put":
			if parentName(s) != "cli.block.put" {
				t.Errorf("dht.put parent = %q", parentName(s))
			}
			// Set only on recording spans (the hex costs when tracing is off).
			found := false
			for _, kv := range s.Attributes() {
				found = found || (kv.Key == "block.address" && kv.Value.AsString() == addr.String())
			}
			if !found {
				t.Errorf("dht.put attributes %v lack block.address %s", s.Attributes(), addr)
			}
		case rpcName:
			want := "dht.put" // client side
			if s.SpanKind() == trace.SpanKindServer {
				want = rpcName
			}
			if parentName(s) != want {
				t.Errorf("%s (%v) parent = %q, want %q", s.Name(), s.SpanKind(), parentName(s), want)
			}
			counts[s.Name()+"/"+s.SpanKind().String()]++
			continue
		case "silo.put":
			if p := byID[s.Parent().SpanID()]; p == nil || p.Name() != rpcName || p.SpanKind() != trace.SpanKindServer {
				t.Errorf("silo.put parent = %q", parentName(s))
			}
		}
		counts[s.Name()]++
	}
	want := map[string]int{
		"cli.block.put": 1, "dht.put": 1, "silo.put": 3,
		rpcName + "/client": 3, rpcName + "/server": 3,
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%d spans %q, want %d (all: %v)", counts[k], k, v, counts)
		}
	}
}
