package s3

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Work a request leaves running (index repairs) is cancelled and waited
// for when the server shuts down, and none starts afterwards.
func TestBackgroundEndsWithTheServer(t *testing.T) {
	b := newBackground()
	started := make(chan struct{})
	var cause error
	if !b.run(time.Minute, func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		cause = ctx.Err()
	}) {
		t.Fatal("work refused before shutdown")
	}
	<-started
	b.close() // returns only once the work has
	if !errors.Is(cause, context.Canceled) {
		t.Fatalf("work ended with %v, want it cancelled by the shutdown", cause)
	}
	if b.run(time.Minute, func(context.Context) { t.Error("work ran after shutdown") }) {
		t.Fatal("work accepted after shutdown")
	}
}
