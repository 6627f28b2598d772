package rotation

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/keyd-dev/keyd/internal/parallel"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/tokenstate"
)

// EventRevocationsImported is a batch of revocations brought from another
// system's denylist (one event per import, not per entry).
const EventRevocationsImported EventKind = "revocations_imported"

// ImportWriters is how many revocations of an import are written at once:
// enough for bbolt to share its commits and Redis its pipelines.
const ImportWriters = 512

// ImportRevocations writes a batch of revocations of the key set called
// name, as RevokeToken and RevokeSubject would (each entry merged with one
// in force, the key set's max_revocations held), many at once, without a
// log line or an event per entry: the caller reports the import. Each
// entry must name the key set, and a jti or a subject; its Expires is
// clamped to when the last token the key set verifies can expire. It
// returns how many were written, and the first failure (a store that did
// not answer, the limit), after which no new entry is started.
func (m *Manager) ImportRevocations(ctx context.Context, name string, rs []tokenstate.Revocation) (int, error) {
	ks, p, err := m.KeySet(name)
	if err != nil {
		return 0, err
	}
	if m.tokens == nil {
		return 0, errNoTokenState
	}
	until := p.RevocationsEndBy(ks, m.now())
	var written atomic.Int64
	var first atomic.Pointer[error]
	parallel.Each(len(rs), ImportWriters, func(i int) {
		if first.Load() != nil || ctx.Err() != nil {
			return
		}
		r := rs[i]
		if r.KeySet != name || (r.JTI == "") == (r.Subject == "") {
			err := fmt.Errorf("%w: an imported revocation names key set %q and one of a jti or a subject", keystore.ErrInvalidTransition, name)
			first.CompareAndSwap(nil, &err)
			return
		}
		if r.Expires.After(until) {
			r.Expires = until
		}
		if _, err := m.revoke(ctx, p, r); err != nil {
			first.CompareAndSwap(nil, &err)
			return
		}
		written.Add(1)
	})
	if e := first.Load(); e != nil {
		return int(written.Load()), *e
	}
	if err := ctx.Err(); err != nil {
		return int(written.Load()), err
	}
	return int(written.Load()), nil
}

// ImportDone reports an import's outcome: one log line and one event.
func (m *Manager) ImportDone(ctx context.Context, name string, written, skipped int, err error) {
	attrs := []any{"keyset", name, "imported", written, "skipped", skipped, "actor", actorOf(ctx)}
	if err != nil && !errors.Is(err, context.Canceled) {
		m.log.Error("revocation import stopped", append(attrs, "err", err)...)
	} else {
		m.log.Warn("imported revocations", attrs...)
	}
	m.emit(Event{Kind: EventRevocationsImported, KeySet: name, Actor: actorOf(ctx), Reason: fmt.Sprintf("%d imported, %d skipped", written, skipped)})
}
