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
	if !plan.Rotate || m.pubGate == nil {
		m.waitingFor.Delete(ks.Name)
		return plan
	}
	pending, ok := ks.Pending()
	if !ok {
		return plan
	}
	readyAt, gated, why := m.pubGate(ks.Name, pending.ID, now)
	if !gated || (!readyAt.IsZero() && !now.Before(readyAt)) {
		m.waitingFor.Delete(ks.Name)
		return plan
	}
	if readyAt.IsZero() {
		readyAt = now.Add(gateRecheck)
	}
	plan.Rotate, plan.WaitUntil, plan.WaitingFor, plan.NextCheck = false, readyAt, why, readyAt
	m.waitingFor.Store(ks.Name, why)
	return plan
}

// gateAllows refuses a manual rotation the gate holds back (--force goes
// past it).
func (m *Manager) gateAllows(name, kid string, now time.Time) error {
	if m.pubGate == nil {
		return nil
	}
	readyAt, gated, why := m.pubGate(name, kid, now)
	if !gated || (!readyAt.IsZero() && !now.Before(readyAt)) {
		return nil
	}
	if readyAt.IsZero() {
		readyAt = now.Add(gateRecheck)
	}
	return &TooEarlyError{KeySet: name, KID: kid, SafeAt: readyAt, Why: why}
}

// WaitingFor says what a key set's due rotation waits for besides
// jwks_max_age ("" when nothing), for status.
func (m *Manager) WaitingFor(name string) string {
	v, _ := m.waitingFor.Load(name)
	s, _ := v.(string)
	return s
}
