package s3

import (
	"context"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	shtel "shoal/shared/telemetry"
)

const instrumentation = "shoal/services/s3"

// telemetry uses the global OpenTelemetry providers, which shared/telemetry
// configures once per process (no-ops until then).
type telemetry struct {
	tracer trace.Tracer
	*shtel.Requests
}

func newTelemetry() (*telemetry, error) {
	r, err := shtel.NewRequests(otel.Meter(instrumentation), "s3", "S3")
	if err != nil {
		return nil, err
	}
	return &telemetry{tracer: otel.Tracer(instrumentation), Requests: r}, nil
}

func (t *telemetry) record(ctx context.Context, op string, status int, in, out int64, d time.Duration) {
	t.Record(ctx, op, strconv.Itoa(status), in, out, d)
}
