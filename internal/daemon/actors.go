package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"
)

// actor is one of the daemon's long-running parts (a server, the
// scheduler, a poller; publishers and scheduled backups to come): run
// returns when ctx ends (nil) or when it fails. The first failure ends
// the others, and names the actor.
type actor struct {
	name string
	run  func(ctx context.Context) error
}

// runActors runs every actor until ctx ends or one fails, and returns when
// all have returned: only then may what they use (the store, the audit
// trail) be closed.
func runActors(ctx context.Context, actors []actor) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, a := range actors {
		g.Go(func() error {
			if err := a.run(ctx); err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// task is an actor of a loop that ends with ctx and cannot fail.
func task(name string, run func(context.Context)) actor {
	return actor{name: name, run: func(ctx context.Context) error { run(ctx); return nil }}
}

// serving is the actor of an HTTP server on ln: it serves until ctx ends,
// then shuts down gracefully (ShutdownTimeout).
func serving(name string, srv *http.Server, ln net.Listener) actor {
	return actor{name: name, run: func(ctx context.Context) error {
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		select {
		case err := <-served:
			return err // it stopped by itself: a failure
		case <-ctx.Done():
		}
		shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			return fmt.Errorf("graceful shutdown: %w", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}}
}

// afterLoad runs a once the key sets are loaded (loaded closed), or not at
// all if ctx ends first.
func afterLoad(loaded <-chan struct{}, a actor) actor {
	return actor{name: a.name, run: func(ctx context.Context) error {
		select {
		case <-loaded:
			return a.run(ctx)
		case <-ctx.Done():
			return nil
		}
	}}
}

// reloading is the actor that re-reads the config on SIGHUP.
func (d *daemon) reloading() actor {
	return actor{name: "reload on SIGHUP", run: func(ctx context.Context) error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				d.log.Info("SIGHUP: reloading the config and reopening the audit trail")
				d.auditLog.Reopen()
				_ = d.reload.Reload(ctx) // logs and audits the outcome itself
			case <-ctx.Done():
				return nil
			}
		}
	}}
}
