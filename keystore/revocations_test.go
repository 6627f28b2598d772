package keystore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
)

func TestRevocationsPruneAndLimit(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	leeway := time.Minute
	ks := keystoretest.KeySet(t, "r", keystore.ES256)
	ks, err := keystore.RevokeToken(ks, keystore.TokenRevocation{JTI: "a", Expires: now.Add(time.Minute)}, now, leeway, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Again, with a later exp: one entry, the later exp.
	ks, _ = keystore.RevokeToken(ks, keystore.TokenRevocation{JTI: "a", Expires: now.Add(2 * time.Minute)}, now, leeway, 3)
	if len(ks.Revocations.Tokens) != 1 || !ks.Revocations.Tokens[0].Expires.Equal(now.Add(2*time.Minute)) {
		t.Fatalf("revoking twice: %+v", ks.Revocations.Tokens)
	}
	ks, _ = keystore.RevokeSubject(ks, keystore.SubjectRevocation{Subject: "alice", Before: now, Until: now.Add(10 * time.Minute)}, now, leeway, 3)
	ks, _ = keystore.RevokeToken(ks, keystore.TokenRevocation{JTI: "b", Expires: now.Add(time.Hour)}, now, leeway, 3)
	if _, err := keystore.RevokeToken(ks, keystore.TokenRevocation{JTI: "c", Expires: now.Add(time.Hour)}, now, leeway, 3); !errors.Is(err, keystore.ErrRevocationLimit) {
		t.Fatalf("past the limit: %v", err)
	}
	// A later cut-off for the same subject moves it, it does not add one.
	later := now.Add(30 * time.Second)
	ks, _ = keystore.RevokeSubject(ks, keystore.SubjectRevocation{Subject: "alice", Before: later, Until: later.Add(10 * time.Minute)}, later, leeway, 3)
	if len(ks.Revocations.Subjects) != 1 || !ks.Revocations.Subjects[0].Before.Equal(later) {
		t.Fatalf("subject cut-off: %+v", ks.Revocations.Subjects)
	}
	// exp + leeway later "a" is dropped, making room; alice stays until Until.
	at := now.Add(2*time.Minute + leeway + time.Second)
	if !ks.Revocations.Stale(at, leeway) || ks.Revocations.InForce(at, leeway).Len() != 2 {
		t.Fatalf("in force at %v: %+v", at, ks.Revocations.InForce(at, leeway))
	}
	ks, err = keystore.RevokeToken(ks, keystore.TokenRevocation{JTI: "c", Expires: at.Add(time.Hour)}, at, leeway, 3)
	if err != nil || ks.Revocations.Len() != 3 {
		t.Fatalf("after pruning: %v, %d entries", err, ks.Revocations.Len())
	}
	if in := ks.Revocations.InForce(now.Add(11*time.Minute), leeway); len(in.Subjects) != 0 {
		t.Fatalf("alice's cut-off outlived its Until: %+v", in)
	}
	// Clone shares nothing.
	c := ks.Clone()
	c.Revocations.Tokens[0].JTI = "changed"
	if ks.Revocations.Tokens[0].JTI == "changed" {
		t.Fatal("Clone shares revocations")
	}
}
