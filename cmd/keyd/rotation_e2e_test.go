package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// cachingVerifier is a strict JWKS client written for these tests with
// go-jose: it keeps a fetched JWKS for exactly the Cache-Control max-age
// and never refetches early, not even for an unknown kid. A keyd that let a
// key sign before it had been published for jwks_max_age would make it
// fail.
type cachingVerifier struct {
	url     string
	mu      sync.Mutex
	set     jose.JSONWebKeySet
	expires time.Time
	fetches int
}

func (c *cachingVerifier) keys() (jose.JSONWebKeySet, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Now().Before(c.expires) {
		return c.set, nil
	}
	resp, err := http.Get(c.url)
	if err != nil {
		return c.set, err
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return c.set, err
	}
	maxAge := 0
	for _, part := range strings.Split(resp.Header.Get("Cache-Control"), ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "max-age="); ok {
			maxAge, _ = strconv.Atoi(v)
		}
	}
	c.set, c.expires = set, time.Now().Add(time.Duration(maxAge)*time.Second)
	c.fetches++
	return set, nil
}

func (c *cachingVerifier) verify(token string) error {
	set, err := c.keys()
	if err != nil {
		return err
	}
	parsed, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA})
	if err != nil {
		return err
	}
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) == 0 {
		return fmt.Errorf("kid %s not in the cached JWKS", parsed.Headers[0].KeyID)
	}
	var claims josejwt.Claims
	if err := parsed.Claims(keys[0], &claims); err != nil {
		return err
	}
	return claims.ValidateWithLeeway(josejwt.Expected{Time: time.Now()}, time.Second)
}

func signToken(t *testing.T, rec *recorder, d *daemonProc, keyset string) (token, kid string, exp time.Time, ok bool) {
	t.Helper()
	status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/"+keyset+"/sign", serviceToken, `{"claims": {"sub": "load"}}`)
	if status != 200 {
		return "", "", time.Time{}, false
	}
	var resp struct {
		Token, KID string
		ExpiresAt  time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Token, resp.KID, resp.ExpiresAt, true
}

func writeRotationConfig(t *testing.T, dir, keysets string) string {
	t.Helper()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage: {backend: file, file: {path: %q}}
keysets:
%sauth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, filepath.Join(dir, "keyd.db"), keysets, config.TokenHash(adminToken), config.TokenHash(serviceToken))
	path := filepath.Join(dir, "keyd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRotationNeverBreaksACachingVerifier(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 15 seconds")
	}
	dir := t.TempDir()
	cfg := writeRotationConfig(t, dir, `  - {name: fast, algorithm: ES256, rotation: "@every 2s", token_ttl: 3s, jwks_max_age: 2s, leeway: 1s}
  - {name: manual, algorithm: ES256, rotation: "@daily", token_ttl: 3s, jwks_max_age: 2s, leeway: 1s}
`)
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	d := startDaemon(t, env, "--config", cfg)
	rec := &recorder{}

	// The 409 rule and force, through the API and the CLI.
	status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/manual/rotate", adminToken, `{}`)
	if status != 409 || !strings.Contains(string(body), `"safe_at"`) {
		t.Fatalf("rotate a fresh key set: %d %s", status, body)
	}
	cliEnv := append(env, "KEYD_ADDR="+d.addr, "KEYD_TOKEN="+adminToken)
	if code, out := runKeyd(t, cliEnv, "", "rotate", "manual"); code == 0 || !strings.Contains(out, "409") {
		t.Fatalf("keyd rotate too early: %d %s", code, out)
	}
	if code, out := runKeyd(t, cliEnv, "", "rotate", "--force", "manual"); code != 0 || !strings.Contains(out, "retired") {
		t.Fatalf("keyd rotate --force: %d %s", code, out)
	}
	if !strings.Contains(d.log(), "forced rotation") {
		t.Fatal("forced rotation not logged")
	}

	verifier := &cachingVerifier{url: d.addr + "/v1/keysets/fast/jwks.json"}
	type issued struct {
		token, kid string
		exp        time.Time
		rechecked  bool
	}
	var tokens []*issued
	var kids []string
	failures := 0
	deadline := time.Now().Add(13 * time.Second)
	for time.Now().Before(deadline) {
		tok, kid, exp, ok := signToken(t, rec, d, "fast")
		if !ok {
			t.Fatal("sign failed during rotations")
		}
		if len(kids) == 0 || kids[len(kids)-1] != kid {
			kids = append(kids, kid)
		}
		if err := verifier.verify(tok); err != nil {
			failures++
			t.Errorf("fresh token of %s rejected by the caching verifier: %v", kid, err)
		}
		tokens = append(tokens, &issued{token: tok, kid: kid, exp: exp})
		// Every token is verified again shortly before it expires, when
		// its key may have been retired meanwhile.
		for _, it := range tokens {
			if !it.rechecked && time.Until(it.exp) < 1500*time.Millisecond && time.Until(it.exp) > 500*time.Millisecond {
				it.rechecked = true
				if err := verifier.verify(it.token); err != nil {
					failures++
					t.Errorf("token of %s rejected %v before it expired: %v", it.kid, time.Until(it.exp), err)
				}
			}
		}
		time.Sleep(50 * time.Millisecond) // a load loop, not waiting for time to pass
	}
	if failures != 0 {
		t.Fatalf("%d verification failures", failures)
	}
	// "@every 2s", but a pending key signs only after jwks_max_age (2s) +
	// the 1s publish margin: a rotation every 3s.
	if len(kids) < 4 {
		t.Fatalf("only %d signing keys in 13s of rotating every 3s", len(kids))
	}
	// The key that signed first has been retired for far longer than its
	// grace (3s + 2s + 1s): it must be gone from the JWKS.
	_, body, _ = rec.call(t, "GET", d.addr+"/v1/keysets/fast/jwks.json", "", "")
	if strings.Contains(string(body), kids[0]) {
		t.Fatalf("first key %s still published long after its grace", kids[0])
	}
	if strings.Count(string(body), `"kid"`) > 6 {
		t.Fatalf("JWKS keeps too many keys: %s", body)
	}
	t.Logf("%d tokens, %d signing keys, %d JWKS fetches, 0 failures", len(tokens), len(kids), verifier.fetches)
	d.stop()
}

