package refresh_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate"
)

func setup(t testing.TB) (*refresh.Service, *signer.Signer, *keystoretest.Clock, *file.Store) {
	t.Helper()
	c := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	store, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	sg := signer.New(c.Now, nil)
	for _, name := range []string{"app", "other"} {
		ks := keystoretest.KeySet(t, name, keystore.ES256)
		ks.Version = 1
		if err := sg.Load(keystore.Policy{Name: name, Algorithm: keystore.ES256, TokenTTL: 5 * time.Minute, JWKSMaxAge: time.Minute}, ks); err != nil {
			t.Fatal(err)
		}
	}
	settings := func(name string) (refresh.Settings, bool) {
		switch name {
		case "app", "other":
			return refresh.Settings{TTL: 24 * time.Hour}, true
		case "off":
			return refresh.Settings{}, true
		}
		return refresh.Settings{}, false
	}
	return refresh.New(store, sg, c.Now, settings), sg, c, store
}

var claims = signer.Claims{"sub": json.RawMessage(`"alice"`), "scope": json.RawMessage(`"read"`)}

func TestRotationAndReuseDetection(t *testing.T) {
	svc, sg, c, _ := setup(t)
	ctx := context.Background()
	first, err := svc.Issue(ctx, "app", claims)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first.RefreshToken, "krt_") || strings.Count(first.RefreshToken, ".") != 0 {
		t.Fatalf("refresh token %q looks like a JWT", first.RefreshToken)
	}
	// The refresh token is no access token.
	if _, err := sg.Verify("app", first.RefreshToken, signer.Expect{}); signer.Code(err) != signer.CodeMalformed {
		t.Fatalf("verify accepted a refresh token: %v", err)
	}
	c.Add(time.Minute)
	second, err := svc.Refresh(ctx, "app", first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	v, err := sg.Verify("app", second.Access.Token, signer.Expect{})
	if err != nil || v.Claims["sub"] != "alice" || v.Claims["scope"] != "read" || second.Access.JTI == first.Access.JTI ||
		!second.Access.ExpiresAt.Equal(c.Now().Add(5*time.Minute)) || !second.RefreshExpires.Equal(first.RefreshExpires) {
		t.Fatalf("refreshed pair: %+v %v", second, err)
	}
	third, err := svc.Refresh(ctx, "app", second.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	// The first token again: theft. The whole family goes, the newest too.
	if _, err := svc.Refresh(ctx, "app", first.RefreshToken); !errors.Is(err, refresh.ErrReused) {
		t.Fatalf("reuse: %v", err)
	}
	if _, err := svc.Refresh(ctx, "app", third.RefreshToken); !errors.Is(err, refresh.ErrRevoked) {
		t.Fatalf("the newest token after reuse: %v", err)
	}
	// Another login is not affected.
	other, _ := svc.Issue(ctx, "app", claims)
	if _, err := svc.Refresh(ctx, "app", other.RefreshToken); err != nil {
		t.Fatalf("another login: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	svc, _, c, store := setup(t)
	ctx := context.Background()
	p, _ := svc.Issue(ctx, "app", claims)
	for name, tok := range map[string]string{
		"garbage":     "krt_AAAA",
		"not ours":    "eyJhbGciOiJFUzI1NiJ9.e30.sig",
		"flipped mac": p.RefreshToken[:len(p.RefreshToken)-2] + flip(p.RefreshToken[len(p.RefreshToken)-2:]),
	} {
		if _, err := svc.Refresh(ctx, "app", tok); !errors.Is(err, refresh.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := svc.Refresh(ctx, "other", p.RefreshToken); !errors.Is(err, refresh.ErrInvalid) {
		t.Errorf("another key set's token: %v", err)
	}
	if _, err := svc.Issue(ctx, "off", claims); !errors.Is(err, refresh.ErrDisabled) {
		t.Errorf("refresh off: %v", err)
	}
	if _, err := svc.Issue(ctx, "nope", claims); !errors.Is(err, signer.ErrUnknownKeySet) {
		t.Errorf("unknown key set: %v", err)
	}
	if _, err := svc.Issue(ctx, "app", signer.Claims{"jti": json.RawMessage(`"x"`)}); !errors.Is(err, refresh.ErrClaims) {
		t.Errorf("jti in pair claims: %v", err)
	}
	// A flipped MAC did not revoke the family: only keyd's own tokens can.
	c.Add(24 * time.Hour)
	if _, err := svc.Refresh(ctx, "app", p.RefreshToken); !errors.Is(err, refresh.ErrExpired) {
		t.Fatalf("after the family's ttl: %v", err)
	}
	if n, err := svc.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("pruning a family expired for less than a day: %d %v", n, err)
	}
	c.Add(25 * time.Hour)
	if n, err := svc.Prune(ctx); err != nil || n != 1 {
		t.Fatalf("prune: %d %v", n, err)
	}
	if recs, _ := store.ListRecords(ctx, refresh.Kind); len(recs) != 0 {
		t.Fatalf("%d families left", len(recs))
	}
}

// TestRaceHasOneWinner presents one refresh token to two services sharing
// a store (two replicas) at once, many times: each time exactly one new
// pair, and the other is reuse.
func TestRaceHasOneWinner(t *testing.T) {
	a, _, c, store := setup(t)
	b := refresh.New(store, signerOf(t, c.Now), c.Now, func(string) (refresh.Settings, bool) { return refresh.Settings{TTL: time.Hour}, true })
	ctx := context.Background()
	for range 20 {
		p, err := a.Issue(ctx, "app", claims)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, svc := range []*refresh.Service{a, b} {
			wg.Go(func() { _, errs[i] = svc.Refresh(ctx, "app", p.RefreshToken) })
		}
		wg.Wait()
		ok, reused := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, refresh.ErrReused):
				reused++
			default:
				t.Fatalf("racing refresh: %v", err)
			}
		}
		if ok != 1 || reused != 1 {
			t.Fatalf("race: %d pairs, %d reuses", ok, reused)
		}
	}
}

func signerOf(t testing.TB, now func() time.Time) *signer.Signer {
	sg := signer.New(now, nil)
	ks := keystoretest.KeySet(t, "app", keystore.EdDSA)
	ks.Version = 1
	if err := sg.Load(keystore.Policy{Name: "app", Algorithm: keystore.EdDSA, TokenTTL: 5 * time.Minute}, ks); err != nil {
		t.Fatal(err)
	}
	return sg
}

func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// BenchmarkRefresh measures refreshes on bbolt: each spends a token and
// writes its family (concurrent writes share a transaction and its
// fsync), and signs (ES256).
func BenchmarkRefresh(b *testing.B) {
	svc, _, _, _ := setup(b)
	ctx := context.Background()
	b.SetParallelism(16) // 32 logins refreshing at once on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		p, err := svc.Issue(ctx, "app", claims)
		if err != nil {
			b.Fatal(err)
		}
		tok := p.RefreshToken
		for pb.Next() {
			p, err := svc.Refresh(ctx, "app", tok)
			if err != nil {
				b.Fatal(err)
			}
			tok = p.RefreshToken
		}
	})
}

