package rotation_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
)

// harness is a manager on a real bbolt file with a clock the test moves.
type harness struct {
	t     *testing.T
	clock *clock
	store keystore.Store
	m     *rotation.Manager
	sg    *signer.Signer
	pub   *jwks.Publisher
	p     keystore.Policy
	logs  *bytes.Buffer
}

var t0 = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

// hourly policy: rotates at every full hour; grace = 15m + 5m + 1m = 21m.
func hourly() keystore.Policy {
	return keystore.Policy{Name: "default", Algorithm: keystore.ES256, Rotation: "0 * * * *",
		TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute}
}

func newHarness(t *testing.T, p keystore.Policy, path string) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{t: t0}, p: p, logs: &bytes.Buffer{}}
	if path == "" {
		path = filepath.Join(t.TempDir(), "keyd.db")
	}
	h.store = openStore(t, path)
	t.Cleanup(func() { _ = h.store.Close() })
	h.restart()
	return h
}

// restart builds a fresh manager (as a new process would) on the same store.
func (h *harness) restart() {
	h.t.Helper()
	h.sg = signer.New(h.clock.now, nil)
	h.pub = jwks.New()
	h.m = rotation.NewManager(rotation.Options{
		Store: h.store, Policies: []keystore.Policy{h.p}, Generator: keystoretest.FastGenerator, Now: h.clock.now,
		Logger: slog.New(slog.NewTextHandler(h.logs, nil)), Listeners: []rotation.Listener{h.sg, h.pub},
	})
	if err := h.m.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) at(d time.Duration) { h.clock.t = t0.Add(d) }

func (h *harness) tick() rotation.Plan {
	h.t.Helper()
	plan, err := h.m.Tick(context.Background(), "default")
	if err != nil {
		h.t.Fatal(err)
	}
	return plan
}

func (h *harness) keySet() *keystore.KeySet {
	h.t.Helper()
	ks, err := h.store.Get(context.Background(), "default")
	if err != nil {
		h.t.Fatal(err)
	}
	return ks
}

func stateOf(ks *keystore.KeySet) string {
	var s []string
	for _, k := range ks.Keys {
		s = append(s, string(k.State))
	}
	return strings.Join(s, ",")
}

func (h *harness) published() map[string]bool {
	doc, _ := h.pub.KeySet("default")
	out := map[string]bool{}
	ks := h.keySet()
	for _, k := range ks.Keys {
		if bytes.Contains(doc.Body, []byte(`"`+k.ID+`"`)) {
			out[k.ID] = true
		}
	}
	return out
}

func TestLifecycleOnSchedule(t *testing.T) {
	h := newHarness(t, hourly(), "")
	ks := h.keySet()
	a, _ := ks.Active()
	b, _ := ks.Pending()

	h.at(30 * time.Minute)
	if plan := h.tick(); !plan.Idle() || !plan.NextCheck.Equal(t0.Add(time.Hour)) {
		t.Fatalf("tick before due: %+v", plan)
	}
	if v := h.keySet().Version; v != ks.Version {
		t.Fatalf("an idle tick wrote (version %d -> %d)", ks.Version, v)
	}
	tokA, err := h.sg.Sign("default", nil, 0) // valid until 0:45
	if err != nil {
		t.Fatal(err)
	}

	h.at(time.Hour)
	plan := h.tick()
	if !plan.Rotate {
		t.Fatalf("tick at the due time did not rotate: %+v", plan)
	}
	ks = h.keySet()
	if stateOf(ks) != "retired,active,pending" {
		t.Fatalf("after rotation: %s", stateOf(ks))
	}
	if act, _ := ks.Active(); act.ID != b.ID {
		t.Fatalf("active %s, want the old pending %s", act.ID, b.ID)
	}
	c, _ := ks.Pending()
	if tok, _ := h.sg.Sign("default", nil, 0); tok.KID != b.ID {
		t.Fatalf("signer signs with %s after rotation", tok.KID)
	}
	if pub := h.published(); !pub[a.ID] || !pub[b.ID] || !pub[c.ID] {
		t.Fatalf("published after rotation: %v", pub)
	}
	if !plan.NextCheck.Equal(t0.Add(time.Hour + 21*time.Minute)) {
		t.Fatalf("next check %v, want the end of A's grace", plan.NextCheck)
	}
	if again := h.tick(); !again.Idle() {
		t.Fatalf("second tick at the same time: %+v", again)
	}

	// A's grace: retired_at + token_ttl + jwks_max_age + leeway = 1:21.
	h.at(time.Hour + 21*time.Minute - time.Second)
	if plan := h.tick(); !plan.Idle() || !h.published()[a.ID] {
		t.Fatalf("A destroyed before its grace ended: %+v", plan)
	}
	if _, err := h.sg.Verify("default", tokA.Token, signer.Expect{}); err == nil {
		t.Fatal("token A verified after exp + leeway") // 0:45 + 1m leeway < 1:21
	}
	h.at(time.Hour + 21*time.Minute)
	if plan := h.tick(); len(plan.Destroy) != 1 || plan.Destroy[0] != a.ID {
		t.Fatalf("A not destroyed at the end of its grace: %+v", plan)
	}
	if ks := h.keySet(); stateOf(ks) != "active,pending" || h.published()[a.ID] {
		t.Fatalf("after destruction: %s", stateOf(ks))
	}
	if !strings.Contains(h.logs.String(), "destroyed key") {
		t.Fatal("destruction not logged")
	}
}

