package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// The first actor to fail ends the others, is named in the error, and
// runActors returns only once every actor has returned (the store closes
// after). Before, run returned at a server's failure with the others still
// running, and closed the store under a live API server.
func TestFirstFailureStopsEveryActor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var stopped atomic.Int32
	// The server's stop shows as its listener closed (checked below):
	// RegisterOnShutdown's hooks run on goroutines of their own, after.
	srv := &http.Server{Handler: http.NotFoundHandler()}
	boom := errors.New("boom")
	err = runActors(context.Background(), []actor{
		serving("API server", srv, ln),
		{name: "poller", run: func(ctx context.Context) error { <-ctx.Done(); stopped.Add(1); return nil }},
		{name: "publisher", run: func(context.Context) error { return boom }},
	})
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "publisher: ") {
		t.Fatalf("runActors = %v, want the publisher's failure, named", err)
	}
	if n := stopped.Load(); n != 1 {
		t.Fatal("the poller had not stopped when runActors returned")
	}
	if _, err := http.Get("http://" + ln.Addr().String()); err == nil {
		t.Fatal("the API server still answers after runActors returned")
	}
}

// An actor that finishes its work (the background start) ends nothing.
func TestFinishedActorEndsNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	loaded, started := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- runActors(ctx, []actor{
			{name: "start", run: func(context.Context) error { close(loaded); return nil }},
			afterLoad(loaded, task("scheduler", func(ctx context.Context) { close(started); <-ctx.Done() })),
		})
	}()
	<-started // the scheduler runs after the start ended without error
	select {
	case err := <-done:
		t.Fatalf("runActors returned when the start finished: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