// "Log out everywhere": a subject revocation ends every login of that
// subject that started at or before its cut-off, even once the access
// tokens' revocation has left the signer (after token_ttl), and not the
// logins that start later or belong to someone else.
func TestSubjectRevocationEndsLogins(t *testing.T) {
	svc, _, c, store := setup(t)
	ctx := context.Background()
	alice1, err := svc.Issue(ctx, "app", claims)
	if err != nil {
		t.Fatal(err)
	}
	bob, _ := svc.Issue(ctx, "app", signer.Claims{"sub": json.RawMessage(`"bob"`)})
	otherSet, _ := svc.Issue(ctx, "other", claims)
	c.Add(time.Second)
	// The key set's signer knows no subject revocation here: only the
	// stored cut-off can end the login.
	if err := svc.RevokeSubject(ctx, "app", "alice", c.Now().Truncate(time.Second)); err != nil {
		t.Fatal(err)
	}
	// An earlier cut-off does not move it back.
	if err := svc.RevokeSubject(ctx, "app", "alice", c.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Hour)
	if _, err := svc.Refresh(ctx, "app", alice1.RefreshToken); !errors.Is(err, refresh.ErrRevoked) {
		t.Fatalf("alice's login after her subject revocation: %v", err)
	}
	if _, err := svc.Refresh(ctx, "app", bob.RefreshToken); err != nil {
		t.Fatalf("bob's login: %v", err)
	}
	if _, err := svc.Refresh(ctx, "other", otherSet.RefreshToken); err != nil {
		t.Fatalf("alice's login on another key set: %v", err)
	}
	alice2, err := svc.Issue(ctx, "app", claims)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Refresh(ctx, "app", alice2.RefreshToken); err != nil {
		t.Fatalf("alice's login after the cut-off: %v", err)
	}
	// The cut-off record holds no subject in clear and is pruned once every
	// login it covers has expired.
	recs, _ := store.ListRecords(ctx, refresh.SubjectKind)
	if len(recs) != 1 || strings.Contains(recs[0].ID+string(recs[0].Data), "alice") {
		t.Fatalf("subject records: %+v", recs)
	}
	c.Add(49 * time.Hour)
	if _, err := svc.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if recs, _ := store.ListRecords(ctx, refresh.SubjectKind); len(recs) != 0 {
		t.Fatalf("expired subject cut-off kept: %d", len(recs))
	}
}

