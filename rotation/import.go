package rotation

import (
	"context"
	"fmt"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// EventImported is a key that came from outside keyd.
const EventImported EventKind = "key_imported"

// Import adds keys made outside keyd (package keyimport) to the key set
// called name, as state:
//   - retired: verify-only (published if public) until each key's
//     VerifyUntil, or the usual grace;
//   - pending: the one key replaces the pending key and signs after the
//     next rotation, which waits, as always, until it has been published
//     for jwks_max_age;
//   - active: pending, then a rotation at once. Verifiers' cached JWKS do
//     not hold the key yet, so like Rotate it refuses with a
//     *TooEarlyError (nothing stored) unless force is set.
//
// Every imported key is an event (the audit trail records kid, state and
// actor, never material).
func (m *Manager) Import(ctx context.Context, name string, keys []keystore.Key, state keystore.State, force bool) (*keystore.KeySet, error) {
	p, ok := m.Policy(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKeySet, name)
	}
	if p.Custody != nil {
		for _, k := range keys {
			if !k.PublicOnly {
				return nil, fmt.Errorf("%w: key set %s keeps its private keys in the %s custody, not in keyd: import the public key (verify-only), or the private key into the custody itself", keystore.ErrInvalidImport, name, p.Custody.Name())
			}
		}
	}
	activate := state == keystore.StateActive
	if activate {
		if !force {
			kid := ""
			if len(keys) > 0 {
				kid = keys[0].ID
			}
			return nil, &TooEarlyError{KeySet: name, KID: kid, SafeAt: m.now().Add(p.PublishedFor())}
		}
		state = keystore.StatePending
	}
	var replaced string
	ks, next, err := m.transitionWith(ctx, name, activate, func(ks *keystore.KeySet, next keystore.Key, now time.Time) (*keystore.KeySet, error) {
		out, r, err := keystore.Import(ks, keys, state, now)
		if err != nil {
			return nil, err
		}
		replaced = r
		if activate {
			return keystore.Rotate(out, next, now)
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	how := string(state)
	if activate {
		how = "active"
		m.log.Warn("imported key signs at once: verifiers with a cached JWKS may reject its tokens until they refresh", "keyset", name, "kid", keys[0].ID)
		m.emit(Event{Kind: EventRotated, KeySet: name, KID: keys[0].ID, Pending: next.ID, Trigger: TriggerForced, Actor: actorOf(ctx)})
	}
	for _, k := range keys {
		stored, _ := ks.Key(k.ID)
		detail := fmt.Sprintf("state=%s alg=%s public_only=%v", how, stored.Algorithm, stored.PublicOnly)
		if !stored.VerifyUntil.IsZero() {
			detail += " verify_until=" + stored.VerifyUntil.UTC().Format(time.RFC3339)
		}
		m.log.Info("imported key", "keyset", name, "kid", k.ID, "state", how, "public_only", stored.PublicOnly, "actor", actorOf(ctx))
		m.emit(Event{Kind: EventImported, KeySet: name, KID: k.ID, Trigger: how, Actor: actorOf(ctx), Reason: detail})
	}
	if replaced != "" {
		m.log.Info("the imported key replaced the pending key", "keyset", name, "kid", replaced)
	}
	return ks, nil
}
