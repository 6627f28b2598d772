package jwks_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
)

var now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func policy(name string, maxAge time.Duration) keystore.Policy {
	return keystore.Policy{Name: name, JWKSMaxAge: maxAge, TokenTTL: time.Minute}
}

func TestPublishedKeysOnly(t *testing.T) {
	for _, alg := range keystore.Algorithms {
		ks := keystoretest.KeySet(t, "s", alg)
		active, _ := ks.Active()
		pending, _ := ks.Pending()
		ks, _ = keystore.Rotate(ks, keystoretest.NewKey(t, alg), now) // active -> retired
		third, _ := ks.Pending()
		ks, _, _ = keystore.Revoke(ks, third.ID, keystoretest.NewKey(t, alg), now)
		fourth, _ := ks.Pending()

		p := jwks.New()
		if err := p.Load(policy("s", time.Minute), ks); err != nil {
			t.Fatal(err)
		}
		doc, _ := p.KeySet("s")
		var raw struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal(doc.Body, &raw); err != nil || raw.Keys == nil {
			t.Fatalf("%s: %s: %v", alg, doc.Body, err)
		}
		var kids []string
		for _, k := range raw.Keys {
			for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
				if _, ok := k[private]; ok {
					t.Fatalf("%s: private parameter %q published: %s", alg, private, doc.Body)
				}
			}
			if k["alg"] != string(alg) || k["use"] != "sig" {
				t.Fatalf("%s: key %v lacks alg/use", alg, k)
			}
			kids = append(kids, k["kid"].(string))
		}
		want := []string{active.ID, pending.ID, fourth.ID} // retired, active, new pending; not the revoked one
		if alg.Symmetric() {
			want = nil
		}
		if !slices.Equal(kids, want) {
			t.Fatalf("%s: published %v, want %v", alg, kids, want)
		}
		var set jose.JSONWebKeySet // an independent parser accepts it
		if err := json.Unmarshal(doc.Body, &set); err != nil || len(set.Keys) != len(want) {
			t.Fatalf("%s: go-jose parse: %v (%d keys)", alg, err, len(set.Keys))
		}
		for _, k := range set.Keys {
			if !k.IsPublic() || !k.Valid() {
				t.Fatalf("%s: go-jose sees key %s as private or invalid", alg, k.KeyID)
			}
		}
	}
}

func TestServeCachingHeaders(t *testing.T) {
	p := jwks.New()
	a := keystoretest.KeySet(t, "a", keystore.ES256)
	a.Version = 1
	if err := p.Load(policy("a", 5*time.Minute), a); err != nil {
		t.Fatal(err)
	}
	if err := p.Load(policy("b", 2*time.Minute), keystoretest.KeySet(t, "b", keystore.EdDSA)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/a" {
			d, _ := p.KeySet("a")
			jwks.Write(w, r, d)
			return
		}
		jwks.Write(w, r, p.All())
	}))
	defer srv.Close()

	get := func(path, inm string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := get("/all", "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("Cache-Control") != "public, max-age=120" {
		t.Fatalf("all: %d %v", resp.StatusCode, resp.Header)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil || len(set.Keys) != 4 {
		t.Fatalf("all keys: %v, %d", err, len(set.Keys))
	}
	etag := resp.Header.Get("ETag")
	if len(etag) < 10 || etag[0] != '"' {
		t.Fatalf("ETag %q is not a strong quoted tag", etag)
	}
	if resp, body := get("/all", `"other", `+etag); resp.StatusCode != 304 || len(body) != 0 || resp.Header.Get("ETag") != etag {
		t.Fatalf("If-None-Match: %d %q", resp.StatusCode, body)
	}
	resp, _ = get("/a", "")
	if resp.Header.Get("Cache-Control") != "public, max-age=300" || resp.Header.Get("ETag") == etag {
		t.Fatalf("per-set headers %v", resp.Header)
	}

	// A change renders new documents with new ETags; an older version is ignored.
	rotated, _ := keystore.Rotate(a, keystoretest.NewKey(t, keystore.ES256), now)
	rotated.Version = 2
	if err := p.Load(policy("a", 5*time.Minute), rotated); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get("/all", etag); resp.StatusCode != 200 || resp.Header.Get("ETag") == etag {
		t.Fatalf("after rotation the old ETag still matches: %d", resp.StatusCode)
	}
	newTag := p.All().ETag
	if err := p.Load(policy("a", 5*time.Minute), a); err != nil {
		t.Fatal(err)
	}
	if p.All().ETag != newTag {
		t.Fatal("an older key set version replaced a newer one")
	}
}

func TestEmpty(t *testing.T) {
	if got := string(jwks.New().All().Body); got != `{"keys":[]}` {
		t.Fatalf("empty JWKS = %s", got)
	}
}

func TestDiscoveryDocument(t *testing.T) {
	p := jwks.New()
	if _, ok := p.Discovery(); ok {
		t.Fatal("a discovery document without an issuer")
	}
	for _, alg := range []keystore.Algorithm{keystore.ES256, keystore.RS256, keystore.HS256} {
		if err := p.Load(policy(string(alg), 2*time.Minute), keystoretest.KeySet(t, string(alg), alg)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SetIssuer("https://keys.example.com/"); err != nil {
		t.Fatal(err)
	}
	doc, ok := p.Discovery()
	if !ok || doc.MaxAge != 2*time.Minute || doc.ETag == "" {
		t.Fatalf("discovery = %+v, %v", doc, ok)
	}
	var d struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
		Types   []string `json:"response_types_supported"`
		Subject []string `json:"subject_types_supported"`
	}
	if err := json.Unmarshal(doc.Body, &d); err != nil {
		t.Fatal(err)
	}
	if d.Issuer != "https://keys.example.com" || d.JWKSURI != "https://keys.example.com/.well-known/jwks.json" ||
		!slices.Equal(d.Algs, []string{"ES256", "RS256"}) || !slices.Equal(d.Types, []string{"id_token"}) || !slices.Equal(d.Subject, []string{"public"}) {
		t.Fatalf("discovery = %s", doc.Body)
	}
}
