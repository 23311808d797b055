// Package telemetry is the one place Shoal sets up OpenTelemetry: a tracer
// provider that exports OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (and
// records nothing otherwise), the W3C propagator, and the gRPC and NATS
// hooks that carry trace context between processes.
package telemetry

import (
	"context"
	"errors"
	"os"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// TracerName is the instrumentation scope of Shoal's own spans.
const TracerName = "shoal"

// Tracer returns Shoal's tracer from the global provider.
func Tracer() trace.Tracer { return otel.Tracer(TracerName) }

// Setup installs the global tracer provider and propagator. With no OTLP
// endpoint configured, the SDK is not installed at all, so spans cost next
// to nothing. The returned function flushes and stops the exporter.
func Setup(ctx context.Context, service string) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, errors.Join(errors.New("telemetry: otlp exporter"), err)
	}
	res, _ := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service)))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// ServerHandler instruments a gRPC server.
func ServerHandler() stats.Handler { return otelgrpc.NewServerHandler() }

// ClientHandler instruments a gRPC client connection.
func ClientHandler() stats.Handler { return otelgrpc.NewClientHandler() }

// ServerOption is the grpc.ServerOption form of ServerHandler.
func ServerOption() grpc.ServerOption { return grpc.StatsHandler(ServerHandler()) }

// DialOption is the grpc.DialOption form of ClientHandler.
func DialOption() grpc.DialOption { return grpc.WithStatsHandler(ClientHandler()) }
