package rotation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

// Event kinds of token revocations.
const (
	EventTokenRevoked   EventKind = "token_revoked"   // one token, by jti
	EventSubjectRevoked EventKind = "subject_revoked" // every token of a subject issued until now
)

// errNoTokenState means the manager was built without Options.TokenState.
var errNoTokenState = errors.New("token revocation is not configured (no token state)")

// RevokeToken revokes one token of the key set called name until it
// expires (exp): one entry in the token state, in O(1) whatever the number
// in force, then in the index every verification checks. The entry leaves
// once exp + leeway has passed.
func (m *Manager) RevokeToken(ctx context.Context, name, jti string, exp time.Time, reason string) (tokenstate.Revocation, error) {
	p, ok := m.Policy(name)
	if !ok {
		return tokenstate.Revocation{}, fmt.Errorf("%w: %q", ErrUnknownKeySet, name)
	}
	now := m.now().UTC()
	stored, err := m.revoke(ctx, p, tokenstate.Revocation{KeySet: name, JTI: jti, Expires: exp.UTC().Add(p.Leeway), RevokedAt: now, Reason: reason})
	if err != nil {
		return tokenstate.Revocation{}, err
	}
	m.log.Warn("revoked token", "keyset", name, "jti", jti, "exp", exp.UTC(), "actor", actorOf(ctx))
	m.emit(Event{Kind: EventTokenRevoked, KeySet: name, JTI: jti, Reason: reason, Actor: actorOf(ctx)})
	return stored, nil
}

// RevokeSubject revokes every token of the key set called name whose sub
// is subject and whose iat is at or before now (iat has whole seconds, so
// a token signed in the same second is revoked too), and returns that
// cut-off. Tokens signed later are valid. The entry leaves once every
// token it covers has expired: token_ttl for keyd's own, and as long as
// the key set verifies imported keys' and legacy tokens
// (keystore.Policy.TokensEndBy).
func (m *Manager) RevokeSubject(ctx context.Context, name, subject, reason string) (time.Time, error) {
	ks, p, err := m.KeySet(name)
	if err != nil {
		return time.Time{}, err
	}
	now := m.now().UTC()
	before := now.Truncate(time.Second)
	r := tokenstate.Revocation{KeySet: name, Subject: subject, Before: before, Expires: p.RevocationsEndBy(ks, before), RevokedAt: now, Reason: reason}
	if _, err := m.revoke(ctx, p, r); err != nil {
		return time.Time{}, err
	}
	m.log.Warn("revoked every token of a subject", "keyset", name, "issued_before", before, "actor", actorOf(ctx))
	m.emit(Event{Kind: EventSubjectRevoked, KeySet: name, Subject: subject, Reason: reason, Actor: actorOf(ctx)})
	return before, nil
}

// revoke writes r to the token state, then to the index. A key set at its
// limit refuses a new entry (a revocation already in force may still be
// extended).
func (m *Manager) revoke(ctx context.Context, p keystore.Policy, r tokenstate.Revocation) (tokenstate.Revocation, error) {
	if m.tokens == nil {
		return tokenstate.Revocation{}, errNoTokenState
	}
	max := p.RevocationLimit()
	if m.revs.Len(p.Name) >= max && !m.revs.Has(r) {
		m.revs.Prune(m.now()) // at the limit: drop what has expired first
		if n := m.revs.Len(p.Name); n >= max {
			return tokenstate.Revocation{}, fmt.Errorf("%w: key set %s has %d revocations in force", keystore.ErrRevocationLimit, p.Name, n)
		}
	}
	stored, err := m.tokens.PutRevocation(ctx, r)
	if m.noteTokens(err) != nil {
		return tokenstate.Revocation{}, err
	}
	_ = m.revs.Add(stored, 0) // stored: the limit was checked above
	return stored, nil
}

// Revocations is the index of the revocations in force.
func (m *Manager) Revocations() *tokenstate.Index { return m.revs }

