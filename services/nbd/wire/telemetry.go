package wire

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	shtel "shoal/shared/telemetry"
)

const instrumentation = "shoal/nbd"

// telemetry uses the global OpenTelemetry providers, which shared/telemetry
// configures once per process (no-ops until then).
type telemetry struct {
	tracer trace.Tracer
	*shtel.Requests
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
	r, err := shtel.NewRequests(m, "nbd", "NBD")
	if err != nil {
		return nil, err
	}
	return &telemetry{tracer: otel.Tracer(instrumentation), Requests: r}, nil
}

func (t *telemetry) record(ctx context.Context, op string, status uint32, in, out int64, d time.Duration) {
	t.Record(ctx, op, errnoName(status), in, out, d)
}
