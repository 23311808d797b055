package telemetry

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
)

// natsCarrier adapts nats.Header to the propagation.TextMapCarrier so trace
// context rides in NATS message headers.
type natsCarrier nats.Header

func (c natsCarrier) Get(k string) string { return nats.Header(c).Get(k) }
func (c natsCarrier) Set(k, v string)     { nats.Header(c).Set(k, v) }
func (c natsCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// InjectNATS writes ctx's trace context into msg's headers.
func InjectNATS(ctx context.Context, msg *nats.Msg) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	otel.GetTextMapPropagator().Inject(ctx, natsCarrier(msg.Header))
}

// ExtractNATS returns a context carrying the trace context found in msg.
func ExtractNATS(ctx context.Context, msg *nats.Msg) context.Context {
	if msg.Header == nil {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, natsCarrier(msg.Header))
}