// loadRevocations fills the index from the token state, after moving the
// revocations that older versions kept inside a key set's document into
// entries of their own (once: the documents are then written without
// them). Replicas call it again to pick up what others revoked.
func (m *Manager) loadRevocations(ctx context.Context, sets []*keystore.KeySet) error {
	if m.tokens == nil {
		return nil
	}
	now := m.now().UTC()
	for _, ks := range sets {
		if ks.Revocations.Len() == 0 {
			continue
		}
		p, _ := m.Policy(ks.Name)
		in := ks.Revocations.InForce(now, p.Leeway)
		for _, t := range in.Tokens {
			if _, err := m.tokens.PutRevocation(ctx, tokenstate.Revocation{KeySet: ks.Name, JTI: t.JTI, Expires: t.Expires.Add(p.Leeway), RevokedAt: t.RevokedAt, Reason: t.Reason}); err != nil {
				return err
			}
		}
		for _, s := range in.Subjects {
			if _, err := m.tokens.PutRevocation(ctx, tokenstate.Revocation{KeySet: ks.Name, Subject: s.Subject, Before: s.Before, Expires: s.Until, RevokedAt: s.RevokedAt, Reason: s.Reason}); err != nil {
				return err
			}
		}
		moved, err := keystore.Update(ctx, m.store, ks.Name, func(cur *keystore.KeySet) (*keystore.KeySet, error) {
			if cur.Revocations.Len() == 0 {
				return nil, keystore.ErrNoChange
			}
			cur.Revocations = keystore.Revocations{}
			return cur, nil
		})
		if err != nil {
			return err
		}
		if err := m.publish(moved); err != nil {
			return err
		}
		m.log.Info("moved the key set's revocations to entries of their own", "keyset", ks.Name, "tokens", len(in.Tokens), "subjects", len(in.Subjects))
	}
	return m.firstSync(ctx)
}

// syncRevocations adds every stored entry of a configured key set to the
// index (merging), as the store streams them: a million are never all in
// memory twice. Entries are held to what their key set allows
// (revocationLimits).
func (m *Manager) syncRevocations(ctx context.Context) error {
	gate := m.gate()
	err := m.tokens.Revocations(ctx, func(r tokenstate.Revocation) {
		until, known := gate[r.KeySet]
		if r, ok := m.admitRevocation(r, until, known); ok {
			_ = m.revs.Add(r, 0) // stored: in force, whatever the limit says now
		}
	})
	return m.noteTokens(err)
}

// revocationLimits are what a revocation of the key set called name may
// be, read from a token state others can write (Redis): ok is false for a
// key set that is not configured (the entry is refused); until is the
// latest expiry (a stored or published entry cannot pin memory until the
// year 2100); max is how many may be in force.
func (m *Manager) revocationLimits(name string, now time.Time) (until time.Time, max int, ok bool) {
	p, ok := m.Policy(name)
	if !ok {
		return time.Time{}, 0, false
	}
	ks, _, err := m.KeySet(name)
	if err != nil {
		ks = nil // not loaded yet: the policy's token_ttl and legacy window
	}
	return p.RevocationsEndBy(ks, now), p.RevocationLimit(), true
}

// gate is the latest expiry of each configured key set's revocations, read
// once for a whole stream of entries (read-only after: safe for the
// concurrent callbacks of a store's stream).
func (m *Manager) gate() map[string]time.Time {
	now := m.now()
	until := map[string]time.Time{}
	for _, name := range m.Names() {
		if u, _, ok := m.revocationLimits(name, now); ok {
			until[name] = u
		}
	}
	return until
}

// admitRevocation holds a revocation read back to its key set's limits:
// refused (and counted) for a key set that is not configured, its expiry
// brought back to until.
func (m *Manager) admitRevocation(r tokenstate.Revocation, until time.Time, ok bool) (tokenstate.Revocation, bool) {
	if !ok {
		m.rejected()
		return r, false
	}
	if r.Expires.After(until) {
		r.Expires = until
	}
	return r, true
}

