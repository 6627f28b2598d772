package rotation_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/publish"
	"github.com/keyd-dev/keyd/publish/blob"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

// TestRotationWaitsForRequiredTargets: a due rotation waits until the
// required publishing target (a real folder) has held the pending key for
// its readers' cache time (jwks_max_age); a manual rotation is refused
// meanwhile, naming the target, and --force goes past it.
func TestRotationWaitsForRequiredTargets(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	store := openStore(t, filepath.Join(t.TempDir(), "keyd.db"))
	t.Cleanup(func() { _ = store.Close() })
	pub := jwks.New()
	tg, err := blob.Open(ctx, "file://"+filepath.Join(t.TempDir(), "site"))
	if err != nil {
		t.Fatal(err)
	}
	p := publish.New(publish.Spec{Name: "bucket", KeySets: []string{"default"}, Files: []string{publish.FileJWKS}, Required: true}, tg, pub, clk.now, nil)
	logs := &bytes.Buffer{}
	m := rotation.NewManager(rotation.Options{
		Store: store, Policies: []keystore.Policy{hourly()}, Generator: keystoretest.FastGenerator, Now: clk.now,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Listeners: []rotation.Listener{signer.New(clk.now, nil), pub},
		Gate: publish.Set{p}.Held,
	})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ks, _ := store.Get(ctx, "default")
	pending, _ := ks.Pending()

	clk.t = t0.Add(time.Hour) // due; the pending key is an hour old; the target never wrote
	plan, err := m.Tick(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if plan.Rotate || !strings.Contains(plan.WaitingFor, "bucket") || !plan.WaitUntil.Equal(clk.t.Add(5*time.Second)) {
		t.Fatalf("due rotation with the target not holding the key: %+v", plan)
	}
	if !strings.Contains(m.WaitingFor("default"), "bucket") || !strings.Contains(logs.String(), "waits for publishing targets") {
		t.Fatalf("the wait is not told: %q\n%s", m.WaitingFor("default"), logs)
	}
	var early *rotation.TooEarlyError
	if _, err := m.Rotate(ctx, "default", false); !errors.As(err, &early) || !strings.Contains(err.Error(), "bucket") {
		t.Fatalf("manual rotation past the gate = %v", err)
	}

	if err := p.Once(ctx, false); err != nil { // the target holds it from 1:00
		t.Fatal(err)
	}
	if plan, _ := m.Tick(ctx, "default"); plan.Rotate || !plan.WaitUntil.Equal(t0.Add(65*time.Minute)) {
		t.Fatalf("rotation before the target's readers' caches expired: %+v", plan)
	}
	clk.t = t0.Add(65 * time.Minute)
	plan, err = m.Tick(ctx, "default")
	if err != nil || !plan.Rotate {
		t.Fatalf("no rotation once the target held the key for its cache time: %+v %v", plan, err)
	}
	ks, _ = store.Get(ctx, "default")
	if act, _ := ks.Active(); act.ID != pending.ID || m.WaitingFor("default") != "" {
		t.Fatalf("active %s, want %s; waiting %q", act.ID, pending.ID, m.WaitingFor("default"))
	}
	// The new pending key is not on the target yet: only --force rotates.
	if _, err := m.Rotate(ctx, "default", true); err != nil {
		t.Fatalf("forced rotation: %v", err)
	}
}
