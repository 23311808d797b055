package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Requests are the request metrics every frontend keeps, named after its
// protocol (prefix "s3", "nbd"): PREFIX.requests by operation and status,
// PREFIX.bytes.in and PREFIX.bytes.out by operation, and
// PREFIX.request.duration in seconds.
type Requests struct {
	requests metric.Int64Counter
	bytesIn  metric.Int64Counter
	bytesOut metric.Int64Counter
	duration metric.Float64Histogram
}

// NewRequests creates the instruments on m; protocol names the requests
// in the counter's description ("S3", "NBD").
func NewRequests(m metric.Meter, prefix, protocol string) (*Requests, error) {
	r := &Requests{}
	var err error
	if r.requests, err = m.Int64Counter(prefix+".requests", metric.WithDescription(protocol+" requests by operation and status.")); err != nil {
		return nil, err
	}
	if r.bytesIn, err = m.Int64Counter(prefix+".bytes.in", metric.WithUnit("By")); err != nil {
		return nil, err
	}
	if r.bytesOut, err = m.Int64Counter(prefix+".bytes.out", metric.WithUnit("By")); err != nil {
		return nil, err
	}
	if r.duration, err = m.Float64Histogram(prefix+".request.duration", metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return r, nil
}

// Record counts one request.
func (r *Requests) Record(ctx context.Context, op, status string, in, out int64, d time.Duration) {
	opAttr := attribute.String("operation", op)
	r.requests.Add(ctx, 1, metric.WithAttributes(opAttr, attribute.String("status", status)))
	if in > 0 {
		r.bytesIn.Add(ctx, in, metric.WithAttributes(opAttr))
	}
	if out > 0 {
		r.bytesOut.Add(ctx, out, metric.WithAttributes(opAttr))
	}
	r.duration.Record(ctx, d.Seconds(), metric.WithAttributes(opAttr))
}
