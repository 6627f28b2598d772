package keystore

import (
	"fmt"
	"time"
)

// The lifecycle transitions. Each takes a key set and returns a new one; the
// input is never modified, nothing is read or written, and new keys come in
// as arguments, so the same transition can be retried on fresh state.

// NewKeySet makes a key set whose first key is active from now and whose
// second is pending (already published, signing after the next rotation).
func NewKeySet(name string, alg Algorithm, first, next Key, now time.Time) (*KeySet, error) {
	now = now.UTC()
	ks := &KeySet{Name: name, Algorithm: alg, RotatedAt: now}
	if err := ks.addPending(first); err != nil {
		return nil, err
	}
	ks.Keys[0].State = StateActive
	ks.Keys[0].ActivatedAt = now
	if err := ks.addPending(next); err != nil {
		return nil, err
	}
	return ks, ks.Check()
}

// Rotate makes the pending key active, retires the active key and adds next
// as the new pending key. RotatedAt becomes now.
func Rotate(ks *KeySet, next Key, now time.Time) (*KeySet, error) {
	now = now.UTC()
	out := ks.Clone()
	pending := out.indexOf(StatePending)
	if pending < 0 {
		return nil, fmt.Errorf("%w: key set %s has no pending key to activate", ErrInvalidTransition, ks.Name)
	}
	if active := out.indexOf(StateActive); active >= 0 {
		out.Keys[active].State = StateRetired
		out.Keys[active].RetiredAt = now
	}
	out.Keys[pending].State = StateActive
	out.Keys[pending].ActivatedAt = now
	if err := out.addPending(next); err != nil {
		return nil, err
	}
	out.RotatedAt = now
	return out, out.Check()
}

// Revoke withdraws the key kid at once. Revoking the active key promotes the
// pending key and adds next as the new pending key; revoking the pending key
// adds next in its place. next is unused otherwise, and usedNext says which.
// Revoking a revoked key is ErrInvalidTransition; an unknown kid is
// ErrKeyNotFound.
func Revoke(ks *KeySet, kid string, next Key, now time.Time) (out *KeySet, usedNext bool, err error) {
	now = now.UTC()
	out = ks.Clone()
	i := -1
	for j, k := range out.Keys {
		if k.ID == kid {
			i = j
		}
	}
	if i < 0 {
		return nil, false, fmt.Errorf("%w: %s has no key %q", ErrKeyNotFound, ks.Name, kid)
	}
	was := out.Keys[i].State
	switch was {
	case StateRevoked:
		return nil, false, fmt.Errorf("%w: key %s of %s is already revoked", ErrInvalidTransition, kid, ks.Name)
	case StateActive:
		pending := out.indexOf(StatePending)
		if pending < 0 {
			return nil, false, fmt.Errorf("%w: key set %s has no pending key to take over", ErrInvalidTransition, ks.Name)
		}
		out.Keys[pending].State = StateActive
		out.Keys[pending].ActivatedAt = now
	}
	out.Keys[i].State = StateRevoked
	out.Keys[i].RevokedAt = now
	if was == StateActive || was == StatePending {
		if err := out.addPending(next); err != nil {
			return nil, false, err
		}
		usedNext = true
	}
	return out, usedNext, out.Check()
}

// Prune destroys retired keys whose retirement and revoked keys whose
// revocation is at least grace before now, and returns the new key set and
// the kids it removed. With nothing to remove it returns ks itself.
func Prune(ks *KeySet, now time.Time, grace time.Duration) (*KeySet, []string) {
	var removed []string
	var kept []Key
	for _, k := range ks.Keys {
		if expired(k, now, grace) {
			removed = append(removed, k.ID)
			continue
		}
		kept = append(kept, k)
	}
	if len(removed) == 0 {
		return ks, nil
	}
	out := ks.Clone()
	out.Keys = kept
	return out, removed
}

// DestroyAt is when a retired or revoked key is due to be destroyed given
// the grace period; zero for keys in other states.
func DestroyAt(k Key, grace time.Duration) time.Time {
	switch k.State {
	case StateRetired:
		if !k.VerifyUntil.IsZero() {
			return k.VerifyUntil
		}
		return k.RetiredAt.Add(grace)
	case StateRevoked:
		return k.RevokedAt.Add(grace)
	}
	return time.Time{}
}

func expired(k Key, now time.Time, grace time.Duration) bool {
	at := DestroyAt(k, grace)
	return !at.IsZero() && !now.Before(at)
}

func (ks *KeySet) indexOf(s State) int {
	for i, k := range ks.Keys {
		if k.State == s {
			return i
		}
	}
	return -1
}

