package rotation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// MaxSleep bounds how long the scheduler sleeps between checks, so that a
// clock jump or a change made by another process is noticed within it.
const MaxSleep = time.Minute

// Backoff bounds for retrying a tick that failed (store unavailable).
const (
	minBackoff = time.Second
	maxBackoff = time.Minute
)

// Tick brings the key set called name up to date with its schedule: it
// rotates if a rotation is due and the pending key is old enough,
// destroys retired and revoked keys whose grace has ended, and renews
// certificates that are due, in one atomic write. A tick that finds
// nothing due writes nothing. It decides on the stored state, re-checked
// inside the compare-and-swap, so ticks from a restart or from several
// replicas never rotate twice. The new key is made before the write;
// signing goes on meanwhile. Keys that left the store, or were revoked,
// leave their custody after the write.
func (m *Manager) Tick(ctx context.Context, name string) (Plan, error) {
	defer m.lockSet(name)()
	conf := m.conf.Load() // Reconfigure may replace it meanwhile: the write checks
	p, ok := conf.policies[name]
	if !ok {
		return Plan{}, fmt.Errorf("%w: %q", ErrUnknownKeySet, name)
	}
	sched := conf.schedules[name]

	cur, err := m.store.Get(ctx, name)
	if m.note(err) != nil {
		return Plan{}, err
	}
	if err := m.publish(cur); err != nil { // pick up others' changes
		return Plan{}, err
	}
	plan := m.gated(Decide(cur, p, sched, m.now()), cur, m.now())
	if !plan.WaitUntil.IsZero() {
		m.logWait(name, cur, plan)
	}
	if plan.Idle() {
		return plan, nil
	}

	var next keystore.Key
	if plan.Rotate {
		if next, err = m.newKey(ctx, p, m.now()); err != nil {
			return plan, m.note(err)
		}
	}
	var applied Plan
	var before *keystore.KeySet
	ks, err := keystore.Update(ctx, m.store, name, func(ks *keystore.KeySet) (*keystore.KeySet, error) {
		if m.conf.Load() != conf {
			return nil, errSettingsChanged // decided on settings a reload replaced
		}
		now := m.now()
		before = ks
		applied = m.gated(Decide(ks, p, sched, now), ks, now)
		if applied.Rotate && next.ID == "" { // became due meanwhile: next tick
			applied.Rotate = false
		}
		if applied.Idle() {
			return nil, keystore.ErrNoChange
		}
		out := ks
		if applied.Rotate {
			next.CreatedAt = now.UTC()
			rotated, err := keystore.Rotate(out, next, now)
			if err != nil {
				return nil, err
			}
			out = rotated
		}
		out, _ = keystore.Prune(out, now, p.Grace())
		out.Revocations = out.Revocations.InForce(now, p.Leeway) // writing anyway: drop what no longer matters
		out, applied.Certify, err = certify(out, p, now)
		return out, err
	})
	if errors.Is(err, errSettingsChanged) {
		m.destroy(ctx, p, []keystore.Key{next})
		return plan, nil // the next tick decides anew (Reconfigure wakes it)
	}
	if m.note(err) != nil {
		if notWritten(err) {
			m.destroy(ctx, p, []keystore.Key{next})
		}
		return plan, err
	}
	if !applied.Rotate {
		m.destroy(ctx, p, []keystore.Key{next}) // made for a rotation that did not happen
	}
	if applied.Idle() {
		return applied, m.publish(ks)
	}
	m.destroy(ctx, p, gone(before, ks))
	if applied.Rotate {
		active, _ := ks.Active()
		m.log.Info("scheduled rotation", "keyset", name, "active_kid", active.ID, "pending_kid", next.ID, "due_at", applied.DueAt)
		m.emit(Event{Kind: EventRotated, KeySet: name, KID: active.ID, Pending: next.ID, Trigger: TriggerScheduled, Actor: actorOf(ctx)})
	}
	for _, kid := range applied.Destroy {
		m.log.Info("destroyed key after its grace period", "keyset", name, "kid", kid)
		m.emit(Event{Kind: EventDestroyed, KeySet: name, KID: kid, Actor: actorOf(ctx)})
	}
	m.certified(ctx, name, applied.Certify)
	return applied, m.publish(ks)
}

// errSettingsChanged ends a tick whose settings a reload replaced while it
// ran: nothing is written.
var errSettingsChanged = errors.New("the key set's settings changed during the tick")

// logWait says once per pending key that a due rotation waits for it.
func (m *Manager) logWait(name string, ks *keystore.KeySet, plan Plan) {
	pending, _ := ks.Pending()
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	if m.waitLogged[name] == pending.ID {
		return
	}
	m.waitLogged[name] = pending.ID
	if plan.WaitingFor != "" {
		m.log.Warn("rotation is due but waits for "+plan.WaitingFor,
			"keyset", name, "pending_kid", pending.ID, "due_at", plan.DueAt, "rotates_at", plan.WaitUntil)
		return
	}
	m.log.Warn("rotation is due but waits: the pending key has been published for less than jwks_max_age",
		"keyset", name, "pending_kid", pending.ID, "due_at", plan.DueAt, "rotates_at", plan.WaitUntil)
}

// Run ticks every configured key set at start (making up, once, a rotation
// missed while keyd was down) and then whenever its plan says something
// becomes due, until ctx is cancelled. Failed ticks are retried with
// exponential backoff and logged. It returns when every loop has stopped.
// Key sets added by Reconfigure get a loop of their own when they appear.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	looping := map[string]bool{}
	for {
		wake := *m.wake.Load()
		for _, name := range m.Names() {
			if !looping[name] {
				looping[name] = true
				wg.Go(func() { m.loop(ctx, name) })
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		}
	}
}

func (m *Manager) loop(ctx context.Context, name string) {
	backoff := time.Duration(0)
	for {
		plan, err := m.Tick(ctx, name)
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			wait = backoff
			m.log.Error("rotation check failed; retrying", "keyset", name, "retry_in", wait, "err", err)
		default:
			backoff = 0
			wait = min(max(plan.NextCheck.Sub(m.now()), 0), MaxSleep)
			if plan.NextCheck.IsZero() {
				wait = MaxSleep
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-m.after(wait):
		case <-*m.wake.Load(): // settings changed: decide again
		}
	}
}

// NextRotation is when the key set's next scheduled rotation will happen,
// from memory: the due time, or later if the pending key is still too
// young then.
func (m *Manager) NextRotation(name string) (time.Time, error) {
	ks, p, err := m.KeySet(name)
	if err != nil {
		return time.Time{}, err
	}
	sched, ok := m.conf.Load().schedules[name]
	if !ok {
		return time.Time{}, errors.New("manager not started")
	}
	due := sched.Next(ks.RotatedAt)
	if plan := Decide(ks, p, sched, due); !plan.WaitUntil.IsZero() {
		return plan.WaitUntil, nil
	}
	return due, nil
}
