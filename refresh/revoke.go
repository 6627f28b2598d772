package refresh

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// SubjectKind is the record kind of subject cut-offs: "every login of this
// subject that started at or before this time is over". One record per key
// set and subject, written in O(1) whatever the number of logins, read on
// each refresh of a login of that subject, and kept until every login it
// covers has expired (the cut-off plus the key set's refresh TTL).
const SubjectKind = "refresh-subject"

// subjectCut is the stored cut-off of a subject.
type subjectCut struct {
	Before    time.Time `json:"before"`
	ExpiresAt time.Time `json:"expires_at"`
}

// subjectID names a subject's cut-off record without holding the subject
// itself (an e-mail address, often) in clear.
func subjectID(keyset, sub string) string {
	sum := sha256.Sum256([]byte(keyset + "\x00" + sub))
	return keyset + "." + base64.RawURLEncoding.EncodeToString(sum[:])
}

// RevokeSubject ends every login of sub on keyset that started at or
// before `before` (the cut-off of the subject revocation that revokes its
// access tokens): their refresh tokens answer ErrRevoked from now on, on
// every replica. A later cut-off replaces an earlier one. On a key set
// without refresh tokens it does nothing.
func (s *Service) RevokeSubject(ctx context.Context, keyset, sub string, before time.Time) error {
	set, err := s.enabled(keyset)
	if errors.Is(err, ErrDisabled) {
		return nil
	}
	if err != nil {
		return err
	}
	id := subjectID(keyset, sub)
	want := subjectCut{Before: before.UTC(), ExpiresAt: before.UTC().Add(set.TTL + time.Second)}
	return keystore.UpdateRecord(ctx, s.store, SubjectKind, id, func(rec *keystore.Record) ([]byte, time.Time, error) {
		if rec != nil {
			var cur subjectCut
			if json.Unmarshal(rec.Data, &cur) == nil && !cur.Before.Before(want.Before) {
				return nil, time.Time{}, keystore.ErrNoChange
			}
		}
		data, err := json.Marshal(want)
		return data, want.ExpiresAt.Add(pruneGrace), err
	})
}

// RevokeLogin ends the login refresh token tok belongs to (any of its
// generations, spent or not): its refresh tokens answer ErrRevoked from now
// on. Access tokens already issued stay valid until they expire; revoke
// them by jti or subject. A token keyd did not issue for keyset is
// ErrInvalid; a login revoked already is not an error.
func (s *Service) RevokeLogin(ctx context.Context, keyset, tok string) (Login, error) {
	rec, f, gen, err := s.login(ctx, keyset, tok)
	if err != nil {
		return Login{}, err
	}
	if gen > f.Generation { // a valid MAC for a generation never issued
		return Login{}, ErrInvalid
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(f.Claims, &claims) // a login without sub says none
	return Login{ID: rec.ID, Subject: claims.Sub, LoggedInAt: f.CreatedAt.UTC()}, s.revokeFamily(ctx, rec, f, s.now().UTC())
}

// Login names a login that was ended: its id (nothing of its secret), its
// subject, when it began.
type Login struct {
	ID         string    `json:"login"`
	Subject    string    `json:"sub,omitempty"`
	LoggedInAt time.Time `json:"logged_in_at"`
}

// subjectRevoked reports whether the login f was ended by a revocation of
// its subject: the signer's in-memory list (while the access tokens'
// revocation is in force) or the stored cut-off (until the logins expire).
// Compared in whole seconds, as a token's iat is.
func (s *Service) subjectRevoked(ctx context.Context, f *family) (bool, error) {
	// The exact member "sub", as verifiers read it (a struct would also
	// match "SUB").
	var claims map[string]json.RawMessage
	var sub string
	if json.Unmarshal(f.Claims, &claims) != nil || json.Unmarshal(claims["sub"], &sub) != nil {
		return false, nil
	}
	login := f.CreatedAt.Unix()
	if before, ok := s.signer.SubjectCutoff(f.KeySet, sub); ok && login <= before.Unix() {
		return true, nil
	}
	rec, err := s.store.GetRecord(ctx, SubjectKind, subjectID(f.KeySet, sub))
	if errors.Is(err, keystore.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var cut subjectCut
	if err := json.Unmarshal(rec.Data, &cut); err != nil {
		return false, fmt.Errorf("%w: subject cut-off %s: %v", keystore.ErrCorrupt, rec.ID, err)
	}
	return login <= cut.Before.Unix(), nil
}

// revokeFamily marks the login revoked with compare-and-swap, reloading
// it on a conflict; a login revoked already is left as it is.
func (s *Service) revokeFamily(ctx context.Context, rec *keystore.Record, f *family, now time.Time) error {
	for range keystore.MaxUpdateAttempts {
		if !f.RevokedAt.IsZero() {
			return nil
		}
		f.RevokedAt = now
		data, _ := json.Marshal(f)
		_, err := s.store.PutRecord(ctx, Kind, &keystore.Record{ID: rec.ID, Data: data, Version: rec.Version, Expires: f.ExpiresAt.Add(pruneGrace)})
		if err == nil {
			return nil
		}
		if !errors.Is(err, keystore.ErrConflict) {
			return err
		}
		if rec, f, err = s.load(ctx, rec.ID); err != nil {
			return err
		}
	}
	return fmt.Errorf("revoking refresh family %s: gave up after %d attempts", rec.ID, keystore.MaxUpdateAttempts)
}

// Kinds are the record kinds of token state this package keeps: logins
// and subject cut-offs (what moves with the token state, and what is
// sealed on Redis).
var Kinds = []string{Kind, SubjectKind}

// RecordExpiry is when a record of kind (Kind or SubjectKind) may go,
// read from its data: for a store that expires records itself, when token
// state moves into one (tokenstate.Move). Zero when it does not parse.
func RecordExpiry(kind string, data []byte) time.Time {
	var v struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if (kind != Kind && kind != SubjectKind) || json.Unmarshal(data, &v) != nil || v.ExpiresAt.IsZero() {
		return time.Time{}
	}
	return v.ExpiresAt.Add(pruneGrace)
}