func TestCrashDuringRotationLeavesAConsistentStore(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts keyd many times")
	}
	dir := t.TempDir()
	cfg := writeRotationConfig(t, dir, `  - {name: ec, algorithm: ES256, rotation: "@every 1s", token_ttl: 2s, jwks_max_age: 1s, leeway: 1s}
  - {name: rsa, algorithm: RS256, rsa_bits: 2048, rotation: "@every 1s", token_ttl: 2s, jwks_max_age: 1s, leeway: 1s}
`)
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	rec := &recorder{}
	type issued struct {
		keyset, token, kid string
		exp                time.Time
	}
	var live []issued
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	const rounds = 12
	for round := range rounds {
		d := startDaemon(t, env, "--config", cfg)
		checkInvariants(t, rec, d, round)
		for _, it := range live {
			if time.Until(it.exp) > 200*time.Millisecond {
				_, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/"+it.keyset+"/verify", serviceToken, `{"token": "`+it.token+`"}`)
				if !strings.Contains(string(body), `"valid":true`) {
					t.Fatalf("round %d: token of %s/%s (valid %v more) rejected after a crash: %s", round, it.keyset, it.kid, time.Until(it.exp), body)
				}
				_, jwksBody, _ := rec.call(t, "GET", d.addr+"/v1/keysets/"+it.keyset+"/jwks.json", "", "")
				if !strings.Contains(string(jwksBody), it.kid) {
					t.Fatalf("round %d: key %s signed a valid token but is not published", round, it.kid)
				}
			}
		}
		// Sign for a random while, then kill -9 at a random moment.
		until := time.Now().Add(time.Duration(300+rng.IntN(2200)) * time.Millisecond)
		live = live[:0]
		for time.Now().Before(until) {
			for _, ks := range []string{"ec", "rsa"} {
				if tok, kid, exp, ok := signToken(t, rec, d, ks); ok {
					live = append(live, issued{ks, tok, kid, exp})
				}
			}
		}
		if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-d.done
	}
	d := startDaemon(t, env, "--config", cfg)
	checkInvariants(t, rec, d, rounds)
	d.stop()
}

// checkInvariants: every key set has exactly one active key and it is
// published, and at most one pending key.
func checkInvariants(t *testing.T, rec *recorder, d *daemonProc, round int) {
	t.Helper()
	status, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets", adminToken, "")
	if status != 200 {
		t.Fatalf("round %d: list: %d %s", round, status, body)
	}
	var out struct {
		KeySets []struct {
			Name string
			Keys []struct {
				KID, State string
				Published  bool
			}
		}
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	for _, ks := range out.KeySets {
		active, pending := 0, 0
		for _, k := range ks.Keys {
			switch k.State {
			case "active":
				active++
				_, jwksBody, _ := rec.call(t, "GET", d.addr+"/v1/keysets/"+ks.Name+"/jwks.json", "", "")
				if !k.Published || !strings.Contains(string(jwksBody), k.KID) {
					t.Fatalf("round %d: active key %s of %s not published", round, k.KID, ks.Name)
				}
			case "pending":
				pending++
			}
		}
		if active != 1 || pending > 1 {
			t.Fatalf("round %d: %s has %d active and %d pending keys", round, ks.Name, active, pending)
		}
	}
}
