package keystore

import (
	"fmt"
	"slices"
	"time"
)

// Revocations are the revoked tokens that versions before tokenstate kept
// inside a key set's document; at start they move to entries of their
// own (package tokenstate) and the document is written without them.
type Revocations struct {
	Tokens   []TokenRevocation
	Subjects []SubjectRevocation
}

// TokenRevocation revokes one token, by its jti.
type TokenRevocation struct {
	JTI       string
	Expires   time.Time // the token's exp: the entry is dropped after Expires + leeway
	RevokedAt time.Time
	Reason    string
}

// SubjectRevocation revokes every token of a subject issued at or before
// Before ("log out everywhere"); tokens issued later are not affected.
type SubjectRevocation struct {
	Subject   string
	Before    time.Time // tokens whose iat is at or before it are revoked
	Until     time.Time // by then every such token has expired: the entry is dropped
	RevokedAt time.Time
	Reason    string
}

// Len is the number of entries.
func (r Revocations) Len() int { return len(r.Tokens) + len(r.Subjects) }

// DefaultMaxRevocations bounds a key set's revocations in force, a guard
// on memory (each entry takes a few hundred bytes of the index every
// replica holds). Past it, revoking is refused with ErrRevocationLimit,
// never a silent drop: revoke the key instead, or raise the limit.
const DefaultMaxRevocations = 1_000_000

// RevokeToken adds (or extends) the revocation of one token, dropping the
// entries that no longer matter first. It refuses with ErrRevocationLimit
// when max entries are in force.
func RevokeToken(ks *KeySet, rev TokenRevocation, now time.Time, leeway time.Duration, max int) (*KeySet, error) {
	out := ks.Clone()
	out.Revocations = out.Revocations.pruned(now, leeway)
	if i := slices.IndexFunc(out.Revocations.Tokens, func(t TokenRevocation) bool { return t.JTI == rev.JTI }); i >= 0 {
		if rev.Expires.After(out.Revocations.Tokens[i].Expires) {
			out.Revocations.Tokens[i].Expires = rev.Expires
		}
		return out, nil
	}
	if out.Revocations.Len() >= max {
		return nil, fmt.Errorf("%w: key set %s has %d revocations in force", ErrRevocationLimit, ks.Name, out.Revocations.Len())
	}
	out.Revocations.Tokens = append(out.Revocations.Tokens, rev)
	return out, nil
}

// RevokeSubject revokes every token of rev.Subject issued at or before
// rev.Before, or moves an existing cut-off later.
func RevokeSubject(ks *KeySet, rev SubjectRevocation, now time.Time, leeway time.Duration, max int) (*KeySet, error) {
	out := ks.Clone()
	out.Revocations = out.Revocations.pruned(now, leeway)
	if i := slices.IndexFunc(out.Revocations.Subjects, func(s SubjectRevocation) bool { return s.Subject == rev.Subject }); i >= 0 {
		cur := &out.Revocations.Subjects[i]
		if rev.Before.After(cur.Before) {
			cur.Before, cur.RevokedAt, cur.Reason = rev.Before, rev.RevokedAt, rev.Reason
		}
		if rev.Until.After(cur.Until) {
			cur.Until = rev.Until
		}
		return out, nil
	}
	if out.Revocations.Len() >= max {
		return nil, fmt.Errorf("%w: key set %s has %d revocations in force", ErrRevocationLimit, ks.Name, out.Revocations.Len())
	}
	out.Revocations.Subjects = append(out.Revocations.Subjects, rev)
	return out, nil
}

// InForce returns the revocations that still cover a token that could
// verify at now.
func (r Revocations) InForce(now time.Time, leeway time.Duration) Revocations {
	return r.pruned(now, leeway)
}

// Stale reports whether some entry no longer matters.
func (r Revocations) Stale(now time.Time, leeway time.Duration) bool {
	return r.pruned(now, leeway).Len() != r.Len()
}

func (r Revocations) pruned(now time.Time, leeway time.Duration) Revocations {
	var out Revocations
	for _, t := range r.Tokens {
		if !now.After(t.Expires.Add(leeway)) {
			out.Tokens = append(out.Tokens, t)
		}
	}
	for _, s := range r.Subjects {
		if !now.After(s.Until) {
			out.Subjects = append(out.Subjects, s)
		}
	}
	return out
}

func (r Revocations) clone() Revocations {
	return Revocations{Tokens: slices.Clone(r.Tokens), Subjects: slices.Clone(r.Subjects)}
}
