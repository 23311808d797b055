package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"shoal/services/app"
	"shoal/shared/telemetry"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := app.Load(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	level := slog.LevelInfo
	if os.Getenv("SHOAL_LOG") == "debug" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	tuneGC(log)
	shutdown, err := telemetry.Setup(ctx, "shoal-"+strings.ReplaceAll(cfg.Target, ",", "+"))
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	defer startCPUProfile("SHOAL_CPU_PROFILE", "SHOAL_ALLOC_PROFILE")()
	p, err := app.Start(ctx, cfg, log)
	if errors.Is(err, app.ErrConfig) {
		return usageError{err.Error()}
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "shoal is running; endpoints:")
	for _, e := range p.Endpoints() {
		fmt.Fprintln(stdout, "  "+e)
	}
	fmt.Fprintln(stdout, "stop with Ctrl-C")
	<-ctx.Done()
	log.Info("shutting down")
	return p.Stop()
}
