package rotation

import (
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// Gate says when the pending key kid of keyset may start signing as far as
// something beside the key set is concerned (the publishing targets, which
// must have held it for their readers' cache time): gated false when
// nothing holds it back; readyAt zero while that cannot be known yet (a
// target does not hold the key); why for the log, status and errors.
type Gate func(keyset, kid string, now time.Time) (readyAt time.Time, gated bool, why string)

// gateRecheck is how soon a rotation held back by a target that does not
// hold the key yet is looked at again.
const gateRecheck = 5 * time.Second

// gated holds plan's rotation back until the gate lets the pending key
// sign: the current key keeps signing meanwhile. A pure function of its
// inputs, as Decide.
func (m *Manager) gated(plan Plan, ks *keystore.KeySet, now time.Time) Plan {
	pending, ok := ks.Pending()
	if !plan.Rotate || !ok {
		m.waitingFor.Delete(ks.Name)
		return plan
	}
	until, why, held := m.gateHolds(ks.Name, pending.ID, now)
	if !held {
		m.waitingFor.Delete(ks.Name)
		return plan
	}
	plan.Rotate, plan.WaitUntil, plan.WaitingFor, plan.NextCheck = false, until, why, until
	m.waitingFor.Store(ks.Name, why)
	return plan
}

// gateAllows refuses a manual rotation the gate holds back (--force goes
// past it).
func (m *Manager) gateAllows(name, kid string, now time.Time) error {
	if until, why, held := m.gateHolds(name, kid, now); held {
		return &TooEarlyError{KeySet: name, KID: kid, SafeAt: until, Why: why}
	}
	return nil
}

// gateHolds says whether the gate holds pending key kid of name back at
// now, until when (gateRecheck from now while that cannot be known yet)
// and why.
func (m *Manager) gateHolds(name, kid string, now time.Time) (until time.Time, why string, held bool) {
	if m.pubGate == nil {
		return time.Time{}, "", false
	}
	readyAt, gated, why := m.pubGate(name, kid, now)
	if !gated || (!readyAt.IsZero() && !now.Before(readyAt)) {
		return time.Time{}, "", false
	}
	if readyAt.IsZero() {
		readyAt = now.Add(gateRecheck)
	}
	return readyAt, why, true
}

// WaitingFor says what a key set's due rotation waits for besides
// jwks_max_age ("" when nothing), for status.
func (m *Manager) WaitingFor(name string) string {
	v, _ := m.waitingFor.Load(name)
	s, _ := v.(string)
	return s
}
