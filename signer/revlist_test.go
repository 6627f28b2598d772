package signer_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate"
)

// held is a verifier's copy of a list: digests and subject cut-offs.
type held struct {
	tokens   map[[signer.RevocationDigestSize]byte]int64
	subjects map[string]int64
	subKey   string
	iat      int64
}

func fetchList(t testing.TB, s *signer.Signer, since int64) (signer.RevocationListClaims, int) {
	t.Helper()
	doc, err := s.RevocationList("s", since)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(doc.Body), ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c signer.RevocationListClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c, len(doc.Body)
}

func (h *held) apply(t testing.TB, c signer.RevocationListClaims) {
	t.Helper()
	if c.Since == 0 {
		h.tokens, h.subjects = map[[signer.RevocationDigestSize]byte]int64{}, map[string]int64{}
	} else if c.SubKey != h.subKey {
		t.Fatal("a delta of another sub_key")
	}
	if err := signer.RevokedTokens(c.Tokens, func(d [signer.RevocationDigestSize]byte, exp int64) { h.tokens[d] = exp }); err != nil {
		t.Fatal(err)
	}
	for _, sr := range c.Subjects {
		h.subjects[sr.SubHMAC] = max(h.subjects[sr.SubHMAC], sr.Before)
	}
	h.subKey, h.iat = c.SubKey, c.IssuedAt
}

// TestRevocationListDeltas: a verifier holding a list and applying the
// delta since its iat holds what the whole list says; a delta holds only
// what came since (less the margin for replicas); a since beyond the
// horizon gets the whole list; and a revoked token costs at most 24 bytes
// of the list.
func TestRevocationListDeltas(t *testing.T) {
	s, c, _, p := setup(t, keystore.ES256)
	x := s.Revocations()
	revoke := func(n int, prefix string) {
		for i := range n {
			r := tokenstate.Revocation{KeySet: "s", JTI: fmt.Sprint(prefix, i), Expires: c.t.Add(p.TokenTTL + p.Leeway), RevokedAt: c.t}
			if err := x.Add(r, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	empty, emptySize := fetchList(t, s, 0)
	if empty.Format != signer.RevocationListFormat || len(empty.Tokens) != 0 {
		t.Fatalf("empty list: %+v", empty)
	}
	revoke(1000, "first-")
	c.t = c.t.Add(3 * time.Minute) // past the margin (leeway) the deltas reach back
	full, size := fetchList(t, s, 0)
	if per := float64(size-emptySize) / 1000; per > 24 {
		t.Fatalf("%.1f bytes per revoked token on the wire, want at most 24", per)
	}
	var h held
	h.apply(t, full)
	if len(h.tokens) != 1000 {
		t.Fatalf("%d tokens in the list", len(h.tokens))
	}

	// Later: more tokens and a subject. The delta holds them and not the
	// first thousand, which were revoked well before the margin.
	c.t = c.t.Add(3 * time.Minute)
	revoke(10, "second-")
	if err := x.Add(tokenstate.Revocation{KeySet: "s", Subject: "alice", Before: c.t, Expires: c.t.Add(time.Hour), RevokedAt: c.t}, 0); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Minute)
	delta, deltaSize := fetchList(t, s, h.iat)
	var d held
	d.subKey = delta.SubKey
	d.tokens, d.subjects = map[[signer.RevocationDigestSize]byte]int64{}, map[string]int64{}
	d.apply(t, delta)
	if delta.Since == 0 || delta.Since > h.iat || len(d.tokens) != 10 || len(d.subjects) != 1 {
		t.Fatalf("delta since %d (held %d): %d tokens, %d subjects", delta.Since, h.iat, len(d.tokens), len(d.subjects))
	}
	if deltaSize > size/20 {
		t.Fatalf("a delta of 11 entries weighs %d bytes, the whole list %d", deltaSize, size)
	}
	h.apply(t, delta)
	now, _ := fetchList(t, s, 0)
	var want held
	want.apply(t, now)
	if !maps.Equal(h.tokens, want.tokens) || !maps.Equal(h.subjects, want.subjects) {
		t.Fatalf("the list with the delta applied (%d tokens, %d subjects) differs from the whole list (%d, %d)", len(h.tokens), len(h.subjects), len(want.tokens), len(want.subjects))
	}
	// A revocation in the margin before since is sent again: a replica may
	// have published it late.
	revoke(1, "late-")
	c.t = c.t.Add(time.Minute)
	again, _ := fetchList(t, s, h.iat)
	if len(again.Tokens) == 0 || again.Since == 0 {
		t.Fatalf("the delta right after: %+v", again)
	}
	// Beyond the horizon: the whole list.
	c.t = c.t.Add(2 * time.Hour)
	revoke(1, "much-later-")
	old, _ := fetchList(t, s, h.iat)
	if old.Since != 0 {
		t.Fatalf("a since beyond the horizon got a delta: %+v", old.Since)
	}
}

// BenchmarkRevocationListSize reports the list's bytes per revoked token
// and the size of a delta after 1,000 revocations with 100,000 in force.
func BenchmarkRevocationListSize(b *testing.B) {
	s, c, _, p := setup(b, keystore.ES256)
	x := s.Revocations()
	add := func(n int, prefix string) {
		for i := range n {
			if err := x.Add(tokenstate.Revocation{KeySet: "s", JTI: fmt.Sprint(prefix, i), Expires: c.t.Add(p.TokenTTL + p.Leeway), RevokedAt: c.t}, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	_, empty := fetchList(b, s, 0)
	add(100_000, "a-")
	c.t = c.t.Add(3 * time.Minute)
	full, size := fetchList(b, s, 0)
	c.t = c.t.Add(5 * time.Minute)
	add(1000, "b-")
	c.t = c.t.Add(time.Minute)
	var deltaSize int
	for b.Loop() {
		_, deltaSize = fetchList(b, s, full.IssuedAt)
	}
	b.ReportMetric(float64(size-empty)/100_000, "bytes/revoked")
	b.ReportMetric(float64(size), "list-bytes@100k")
	b.ReportMetric(float64(deltaSize), "delta-bytes@1k-of-100k")
}
