package rotation

import (
	"context"
	"fmt"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// transition applies a manual transition to the key set called name: with
// this process's transitions serialised, it makes a fresh key (the new
// pending key, if the transition needs one) before the write, then applies
// apply to the stored state inside keystore.Update, and publishes the
// result. Only the key set's own lock is held meanwhile.
func (m *Manager) transition(ctx context.Context, name string, apply func(ks *keystore.KeySet, next keystore.Key, now time.Time) (*keystore.KeySet, error)) (*keystore.KeySet, keystore.Key, error) {
	return m.transitionWith(ctx, name, true, apply)
}

// transitionWith is transition; withNext false makes no fresh key (next is
// the zero Key), for transitions that never add one.
func (m *Manager) transitionWith(ctx context.Context, name string, withNext bool, apply func(ks *keystore.KeySet, next keystore.Key, now time.Time) (*keystore.KeySet, error)) (*keystore.KeySet, keystore.Key, error) {
	p, ok := m.Policy(name)
	if !ok {
		return nil, keystore.Key{}, fmt.Errorf("%w: %q", ErrUnknownKeySet, name)
	}
	// The new key is made before the lock: a custody's is a remote call.
	var next keystore.Key
	if withNext {
		var err error
		if next, err = m.newKey(ctx, p, m.now()); err != nil {
			return nil, keystore.Key{}, m.note(err)
		}
	}
	defer m.lockSet(name)()
	var certified []string
	var before *keystore.KeySet
	ks, err := keystore.Update(ctx, m.store, name, func(ks *keystore.KeySet) (*keystore.KeySet, error) {
		now := m.now()
		before = ks
		if withNext {
			next.CreatedAt = now.UTC()
		}
		out, err := apply(ks, next, now)
		if err != nil {
			return nil, err
		}
		out, certified, err = certify(out, p, now)
		return out, err
	})
	if m.note(err) != nil {
		if notWritten(err) {
			m.destroy(ctx, p, []keystore.Key{next}) // made for a write that did not happen
		}
		return nil, keystore.Key{}, err
	}
	if _, used := ks.Key(next.ID); withNext && !used {
		m.destroy(ctx, p, []keystore.Key{next})
	}
	m.destroy(ctx, p, gone(before, ks))
	m.certified(ctx, name, certified)
	return ks, next, m.publish(ks)
}

// Rotate makes the pending key active, retires the active key and
// publishes a new pending key. Unless force is set, it refuses with a
// *TooEarlyError while the pending key has been published for less than
// jwks_max_age (plus the publish delay).
func (m *Manager) Rotate(ctx context.Context, name string, force bool) (*keystore.KeySet, error) {
	ks, next, err := m.transition(ctx, name, func(ks *keystore.KeySet, next keystore.Key, now time.Time) (*keystore.KeySet, error) {
		if pending, ok := ks.Pending(); ok && !force {
			p, _ := m.Policy(name)
			if safeAt := pending.CreatedAt.Add(p.PublishedFor()); now.Before(safeAt) {
				return nil, &TooEarlyError{KeySet: name, KID: pending.ID, SafeAt: safeAt}
			}
			if err := m.gateAllows(name, pending.ID, now); err != nil {
				return nil, err
			}
		}
		return keystore.Rotate(ks, next, now)
	})
	if err != nil {
		return nil, err
	}
	active, _ := ks.Active()
	trigger := TriggerManual
	if force {
		trigger = TriggerForced
		m.log.Warn("forced rotation: the new active key may be missing from verifiers' cached JWKS", "keyset", name, "active_kid", active.ID, "pending_kid", next.ID)
	} else {
		m.log.Info("rotated key set", "keyset", name, "active_kid", active.ID, "pending_kid", next.ID)
	}
	m.emit(Event{Kind: EventRotated, KeySet: name, KID: active.ID, Pending: next.ID, Trigger: trigger, Actor: actorOf(ctx)})
	return ks, nil
}

// Revoke withdraws a key at once. Revoking the active key promotes the
// pending key; revoking the active or pending key publishes a new pending
// key.
func (m *Manager) Revoke(ctx context.Context, name, kid string) (*keystore.KeySet, error) {
	var was keystore.State
	ks, next, err := m.transition(ctx, name, func(ks *keystore.KeySet, next keystore.Key, now time.Time) (*keystore.KeySet, error) {
		k, _ := ks.Key(kid)
		was = k.State
		out, _, err := keystore.Revoke(ks, kid, next, now)
		return out, err
	})
	if err != nil {
		return nil, err
	}
	m.log.Warn("revoked key", "keyset", name, "kid", kid, "was", was)
	e := Event{Kind: EventRevoked, KeySet: name, KID: kid, Trigger: TriggerRevoke, Actor: actorOf(ctx)}
	if _, ok := ks.Key(next.ID); ok {
		e.Pending = next.ID
	}
	m.emit(e)
	return ks, nil
}