// published adds a revocation another replica published (or anyone who
// can publish on the channel): admitted, and refused past the key set's
// max_revocations as a revocation made here would be.
func (m *Manager) published(r tokenstate.Revocation) {
	until, max, ok := m.revocationLimits(r.KeySet, m.now())
	r, ok = m.admitRevocation(r, until, ok)
	if ok && m.revs.Add(r, max) != nil {
		m.rejected()
	}
}

func (m *Manager) rejected() {
	if m.onRejected != nil {
		m.onRejected("revocation")
	}
}

// SubscribeWait bounds how long Start waits for the revocations watch to
// subscribe before it loads the index (see WatchRevocations).
const SubscribeWait = 5 * time.Second

// WatchRevocations keeps the index current with a shared token state that
// tells its changes (tokenstate.Watcher: Redis): each revocation made by
// any replica is added as it is published, and after every reconnection
// the index is resynchronised from the whole state. It returns at once;
// the watch goes on until ctx is done, and done is closed when it has
// ended (at once with a token state that tells nothing).
//
// Called before Start, it lets the start-up load be the first
// subscription's resynchronisation: Start waits (at most SubscribeWait)
// for the subscription before loading, so what is revoked from then on
// reaches the index through the watch and everything before through the
// load, and a million entries are read once at start, not twice.
func (m *Manager) WatchRevocations(ctx context.Context) (done <-chan struct{}) {
	ch := make(chan struct{})
	w, ok := m.tokens.(tokenstate.Watcher)
	if !ok {
		close(ch)
		return ch
	}
	subscribed := make(chan struct{})
	m.watch.mu.Lock()
	m.watch.subscribed = subscribed
	m.watch.mu.Unlock()
	var once sync.Once
	resync := func(ctx context.Context) error {
		m.watch.mu.Lock()
		loadFollows := !m.watch.loadBegun
		m.watch.mu.Unlock()
		once.Do(func() { close(subscribed) })
		if loadFollows {
			return nil // the start-up load, after this subscription, is the resync
		}
		return m.syncRevocations(ctx)
	}
	go func() {
		defer close(ch)
		_ = w.Watch(ctx, m.published, resync)
	}()
	return ch
}

// firstSync is the start-up load of the index; with a watch on it waits
// for the watch's subscription first (see WatchRevocations).
func (m *Manager) firstSync(ctx context.Context) error {
	m.watch.mu.Lock()
	subscribed := m.watch.subscribed
	m.watch.mu.Unlock()
	if subscribed != nil {
		t := time.NewTimer(SubscribeWait)
		select {
		case <-subscribed:
		case <-t.C:
			m.log.Warn("the revocations watch has not subscribed yet; loading the index without it (it resynchronises when it does)")
		case <-ctx.Done():
		}
		t.Stop()
	}
	m.watch.mu.Lock()
	m.watch.loadBegun = true
	m.watch.mu.Unlock()
	return m.syncRevocations(ctx)
}

// PruneRevocations drops the entries every token of which has expired,
// from the index and from the token state, and returns how many the state
// held.
func (m *Manager) PruneRevocations(ctx context.Context) (int, error) {
	if m.tokens == nil {
		return 0, nil
	}
	now := m.now()
	m.revs.Prune(now)
	return m.tokens.PruneRevocations(ctx, now)
}

// Now is the manager's clock.
func (m *Manager) Now() time.Time { return m.now() }

// noteTokens records the outcome of a token state operation for
// TokenStateHealth: kept apart from the key store's, so that /readyz names
// what failed (Redis, not the key store).
func (m *Manager) noteTokens(err error) error {
	switch {
	case err == nil:
		if m.tokenErr.Load() != nil {
			m.tokenErr.Store(nil)
		}
	case errors.Is(err, keystore.ErrUnavailable):
		m.tokenErr.Store(&err)
	}
	return err
}

// TokenStateHealth is the last token state failure, nil if its last
// operation succeeded (or TokenStateRecovered said so).
func (m *Manager) TokenStateHealth() error {
	if p := m.tokenErr.Load(); p != nil {
		return *p
	}
	return nil
}

// TokenStateRecovered clears the token state failure: the token state
// answered a probe.
func (m *Manager) TokenStateRecovered() { m.noteTokens(nil) }
