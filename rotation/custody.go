package rotation

import (
	"context"
	"errors"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// newKey makes a key set's next key: in its custody when it has one (a
// call to Transit or the HSM), else from the generator.
func (m *Manager) newKey(ctx context.Context, p keystore.Policy, now time.Time) (keystore.Key, error) {
	if p.Custody == nil {
		return keystore.Generate(m.gen, p.Algorithm, p.RSABits, now)
	}
	ref, pub, err := p.Custody.Create(ctx, p.Name, p.Algorithm, p.RSABits)
	if err != nil {
		return keystore.Key{}, err
	}
	k, err := keystore.NewCustodyKey(p.Algorithm, p.Custody.Name(), ref, pub, now)
	if err != nil {
		m.destroy(ctx, p, []keystore.Key{{ID: "(new)", Custody: p.Custody.Name(), Material: keystore.Material(ref)}})
	}
	return k, err
}

// destroy removes from their custody the objects of keys that left the
// store (their grace ended), were revoked, or were made for a write that
// did not happen. A failure is logged, not returned: the object is an
// orphan then, its key gone from keyd.
func (m *Manager) destroy(ctx context.Context, p keystore.Policy, keys []keystore.Key) {
	for _, k := range keys {
		if !k.InCustody() || p.Custody == nil || k.Custody != p.Custody.Name() {
			continue
		}
		if err := p.Custody.Destroy(ctx, k.Ref()); err != nil {
			m.log.Error("could not destroy a key in its custody; it is an orphan there", "keyset", p.Name, "kid", k.ID, "custody", k.Custody, "ref", k.Ref(), "err", err)
			continue
		}
		m.log.Info("destroyed key in its custody", "keyset", p.Name, "kid", k.ID, "custody", k.Custody)
	}
}

// gone returns the keys of before that are not in after (destroyed by a
// write), or are revoked there and were not before.
func gone(before, after *keystore.KeySet) []keystore.Key {
	var out []keystore.Key
	if before == nil || after == nil {
		return nil
	}
	for _, k := range before.Keys {
		now, ok := after.Key(k.ID)
		if !ok || (now.State == keystore.StateRevoked && k.State != keystore.StateRevoked) {
			out = append(out, k)
		}
	}
	return out
}

// notWritten reports whether a failed write certainly wrote nothing (the
// transition was refused, or lost a compare-and-swap): the keys made for
// it may be destroyed. A store that did not answer may have written: its
// keys are kept in their custody rather than risk a key set that points
// at a destroyed key.
func notWritten(err error) bool {
	return err != nil && !errors.Is(err, keystore.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}
