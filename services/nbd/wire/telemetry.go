package wire

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
)

const instrumentation = "shoal/nbd"

// telemetry uses the global OpenTelemetry providers, which shared/telemetry
// configures once per process (no-ops until then).
type telemetry struct {
	tracer   trace.Tracer
	requests metric.Int64Counter
	bytesIn  metric.Int64Counter
	bytesOut metric.Int64Counter
	duration metric.Float64Histogram
}

func newTelemetry() (*telemetry, error) {
	return buildTelemetry(otel.Meter(instrumentation))
}

// noopTelemetry keeps the server running if the meter provider rejects an
// instrument; losing metrics is better than refusing to serve.
func noopTelemetry() *telemetry {
	t, _ := buildTelemetry(noop.NewMeterProvider().Meter(instrumentation))
	return t
}

func buildTelemetry(m metric.Meter) (*telemetry, error) {
	t := &telemetry{tracer: otel.Tracer(instrumentation)}
	var err error
	if t.requests, err = m.Int64Counter("nbd.requests", metric.WithDescription("NBD requests by operation and status.")); err != nil {
		return nil, err
	}
	if t.bytesIn, err = m.Int64Counter("nbd.bytes.in", metric.WithUnit("By")); err != nil {
		return nil, err
	}
	if t.bytesOut, err = m.Int64Counter("nbd.bytes.out", metric.WithUnit("By")); err != nil {
		return nil, err
	}
	if t.duration, err = m.Float64Histogram("nbd.request.duration", metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *telemetry) record(ctx context.Context, op string, status uint32, in, out int64, d time.Duration) {
	opAttr := attribute.String("operation", op)
	t.requests.Add(ctx, 1, metric.WithAttributes(opAttr, attribute.String("status", errnoName(status))))
	if in > 0 {
		t.bytesIn.Add(ctx, in, metric.WithAttributes(opAttr))
	}
	if out > 0 {
		t.bytesOut.Add(ctx, out, metric.WithAttributes(opAttr))
	}
	t.duration.Record(ctx, d.Seconds(), metric.WithAttributes(opAttr))
}