// While the access tokens' revocation is in force, the signer's copy ends
// the login too (the stored cut-off may not have been written yet).
func TestSignerSubjectRevocationEndsLogins(t *testing.T) {
	svc, sg, c, _ := setup(t)
	ctx := context.Background()
	p, err := svc.Issue(ctx, "app", claims)
	if err != nil {
		t.Fatal(err)
	}
	now := c.Now().Truncate(time.Second)
	if err := sg.Revocations().Add(tokenstate.Revocation{KeySet: "app", Subject: "alice", Before: now, Expires: now.Add(time.Hour), RevokedAt: now}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Refresh(ctx, "app", p.RefreshToken); !errors.Is(err, refresh.ErrRevoked) {
		t.Fatalf("refresh with the subject revoked in the signer: %v", err)
	}
}

func TestRevokeLogin(t *testing.T) {
	svc, _, _, _ := setup(t)
	ctx := context.Background()
	first, _ := svc.Issue(ctx, "app", claims)
	second, err := svc.Refresh(ctx, "app", first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := svc.Issue(ctx, "app", claims)
	// Any generation names the login, a spent one too.
	login, err := svc.RevokeLogin(ctx, "app", first.RefreshToken)
	if err != nil || login.ID == "" || login.Subject != "alice" || login.LoggedInAt.IsZero() || strings.Contains(login.ID, first.RefreshToken) {
		t.Fatalf("RevokeLogin = %+v, %v", login, err)
	}
	if _, err := svc.RevokeLogin(ctx, "app", second.RefreshToken); err != nil {
		t.Fatalf("revoking a revoked login again: %v", err)
	}
	if _, err := svc.Refresh(ctx, "app", second.RefreshToken); !errors.Is(err, refresh.ErrRevoked) {
		t.Fatalf("refresh of a revoked login: %v", err)
	}
	if _, err := svc.Refresh(ctx, "app", other.RefreshToken); err != nil {
		t.Fatalf("another login of the same subject: %v", err)
	}
	forged := second.RefreshToken[:len(second.RefreshToken)-2] + flip(second.RefreshToken[len(second.RefreshToken)-2:]) // a significant character changed, always
	for name, tok := range map[string]string{"forged": forged, "junk": "krt_x", "other key set": other.RefreshToken} {
		ks := "app"
		if name == "other key set" {
			ks = "other"
		}
		if _, err := svc.RevokeLogin(ctx, ks, tok); !errors.Is(err, refresh.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestLoginClaimsAreCapped(t *testing.T) {
	svc, _, _, store := setup(t)
	big := signer.Claims{"sub": json.RawMessage(`"a"`), "blob": json.RawMessage(`"` + strings.Repeat("x", refresh.MaxClaimsBytes) + `"`)}
	if _, err := svc.Issue(context.Background(), "app", big); !errors.Is(err, refresh.ErrClaims) {
		t.Fatalf("oversized login claims: %v", err)
	}
	if recs, _ := store.ListRecords(context.Background(), refresh.Kind); len(recs) != 0 {
		t.Fatalf("a refused login was stored")
	}
}
