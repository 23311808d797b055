package wire_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"shoal/services/nbd/wire"
)

// The global providers are installed before any server exists, as
// shared/telemetry does in a real process.
var (
	spans   = tracetest.NewSpanRecorder()
	metrics = sdkmetric.NewManualReader()
)

func TestMain(m *testing.M) {
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics)))
	os.Exit(m.Run())
}

var traceRuns atomic.Int32

func TestTelemetry(t *testing.T) {
	// The recorder is global and keeps spans of earlier runs (-count).
	export := fmt.Sprintf("traced-%d", traceRuns.Add(1))
	ex := newExports()
	mem := ex.add(wire.ExportInfo{Name: export}, newMem(1<<20))
	mem.fail = func(op string, off, _ int64) error {
		if op == "read" && off == 8192 {
			return errors.New("injected")
		}
		return nil
	}
	addr := serve(t, &wire.Server{Exports: ex})
	rc, _, _ := open(t, addr, export)
	rc.request(cmdWrite, flagFUA, 1, 4096, 4, []byte("abcd"))
	rc.expectReply(1, 0)
	rc.readAt(2, 4096, 4)
	rc.request(cmdRead, 0, 3, 8192, 512, nil)
	rc.expectReply(3, eIO)
	rc.request(cmdRead, 0, 4, 1<<20, 512, nil)
	rc.expectReply(4, eINVAL)
	rc.request(cmdFlush, 0, 5, 0, 0, nil)
	rc.expectReply(5, 0)
	rc.request(cmdDisc, 0, 6, 0, 0, nil)
	rc.expectClosed()
	ex.waitClosed(t) // every span has ended by then

	type want struct {
		name        string
		off, length int64
		status      codes.Code
		exception   bool
	}
	wants := []want{
		{"nbd.Write", 4096, 4, codes.Unset, false},
		{"nbd.Read", 4096, 4, codes.Unset, false},
		{"nbd.Read", 8192, 512, codes.Error, true},
		{"nbd.Read", 1 << 20, 512, codes.Unset, true}, // refused, not failed
		{"nbd.Flush", 0, 0, codes.Unset, false},
		{"nbd.Disconnect", 0, 0, codes.Unset, false},
	}
	var got []want
	for _, s := range spans.Ended() {
		attrs := attribute.NewSet(s.Attributes()...)
		if v, _ := attrs.Value("nbd.export"); v.AsString() != export {
			continue
		}
		if s.Parent().IsValid() {
			t.Errorf("%s has a parent span", s.Name())
		}
		if s.InstrumentationScope().Name != "shoal/nbd" {
			t.Errorf("%s from tracer %q", s.Name(), s.InstrumentationScope().Name)
		}
		off, _ := attrs.Value("nbd.offset")
		length, _ := attrs.Value("nbd.length")
		exception := false
		for _, e := range s.Events() {
			exception = exception || e.Name == "exception"
		}
		got = append(got, want{s.Name(), off.AsInt64(), length.AsInt64(), s.Status().Code, exception})
	}
	// Spans end after their reply is sent, so their order may vary.
	order := func(a, b want) int {
		return cmp.Or(strings.Compare(a.name, b.name), cmp.Compare(a.off, b.off))
	}
	slices.SortFunc(got, order)
	slices.SortFunc(wants, order)
	if !slices.Equal(got, wants) {
		t.Errorf("spans:\n got %+v\nwant %+v", got, wants)
	}

	var rm metricdata.ResourceMetrics
	if err := metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[[2]string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "nbd.requests" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				op, _ := dp.Attributes.Value("operation")
				st, _ := dp.Attributes.Value("status")
				counts[[2]string{op.AsString(), st.AsString()}] += dp.Value
			}
		}
	}
	for k, min := range map[[2]string]int64{{"Read", "EIO"}: 1, {"Read", "EINVAL"}: 1, {"Write", "OK"}: 1, {"Flush", "OK"}: 1} {
		if counts[k] < min {
			t.Errorf("nbd.requests%v = %d, want at least %d (all: %v)", k, counts[k], min, counts)
		}
	}
}