func TestDueRotationWaitsForYoungPendingKey(t *testing.T) {
	h := newHarness(t, hourly(), "")
	// A forced rotation at 0:58 makes a pending key that is two minutes old
	// at the 1:00 tick.
	h.at(58 * time.Minute)
	if _, err := h.m.Rotate(context.Background(), "default", true); err != nil {
		t.Fatal(err)
	}
	young, _ := h.keySet().Pending()

	h.at(time.Hour)
	plan := h.tick()
	if plan.Rotate || !plan.WaitUntil.Equal(t0.Add(63*time.Minute)) || !plan.NextCheck.Equal(plan.WaitUntil) {
		t.Fatalf("tick with a young pending key: %+v", plan)
	}
	if !strings.Contains(h.logs.String(), "rotation is due but waits") {
		t.Fatal("the wait was not logged")
	}
	if next, _ := h.m.NextRotation("default"); !next.Equal(t0.Add(63 * time.Minute)) {
		t.Fatalf("NextRotation = %v", next)
	}
	h.at(63*time.Minute - time.Second)
	if plan := h.tick(); plan.Rotate {
		t.Fatal("rotated a second early")
	}
	h.at(63 * time.Minute)
	if plan := h.tick(); !plan.Rotate {
		t.Fatalf("did not rotate once the pending key was old enough: %+v", plan)
	}
	if act, _ := h.keySet().Active(); act.ID != young.ID {
		t.Fatalf("active %s, want %s", act.ID, young.ID)
	}
	// The schedule goes on from the actual rotation: next at 2:00.
	if next, _ := h.m.NextRotation("default"); !next.Equal(t0.Add(2 * time.Hour)) {
		t.Fatalf("next rotation %v", next)
	}
}

func TestRevokedPendingKeyDelaysRotation(t *testing.T) {
	h := newHarness(t, hourly(), "")
	pending, _ := h.keySet().Pending()
	h.at(59 * time.Minute)
	if _, err := h.m.Revoke(context.Background(), "default", pending.ID); err != nil {
		t.Fatal(err)
	}
	h.at(time.Hour)
	if plan := h.tick(); plan.Rotate || !plan.WaitUntil.Equal(t0.Add(64*time.Minute)) {
		t.Fatalf("plan after revoking the pending key: %+v", plan)
	}
	// The revoked key is destroyed on the retired keys' clock.
	h.at(59*time.Minute + 21*time.Minute)
	plan := h.tick()
	if len(plan.Destroy) != 1 || plan.Destroy[0] != pending.ID {
		t.Fatalf("revoked key not destroyed after its grace: %+v", plan)
	}
}

func TestMissedTicksAreMadeUpOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyd.db")
	h := newHarness(t, hourly(), path)
	before := h.keySet()
	// keyd was down from 0:10 to 5:30: five ticks missed.
	h.at(5*time.Hour + 30*time.Minute)
	h.restart()
	plan := h.tick()
	if !plan.Rotate {
		t.Fatalf("missed tick not made up: %+v", plan)
	}
	after := h.keySet()
	if len(after.Keys) != len(before.Keys)+1 {
		t.Fatalf("%d keys after catching up, want one rotation (%d)", len(after.Keys), len(before.Keys)+1)
	}
	// Next: the retired key's destruction at 5:51, then the 6:00 rotation.
	if again := h.tick(); again.Rotate || !again.DueAt.Equal(t0.Add(6*time.Hour)) || !again.NextCheck.Equal(t0.Add(5*time.Hour+51*time.Minute)) {
		t.Fatalf("second tick after catching up: %+v", again)
	}
}

