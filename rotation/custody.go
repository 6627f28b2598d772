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
// did not happen. Only references the custody owns for the key set are
// destroyed: a key someone wrote into the store naming another key set's
// or application's object destroys nothing (logged). A failure is logged,
// not returned: the object is an orphan then, its key gone from keyd.
func (m *Manager) destroy(ctx context.Context, p keystore.Policy, keys []keystore.Key) {
	for _, k := range keys {
		if !k.InCustody() || p.Custody == nil || k.Custody != p.Custody.Name() {
			continue
		}
		if !p.Custody.Owns(p.Name, k.Ref()) {
			m.log.Error("refused to destroy a custody object that is not one keyd makes for the key set; the stored key naming it was not keyd's", "keyset", p.Name, "kid", k.ID, "custody", k.Custody, "ref", k.Ref())
			m.refused(p.Name)
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
// write), or are revoked there and were not before; a key whose custody
// reference another key of after still uses (not revoked) is kept.
func gone(before, after *keystore.KeySet) []keystore.Key {
	var out []keystore.Key
	if before == nil || after == nil {
		return nil
	}
	inUse := map[string]string{} // custody ref -> kid
	for _, k := range after.Keys {
		if k.InCustody() && k.State != keystore.StateRevoked {
			inUse[k.Custody+"\x00"+k.Ref()] = k.ID
		}
	}
	for _, k := range before.Keys {
		now, ok := after.Key(k.ID)
		if ok && (now.State != keystore.StateRevoked || k.State == keystore.StateRevoked) {
			continue
		}
		if kid, used := inUse[k.Custody+"\x00"+k.Ref()]; k.InCustody() && used && kid != k.ID {
			continue
		}
		out = append(out, k)
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

// OrphanAge is how old a custody object no key set refers to must be
// before Start deletes it: younger, it may be a key another replica has
// just made and is about to store.
const OrphanAge = 10 * time.Minute

// sweep finds the objects a key set's custody holds for it (exactly its
// own names: see Custody.Owns) that no stored key refers to (made, then
// never stored: keyd died in between, or the store did not answer), and
// deletes those older than OrphanAge; it logs the others. known holds the
// references of every stored key of every key set: an object some key
// still names is never deleted. A custody that cannot list is left alone.
func (m *Manager) sweep(ctx context.Context, p keystore.Policy, known map[string]bool) {
	l, ok := p.Custody.(keystore.CustodyLister)
	if !ok {
		return
	}
	objs, err := l.Objects(ctx, p.Name)
	if err != nil {
		m.log.Warn("could not look for orphaned keys in the key set's custody", "keyset", p.Name, "err", err)
		return
	}
	for _, o := range objs {
		if known[o.Ref] || !p.Custody.Owns(p.Name, o.Ref) {
			continue
		}
		if o.CreatedAt.IsZero() || m.now().Sub(o.CreatedAt) < OrphanAge {
			m.log.Warn("the key set's custody holds a key it does not refer to; left for now (it may be being stored)", "keyset", p.Name, "ref", o.Ref, "created_at", o.CreatedAt)
			continue
		}
		if err := p.Custody.Destroy(ctx, o.Ref); err != nil {
			m.log.Error("could not delete an orphaned key in the key set's custody", "keyset", p.Name, "ref", o.Ref, "err", err)
			continue
		}
		m.log.Warn("deleted an orphaned key from the key set's custody (made, never stored)", "keyset", p.Name, "ref", o.Ref, "created_at", o.CreatedAt)
	}
}

// custodyRefs are the custody references of every key of sets.
func custodyRefs(sets []*keystore.KeySet) map[string]bool {
	known := map[string]bool{}
	for _, ks := range sets {
		for _, k := range ks.Keys {
			if k.InCustody() {
				known[k.Ref()] = true
			}
		}
	}
	return known
}

// admit checks each key set against its policy's custody before anything
// loads it (keystore.KeySet.CheckCustody): a key set holding a foreign key
// is not loaded, signs and publishes nothing new, and is logged (once per
// stored version) and counted.
func (m *Manager) admit(ps []keystore.Policy, sets []*keystore.KeySet) error {
	for i, ks := range sets {
		err := ks.CheckCustody(ps[i].Custody)
		if err == nil {
			continue
		}
		m.refused(ks.Name)
		m.refusedMu.Lock()
		first := m.refusedAt[ks.Name] != ks.Version || ks.Version == 0
		m.refusedAt[ks.Name] = ks.Version
		m.refusedMu.Unlock()
		if first {
			m.log.Error("refused a stored key set: it holds a key that is not of the key set's custody (written by someone who can write the store but not the custody?); the version loaded before stays in use", "keyset", ks.Name, "version", ks.Version, "err", err)
		}
		return err
	}
	return nil
}

func (m *Manager) refused(keyset string) {
	if m.onRefused != nil {
		m.onRefused(keyset)
	}
}
