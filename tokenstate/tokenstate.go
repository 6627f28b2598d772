// Package tokenstate keeps what keyd knows of tokens in flight besides
// their keys: their revocations, one entry each, so that a revocation is
// written in O(1) whatever the number in force.
//
// Store is what an engine provides: the key store's own records
// (tokenstate/records, the default: bbolt or Vault) or Redis
// (tokenstate/redis).
// Every engine passes tokenstatetest.Run. Index is the copy in memory that
// every replica checks per verification: a map lookup, never a store read.
package tokenstate

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Revocation is one entry: a token by its jti, or every token of a
// subject issued at or before Before.
type Revocation struct {
	KeySet  string
	JTI     string
	Subject string
	Before  time.Time // subject entries: tokens with iat <= Before are revoked
	// Expires is when the entry stops mattering: the token's exp plus the
	// leeway, or, for a subject, when the last token it covers expires.
	Expires   time.Time
	RevokedAt time.Time
	Reason    string
}

// ErrLimit is returned when a key set already has as many revocations in
// force as it may hold in memory (max_revocations): revoke its key
// instead, or raise the limit. Nothing is dropped to make room.
var ErrLimit = errors.New("revocation limit reached")

// IsSubject reports whether r revokes a subject's tokens.
func (r Revocation) IsSubject() bool { return r.Subject != "" }

// ID names the entry in a store: the key set, its kind and a hash of the
// jti or subject (subjects are user identifiers: not stored in clear in a
// key, and any length fits).
func (r Revocation) ID() string {
	kind, v := "j.", r.JTI
	if r.IsSubject() {
		kind, v = "s.", r.Subject
	}
	sum := sha256.Sum256([]byte(v))
	return r.KeySet + "." + kind + base64.RawURLEncoding.EncodeToString(sum[:18])
}

// Merge returns the entry that covers both r and a later revocation of the
// same token or subject: the later expiry and cut-off, the new reason.
func (r Revocation) Merge(next Revocation) Revocation {
	out := r
	if next.Expires.After(out.Expires) {
		out.Expires = next.Expires
	}
	if next.Before.After(out.Before) {
		out.Before, out.RevokedAt = next.Before, next.RevokedAt
	}
	if next.Reason != "" {
		out.Reason = next.Reason
	}
	return out
}

// Store keeps revocation entries. Implementations are safe for concurrent
// use (and by several processes where the store is shared), honour ctx,
// and wrap backend faults in keystore.ErrUnavailable.
type Store interface {
	// PutRevocation stores r, merged (Revocation.Merge) with a stored
	// entry for the same token or subject, in O(1) whatever the number
	// stored, and returns the entry as stored.
	PutRevocation(ctx context.Context, r Revocation) (Revocation, error)
	// Revocations calls add with every stored entry, at start and when a
	// replica resynchronises, without holding them all at once (a million
	// entries): add may be called from several goroutines at once. A token
	// revoked more than once may come more than once: Revocation.Merge (as
	// Index.Add does) makes them one.
	Revocations(ctx context.Context, add func(Revocation)) error
	// PruneRevocations deletes the entries whose Expires is before now,
	// and returns how many.
	PruneRevocations(ctx context.Context, now time.Time) (int, error)
}

// BulkPutter is an optional capability of a Store: many revocations
// written at once, as PutRevocation would one by one (a restore).
type BulkPutter interface {
	PutRevocations(ctx context.Context, rs []Revocation) error
}

// PutRevocations writes rs into s: at once where s can (BulkPutter), else
// 64 at a time.
func PutRevocations(ctx context.Context, s Store, rs []Revocation) error {
	if b, ok := s.(BulkPutter); ok {
		return b.PutRevocations(ctx, rs)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for _, r := range rs {
		g.Go(func() error {
			_, err := s.PutRevocation(ctx, r)
			return err
		})
	}
	return g.Wait()
}

// Watcher is an optional capability of a Store shared by replicas: it
// tells each revocation made anywhere as it is made (add), and calls
// resync after every (re)connection so nothing published meanwhile is
// missed. Watch returns when ctx is done.
type Watcher interface {
	Watch(ctx context.Context, add func(Revocation), resync func(context.Context) error) error
}

// All collects every entry of s (for tests and small states: at start,
// keyd streams them into the index instead).
func All(ctx context.Context, s Store) ([]Revocation, error) {
	var mu sync.Mutex
	var out []Revocation
	err := s.Revocations(ctx, func(r Revocation) {
		mu.Lock()
		defer mu.Unlock()
		out = append(out, r)
	})
	return out, err
}