func TestDecideIsPure(t *testing.T) {
	p := hourly()
	sched, err := rotation.ParseSchedule(p.Rotation)
	if err != nil {
		t.Fatal(err)
	}
	ks := keystoretest.KeySet(t, "default", keystore.ES256)
	snapshot := ks.Clone()
	now := ks.RotatedAt.Add(2 * time.Hour)
	first := rotation.Decide(ks, p, sched, now)
	second := rotation.Decide(ks, p, sched, now)
	if !first.Rotate || first.DueAt != second.DueAt || first.Rotate != second.Rotate {
		t.Fatalf("Decide differs between calls: %+v %+v", first, second)
	}
	keystoretest.RequireSameKeys(t, ks, snapshot)
}

func TestScheduleParsing(t *testing.T) {
	for spec, gap := range map[string]time.Duration{
		"@daily":        24 * time.Hour,
		"@every 90m":    90 * time.Minute,
		"*/5 * * * * *": 5 * time.Second, // optional seconds field
		"0 3 * * 1":     7 * 24 * time.Hour,
		"0 0,12 * * *":  12 * time.Hour,
	} {
		s, err := rotation.ParseSchedule(spec)
		if err != nil {
			t.Errorf("%s: %v", spec, err)
			continue
		}
		if got := rotation.MinGap(s); got != gap {
			t.Errorf("MinGap(%s) = %v, want %v", spec, got, gap)
		}
	}
	for _, bad := range []string{"", "every day", "61 * * * *", "@yearlyish"} {
		if _, err := rotation.ParseSchedule(bad); err == nil {
			t.Errorf("ParseSchedule(%q) accepted", bad)
		}
	}
}

func TestRunLoopTicksWhenWoken(t *testing.T) {
	// The loop sleeps through After; this After fires at once, moving the
	// clock to the time the loop asked to wake at, and stops the loop after
	// a number of wake-ups.
	h := newHarness(t, hourly(), "")
	var cancel context.CancelFunc
	wakes, limit := 0, 0
	m := rotation.NewManager(rotation.Options{
		Store: h.store, Policies: []keystore.Policy{h.p}, Generator: keystoretest.FastGenerator, Now: h.clock.now,
		Logger: slog.New(slog.DiscardHandler),
		After: func(d time.Duration) <-chan time.Time {
			if d > rotation.MaxSleep {
				t.Errorf("loop sleeps %v, more than MaxSleep", d)
			}
			wakes++
			if wakes >= limit {
				cancel()
			}
			h.clock.t = h.clock.t.Add(d)
			ch := make(chan time.Time, 1)
			ch <- h.clock.t
			return ch
		},
	})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	run := func(n int) {
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		defer cancel()
		wakes, limit = 0, n
		m.Run(ctx)
		h.tick() // the tick the cancelled loop may have skipped
	}

	run(30) // at most 30 minutes: nothing due yet
	if got := len(h.keySet().Keys); got != 2 {
		t.Fatalf("rotated before the first due time (clock %v, %d keys)", h.clock.t.Sub(t0), got)
	}
	run(400)
	ks := h.keySet()
	rotations := 0
	for _, k := range ks.Keys {
		if k.ActivatedAt.After(t0) {
			rotations++
		}
	}
	hours := int(h.clock.t.Sub(t0) / time.Hour)
	if hours < 3 {
		t.Fatalf("clock only reached %v", h.clock.t.Sub(t0))
	}
	// Retired keys are destroyed after their grace, so count the last
	// hour's: the active key must have been activated at the last full hour.
	active, _ := ks.Active()
	if want := t0.Add(time.Duration(hours) * time.Hour); !active.ActivatedAt.Equal(want) {
		t.Fatalf("clock at %v: active key activated at %v, want %v", h.clock.t.Sub(t0), active.ActivatedAt.Sub(t0), want.Sub(t0))
	}
	if rotations > 2 {
		t.Fatalf("%d keys activated after start still kept; retired keys outlive their grace", rotations)
	}
	if err := ks.Check(); err != nil {
		t.Fatal(err)
	}
	for _, k := range ks.Keys {
		if k.State == keystore.StateRetired && !h.clock.t.Before(k.RetiredAt.Add(h.p.Grace())) {
			t.Fatalf("retired key %s outlived its grace", k.ID)
		}
	}
}