// addPending appends a freshly made key as the pending key, checking that
// it fits the set.
func (ks *KeySet) addPending(k Key) error {
	switch {
	case k.ID == "" || len(k.Material) == 0:
		return fmt.Errorf("%w: new key for %s is empty", ErrInvalidTransition, ks.Name)
	case k.Algorithm != ks.Algorithm:
		return fmt.Errorf("%w: new %s key for %s key set %s", ErrInvalidTransition, k.Algorithm, ks.Algorithm, ks.Name)
	case k.State != StatePending:
		return fmt.Errorf("%w: new key for %s is %s, want pending", ErrInvalidTransition, ks.Name, k.State)
	}
	if _, dup := ks.Key(k.ID); dup {
		return fmt.Errorf("%w: key %s is already in %s", ErrInvalidTransition, k.ID, ks.Name)
	}
	if ks.indexOf(StatePending) >= 0 {
		return fmt.Errorf("%w: key set %s already has a pending key", ErrInvalidTransition, ks.Name)
	}
	ks.Keys = append(ks.Keys, k)
	return nil
}

// Import adds keys made outside keyd (see package keyimport) to the key set:
//   - as StateRetired: they verify (and are published, if public) but never
//     sign, until their VerifyUntil, or their retirement (now) plus the
//     grace when it is zero; any number of keys;
//   - as StatePending: one key with its private half replaces the pending
//     key (made by keyd, published, never used) and signs after the next
//     rotation, which the usual rule holds back until it has been published
//     for jwks_max_age. Making it active at once is this plus a forced
//     Rotate, which the caller does.
//
// Each key's kid must be new to the key set (ErrKeyExists); what does not
// fit is ErrInvalidImport. It returns the key set and the kid of the pending
// key it replaced, if any.
func Import(ks *KeySet, keys []Key, state State, now time.Time) (*KeySet, string, error) {
	now = now.UTC()
	out := ks.Clone()
	if len(keys) == 0 {
		return nil, "", fmt.Errorf("%w: no key given", ErrInvalidImport)
	}
	if state == StatePending && len(keys) != 1 {
		return nil, "", fmt.Errorf("%w: only one key can be made pending, got %d", ErrInvalidImport, len(keys))
	}
	seen := map[string]bool{}
	for _, k := range keys {
		switch {
		case k.ID == "" || len(k.Material) == 0:
			return nil, "", fmt.Errorf("%w: a key has no kid or no material", ErrInvalidImport)
		case k.Algorithm != ks.Algorithm:
			return nil, "", fmt.Errorf("%w: key %s is %s, the key set signs %s", ErrInvalidImport, k.ID, k.Algorithm, ks.Algorithm)
		case seen[k.ID]:
			return nil, "", fmt.Errorf("%w: kid %q is given twice", ErrInvalidImport, k.ID)
		}
		if _, dup := out.Key(k.ID); dup {
			return nil, "", fmt.Errorf("%w: %s already has a key %q", ErrKeyExists, ks.Name, k.ID)
		}
		seen[k.ID] = true
		k.Imported, k.CreatedAt, k.ActivatedAt, k.RevokedAt = true, now, time.Time{}, time.Time{}
		switch state {
		case StateRetired:
			if !k.VerifyUntil.IsZero() && !k.VerifyUntil.After(now) {
				return nil, "", fmt.Errorf("%w: verify_until %s has passed", ErrInvalidImport, k.VerifyUntil.UTC().Format(time.RFC3339))
			}
			k.State, k.RetiredAt = StateRetired, now
		case StatePending:
			if k.PublicOnly {
				return nil, "", fmt.Errorf("%w: key %s has no private half: a public key can only verify (state retired)", ErrInvalidImport, k.ID)
			}
			if !k.VerifyUntil.IsZero() {
				return nil, "", fmt.Errorf("%w: verify_until is for verify-only keys; a signing key retires at a rotation", ErrInvalidImport)
			}
			if ks.Algorithm.Symmetric() && len(k.Material) < ks.Algorithm.SecretSize() {
				return nil, "", fmt.Errorf("%w: the secret has %d bytes, less than the %d %s needs to sign (RFC 7518): import it as retired (verify-only)", ErrInvalidImport, len(k.Material), ks.Algorithm.SecretSize(), ks.Algorithm)
			}
			k.State, k.RetiredAt = StatePending, time.Time{}
		default:
			return nil, "", fmt.Errorf("%w: state %q (want retired or pending)", ErrInvalidImport, state)
		}
		out.Keys = append(out.Keys, k)
	}
	var replaced string
	if state == StatePending {
		if i := ks.indexOf(StatePending); i >= 0 {
			replaced = ks.Keys[i].ID
			out.Keys = append(out.Keys[:i:i], out.Keys[i+1:]...)
		}
	}
	return out, replaced, out.Check()
}
