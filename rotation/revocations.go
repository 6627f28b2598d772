package rotation

import (
	"context"
	"fmt"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// Event kinds of token revocations.
const (
	EventTokenRevoked   EventKind = "token_revoked"   // one token, by jti
	EventSubjectRevoked EventKind = "subject_revoked" // every token of a subject issued until now
)

// RevokeToken revokes one token of the key set called name until it
// expires (exp). It is stored with the key set, reaches the other replicas
// as the key set does, and is dropped once exp + leeway has passed.
func (m *Manager) RevokeToken(ctx context.Context, name, jti string, exp time.Time, reason string) (*keystore.KeySet, error) {
	ks, err := m.revocation(ctx, name, func(ks *keystore.KeySet, p keystore.Policy, now time.Time) (*keystore.KeySet, error) {
		return keystore.RevokeToken(ks, keystore.TokenRevocation{JTI: jti, Expires: exp.UTC(), RevokedAt: now.UTC(), Reason: reason}, now, p.Leeway, p.MaxRevocations)
	})
	if err != nil {
		return nil, err
	}
	m.log.Warn("revoked token", "keyset", name, "jti", jti, "exp", exp.UTC(), "actor", actorOf(ctx))
	m.emit(Event{Kind: EventTokenRevoked, KeySet: name, JTI: jti, Reason: reason, Actor: actorOf(ctx)})
	return ks, nil
}

// RevokeSubject revokes every token of the key set called name whose sub
// is subject and whose iat is at or before now (iat has whole seconds, so
// a token signed in the same second is revoked too). Tokens signed later
// are valid. The entry is dropped once every token it covers has expired.
func (m *Manager) RevokeSubject(ctx context.Context, name, subject, reason string) (*keystore.KeySet, time.Time, error) {
	var before time.Time
	ks, err := m.revocation(ctx, name, func(ks *keystore.KeySet, p keystore.Policy, now time.Time) (*keystore.KeySet, error) {
		before = now.UTC().Truncate(time.Second)
		rev := keystore.SubjectRevocation{Subject: subject, Before: before, Until: before.Add(p.TokenTTL + p.Leeway + time.Second), RevokedAt: now.UTC(), Reason: reason}
		return keystore.RevokeSubject(ks, rev, now, p.Leeway, p.MaxRevocations)
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	m.log.Warn("revoked every token of a subject", "keyset", name, "issued_before", before, "actor", actorOf(ctx))
	m.emit(Event{Kind: EventSubjectRevoked, KeySet: name, Subject: subject, Reason: reason, Actor: actorOf(ctx)})
	return ks, before, nil
}

// revocation applies a revocation to the stored key set with
// compare-and-swap and publishes the result.
func (m *Manager) revocation(ctx context.Context, name string, apply func(*keystore.KeySet, keystore.Policy, time.Time) (*keystore.KeySet, error)) (*keystore.KeySet, error) {
	p, ok := m.Policy(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKeySet, name)
	}
	if p.MaxRevocations == 0 {
		p.MaxRevocations = keystore.DefaultMaxRevocations
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ks, err := keystore.Update(ctx, m.store, name, func(ks *keystore.KeySet) (*keystore.KeySet, error) {
		return apply(ks, p, m.now())
	})
	if m.note(err) != nil {
		return nil, err
	}
	return ks, m.publish(p, ks)
}

// Now is the manager's clock.
func (m *Manager) Now() time.Time { return m.now() }
