package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/externaljwt/apis/v1"

	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testvault"
)

var vaultPrefixes atomic.Int64

func writeVaultConfig(t *testing.T, srv *testvault.Server, keysets string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
storage:
  backend: vault
  vault:
    address: %q
    mount: secret
    prefix: "keyd-e2e-%d-%d"
    auth: {method: token}
    poll_interval: 1s
    timeout: 1s
keysets:
%sauth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, srv.Addr, os.Getpid(), vaultPrefixes.Add(1), keysets, config.TokenHash(adminToken), config.TokenHash(serviceToken))
	path := filepath.Join(dir, "keyd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var vaultEnv = []string{"VAULT_TOKEN=" + testvault.RootToken, "KEYD_MASTER_KEY="}

type keyInfo struct {
	KID         string
	State       string
	ActivatedAt time.Time `json:"activated_at"`
}

func keysOf(t *testing.T, rec *recorder, d *daemonProc, name string) []keyInfo {
	t.Helper()
	status, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets/"+name, adminToken, "")
	if status != 200 {
		t.Fatalf("get %s: %d %s", name, status, body)
	}
	var out struct{ Keys []keyInfo }
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Keys
}

func TestReplicasShareOneVault(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three daemons for about 20 seconds")
	}
	srv := testvault.Start(t)
	cfg := writeVaultConfig(t, srv, `  - {name: shared, algorithm: ES256, rotation: "@every 3s", token_ttl: 3s, jwks_max_age: 2s, leeway: 1s}
`)
	var replicas []*daemonProc
	for range 3 {
		replicas = append(replicas, startDaemon(t, vaultEnv, "--config", cfg))
	}
	rec := &recorder{}
	var verifiers []*cachingVerifier
	for _, d := range replicas {
		verifiers = append(verifiers, &cachingVerifier{url: d.addr + "/v1/keysets/shared/jwks.json"})
	}
	activated := map[string]time.Time{}
	failures, tokens, samples, agreed := 0, 0, 0, 0
	var diverged time.Time
	longestDivergence := time.Duration(0)
	all := slices.Clone(replicas)
	start := time.Now()
	for i := 0; time.Since(start) < 20*time.Second; i++ {
		// Halfway, one replica dies (kill -9, maybe mid-tick): the others
		// go on rotating, one rotation per tick.
		if len(replicas) == 3 && time.Since(start) > 10*time.Second {
			_ = replicas[0].cmd.Process.Kill()
			<-replicas[0].done
			replicas, verifiers = replicas[1:], verifiers[1:]
		}
		d := replicas[i%len(replicas)]
		tok, kid, _, ok := signToken(t, rec, d, "shared")
		if !ok {
			t.Fatalf("replica %d could not sign", i%len(replicas))
		}
		tokens++
		for j, v := range verifiers {
			if err := v.verify(tok); err != nil {
				failures++
				t.Errorf("token of %s signed by replica %d rejected by a verifier caching replica %d's JWKS: %v", kid, i%len(replicas), j, err)
			}
		}
		if i%5 == 0 {
			for _, k := range keysOf(t, rec, d, "shared") {
				if !k.ActivatedAt.IsZero() {
					activated[k.KID] = k.ActivatedAt
				}
			}
			var tags []string
			for _, r := range replicas {
				_, _, hdr := rec.call(t, "GET", r.addr+"/v1/keysets/shared/jwks.json", "", "")
				tags = append(tags, hdr.Get("ETag"))
			}
			samples++
			if !slices.ContainsFunc(tags, func(tag string) bool { return tag != tags[0] }) {
				agreed++
				diverged = time.Time{}
			} else if diverged.IsZero() {
				diverged = time.Now()
			} else if d := time.Since(diverged); d > longestDivergence {
				longestDivergence = d
			}
		}
		time.Sleep(30 * time.Millisecond) // pacing the load loop
	}
	if failures > 0 {
		t.Fatalf("%d verification failures out of %d tokens", failures, tokens)
	}
	// Exactly one rotation per tick: activations about 3s apart, never two
	// at once (a tick rotated twice) and never a gap of two periods (a lost
	// tick).
	var times []time.Time
	for _, at := range activated {
		times = append(times, at)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	// The schedule says every 3s; each pending key must first be published
	// for jwks_max_age (2s) + poll_interval (1s) + the 1s margin, so
	// rotations come every 4s. Two activations closer than that would be a
	// tick rotating twice; a gap of two periods, a lost tick. (A rotation
	// may come late on a loaded machine: a slow Vault answer is retried.)
	if len(times) < 4 {
		t.Fatalf("only %d activations seen in 20s of rotations every 4s", len(times))
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 3900*time.Millisecond || gap >= 8*time.Second {
			for _, d := range all {
				t.Logf("replica log:\n%s", d.log())
			}
			t.Fatalf("activations %v apart (rotation every 4s): %v", gap, times)
		}
	}
	// Every replica's JWKS converges within the poll interval after a change.
	if longestDivergence > 2*time.Second {
		t.Fatalf("replicas served different JWKS documents for %v", longestDivergence)
	}
	t.Logf("%d tokens, %d activations, 0 failures; JWKS identical in %d of %d samples, longest divergence %v",
		tokens, len(times), agreed, samples, longestDivergence)
	rotationsLogged := 0
	for _, d := range all {
		rotationsLogged += strings.Count(d.log(), `"msg":"scheduled rotation"`)
	}
	for _, d := range replicas {
		d.stop()
	}
	if rotationsLogged < len(times)-2 || rotationsLogged > len(times)+2 {
		t.Fatalf("%d rotations logged across replicas for %d activations", rotationsLogged, len(times))
	}

	// Manual rotate and revoke through one replica reach the others.
	replicas = replicas[:0]
	for range 2 {
		replicas = append(replicas, startDaemon(t, vaultEnv, "--config", cfg))
	}
	status, body, _ := rec.call(t, "POST", replicas[0].addr+"/v1/keysets/shared/rotate", adminToken, `{"force": true}`)
	if status != 200 {
		t.Fatalf("forced rotate: %d %s", status, body)
	}
	var active string
	for _, k := range keysOf(t, rec, replicas[0], "shared") {
		if k.State == "active" {
			active = k.KID
		}
	}
	if status, body, _ = rec.call(t, "POST", replicas[0].addr+"/v1/keysets/shared/keys/"+active+"/revoke", adminToken, ``); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body, _ = rec.call(t, "GET", replicas[1].addr+"/v1/keysets/shared/jwks.json", "", "")
		if !strings.Contains(string(body), active) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key %s still served by the other replica after 5s", active)
		}
		time.Sleep(100 * time.Millisecond) // polling another process
	}
	for _, d := range replicas {
		d.stop()
	}
}

func TestVaultOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("freezes Vault for several seconds")
	}
	srv := testvault.Start(t)
	cfg := writeVaultConfig(t, srv, `  - {name: out, algorithm: EdDSA, rotation: "@every 3s", token_ttl: 3s, jwks_max_age: 2s, leeway: 1s}
`)
	rec := &recorder{}
	d := startDaemon(t, vaultEnv, "--config", cfg)
	verifier := &cachingVerifier{url: d.addr + "/v1/keysets/out/jwks.json"}
	signAndVerify := func(phase string) {
		t.Helper()
		tok, _, _, ok := signToken(t, rec, d, "out")
		if !ok {
			t.Fatalf("%s: sign failed", phase)
		}
		if err := verifier.verify(tok); err != nil {
			t.Fatalf("%s: token rejected: %v", phase, err)
		}
	}
	for range 20 {
		signAndVerify("before the outage")
	}
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	outage := time.Now()
	sawDegraded := false
	// Load from a few concurrent clients while Vault is frozen.
	var wg sync.WaitGroup
	var loadFailures atomic.Int64
	for range 4 {
		wg.Go(func() {
			for time.Since(outage) < 6*time.Second {
				// Not rec.call: t.Fatal must not run outside the test goroutine.
				req, _ := http.NewRequest("POST", d.addr+"/v1/keysets/out/sign", strings.NewReader(`{"claims": {}}`))
				req.Header.Set("Authorization", "Bearer "+serviceToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != 200 {
					loadFailures.Add(1)
				}
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	for time.Since(outage) < 6*time.Second {
		signAndVerify("during the outage")
		if status, _, _ := rec.call(t, "GET", d.addr+"/.well-known/jwks.json", "", ""); status != 200 {
			t.Fatalf("JWKS answered %d during the outage", status)
		}
		status, body, _ := rec.call(t, "GET", d.addr+"/readyz", "", "")
		if status == 200 && strings.Contains(string(body), `"store":"unavailable"`) && strings.Contains(string(body), `"reason"`) {
			sawDegraded = true
		}
		time.Sleep(50 * time.Millisecond) // pacing the load loop
	}
	wg.Wait()
	if n := loadFailures.Load(); n != 0 {
		t.Fatalf("%d sign requests failed during the outage", n)
	}
	if !sawDegraded {
		t.Fatal("/readyz never reported the store as unavailable during the outage")
	}
	// A daemon started during the outage is not ready and says why.
	late, err := launch(t, vaultEnv, "--config", cfg) // it listens even without its store
	if err != nil {
		t.Fatal(err)
	}
	status, body, _ := rec.call(t, "GET", late.addr+"/readyz", "", "")
	if status != 503 || !strings.Contains(string(body), "unavailable") {
		t.Fatalf("readyz of a daemon started during the outage: %d %s", status, body)
	}
	if status, _, _ := rec.call(t, "GET", late.addr+"/.well-known/jwks.json", "", ""); status != 503 {
		t.Fatalf("JWKS of a daemon that has no keys yet: %d", status)
	}

	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for _, dd := range []*daemonProc{d, late} {
		for {
			status, body, _ := rec.call(t, "GET", dd.addr+"/readyz", "", "")
			if status == 200 && strings.Contains(string(body), `"status":"ready"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not ready again after Vault returned: %d %s\n%s", status, body, dd.log())
			}
			time.Sleep(100 * time.Millisecond) // polling another process
		}
	}
	for range 20 {
		signAndVerify("after the outage")
	}
	checkInvariants(t, rec, d, 0)
	checkInvariants(t, rec, late, 0)
	late.stop()
	d.stop()
}

// TestRevocationReachesEveryReplica revokes a token and a subject through
// one of three replicas sharing a real Vault, and checks that every replica
// rejects them within the poll interval (1s here).
func TestRevocationReachesEveryReplica(t *testing.T) {
	srv := testvault.Start(t)
	cfg := writeVaultConfig(t, srv, "  - {name: es, algorithm: ES256, rotation: \"@daily\", token_ttl: 10m, jwks_max_age: 5s}\n")
	var replicas []*daemonProc
	for range 3 {
		replicas = append(replicas, startDaemon(t, vaultEnv, "--config", cfg))
	}
	rec := &recorder{}
	sign := func(d *daemonProc, sub string) string {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"`+sub+`"}}`)
		var out struct{ Token string }
		if status != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("sign: %d %s", status, body)
		}
		return out.Token
	}
	stolen, alice, bob := sign(replicas[1], "mallory"), sign(replicas[2], "alice"), sign(replicas[0], "bob")
	start := time.Now()
	for _, body := range []string{`{"token":"` + stolen + `"}`, `{"sub":"alice"}`} {
		if status, out, _ := rec.call(t, "POST", replicas[0].addr+"/v1/keysets/es/revocations", adminToken, body); status != 200 {
			t.Fatalf("revoke: %d %s", status, out)
		}
	}
	verdict := func(d *daemonProc, tok string) string {
		_, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`)
		var out struct {
			Valid bool
			Code  string
		}
		_ = json.Unmarshal(body, &out)
		if out.Valid {
			return "valid"
		}
		return out.Code
	}
	for i, d := range replicas {
		for {
			if verdict(d, stolen) == "token_revoked" && verdict(d, alice) == "token_revoked" {
				break
			}
			if time.Since(start) > 5*time.Second { // poll_interval 1s, with room for a loaded machine
				t.Fatalf("replica %d still accepts revoked tokens %v after the revocation", i, time.Since(start))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if v := verdict(d, bob); v != "valid" {
			t.Fatalf("replica %d rejects an unrevoked token: %s", i, v)
		}
	}
	t.Logf("every replica enforced the revocations %v after they were made", time.Since(start).Round(10*time.Millisecond))
}

// TestRefreshAcrossReplicas: token pairs on three replicas sharing a real
// Vault. A refresh token works at any replica, once; raced at two replicas
// it yields exactly one new pair and one refresh_token_reused, and the
// reuse revokes the login everywhere.
func TestRefreshAcrossReplicas(t *testing.T) {
	srv := testvault.Start(t)
	cfg := writeVaultConfig(t, srv, "  - {name: app, algorithm: EdDSA, rotation: \"@daily\", token_ttl: 5m, jwks_max_age: 5s, refresh: {ttl: 24h}}\n"+
		"  - {name: plain, algorithm: ES256, rotation: \"@daily\", token_ttl: 5m, jwks_max_age: 5s}\n")
	var replicas []*daemonProc
	for range 3 {
		replicas = append(replicas, startDaemon(t, vaultEnv, "--config", cfg))
	}
	rec := &recorder{}
	type pair struct {
		AccessToken      string `json:"access_token"`
		RefreshToken     string `json:"refresh_token"`
		TokenType        string `json:"token_type"`
		ExpiresIn        int64  `json:"expires_in"`
		RefreshExpiresIn int64  `json:"refresh_expires_in"`
	}
	call := func(d *daemonProc, path, body string) (int, pair, string) {
		status, out, _ := rec.call(t, "POST", d.addr+path, serviceToken, body)
		var p pair
		_ = json.Unmarshal(out, &p)
		return status, p, string(out)
	}
	status, login, body := call(replicas[0], "/v1/keysets/app/token-pair", `{"claims":{"sub":"alice","scope":"read"}}`)
	if status != 200 || login.TokenType != "Bearer" || login.ExpiresIn != 300 || login.RefreshExpiresIn < 86390 || login.RefreshToken == "" {
		t.Fatalf("token-pair: %d %s", status, body)
	}
	// The access token verifies; the refresh token is no access token.
	for tok, valid := range map[string]bool{login.AccessToken: true, login.RefreshToken: false} {
		_, out, _ := rec.call(t, "POST", replicas[2].addr+"/v1/keysets/app/verify", serviceToken, `{"token":"`+tok+`"}`)
		if strings.Contains(string(out), `"valid":true`) != valid {
			t.Fatalf("verify: %s", out)
		}
	}
	// Refreshed at another replica.
	status, second, body := call(replicas[1], "/v1/keysets/app/refresh", `{"refresh_token":"`+login.RefreshToken+`"}`)
	if status != 200 || second.AccessToken == login.AccessToken || second.RefreshToken == login.RefreshToken {
		t.Fatalf("refresh at another replica: %d %s", status, body)
	}
	_, out, _ := rec.call(t, "POST", replicas[0].addr+"/v1/keysets/app/verify", serviceToken, `{"token":"`+second.AccessToken+`"}`)
	if !strings.Contains(string(out), `"sub":"alice"`) || !strings.Contains(string(out), `"scope":"read"`) {
		t.Fatalf("refreshed access token claims: %s", out)
	}
	// The race: the same refresh token at two replicas at once.
	type result struct {
		status int
		body   string
	}
	results := make(chan result, 2)
	for _, d := range replicas[1:] {
		go func() {
			status, _, body := call(d, "/v1/keysets/app/refresh", `{"refresh_token":"`+second.RefreshToken+`"}`)
			results <- result{status, body}
		}()
	}
	won, reused := 0, 0
	var winner pair
	for range 2 {
		r := <-results
		switch {
		case r.status == 200:
			won++
			_ = json.Unmarshal([]byte(r.body), &winner)
		case r.status == 401 && strings.Contains(r.body, `"code":"refresh_token_reused"`):
			reused++
		default:
			t.Fatalf("racing refresh: %d %s", r.status, r.body)
		}
	}
	if won != 1 || reused != 1 {
		t.Fatalf("race: %d pairs and %d reuses, want one of each", won, reused)
	}
	// The reuse revoked the login: the winner's refresh token is dead too,
	// whichever replica sees it.
	if status, _, body := call(replicas[0], "/v1/keysets/app/refresh", `{"refresh_token":"`+winner.RefreshToken+`"}`); status != 401 || !strings.Contains(body, "refresh_token_revoked") {
		t.Fatalf("the winner's token after the reuse: %d %s", status, body)
	}
	for _, tc := range []struct{ path, body, code string }{
		{"/v1/keysets/app/refresh", `{"refresh_token":"krt_garbage"}`, "refresh_token_invalid"},
		{"/v1/keysets/plain/token-pair", `{"claims":{}}`, "refresh_not_enabled"},
		{"/v1/keysets/app/token-pair", `{"claims":{"jti":"mine"}}`, "bad_request"},
	} {
		if _, _, body := call(replicas[2], tc.path, tc.body); !strings.Contains(body, tc.code) {
			t.Errorf("%s %s: %s, want %s", tc.path, tc.body, body, tc.code)
		}
	}
}

// TestKubeSocketWaitsForTheStore: with the store unreachable at start, keyd
// listens for HTTP (not ready) but opens the Kubernetes signer's socket
// only once the key sets are loaded, so kube-apiserver waits for it
// instead of failing its first FetchKeys and restarting in a loop.
func TestKubeSocketWaitsForTheStore(t *testing.T) {
	if testing.Short() {
		t.Skip("freezes Vault for several seconds")
	}
	srv := testvault.Start(t)
	sockDir, err := os.MkdirTemp("", "kube")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	socket := filepath.Join(sockDir, "kube.sock")
	cfg := writeVaultConfig(t, srv, `  - {name: kube-sa, algorithm: ES256, rotation: "@daily", token_ttl: 1h, jwks_max_age: 2s}
`)
	appendConfig(t, cfg, fmt.Sprintf("kubernetes: {socket: %q, keyset: kube-sa}\n", socket))
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	d, err := launch(t, vaultEnv, "--config", cfg) // it listens without its store
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	if status, _, _ := rec.call(t, "GET", d.addr+"/readyz", "", ""); status != 503 {
		t.Fatalf("readyz with the store down: %d", status)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("the socket exists before the key sets are loaded: %v", err)
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket 45 s after the store returned:\n%s", d.log())
		}
		time.Sleep(100 * time.Millisecond) // polling another process
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := kubeSigner(t, socket).FetchKeys(ctx, &v1.FetchKeysRequest{})
	if err != nil || len(keys.Keys) != 2 {
		t.Fatalf("FetchKeys once the socket is there: %v, %v", keys, err)
	}
	d.stop()
}
