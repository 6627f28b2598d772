package api_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/audit"
	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/internal/authguard"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
)

// The review's attack: every unauthenticated request wrote an audit record
// (93,000 in 3 s from one client). 10,000 of them now add a bounded number
// of records, most are answered 429 with Retry-After, and a caller with a
// valid token from the same address is never refused.
func TestUnauthenticatedFloodIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(audit.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	clock := keystoretest.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	guard := authguard.New(authguard.Options{Now: clock.Now, Record: log.Note})
	h, _ := apitest.Handler(t, apitest.Options{Audit: log, AuthGuard: guard}, keystore.Policy{Name: "app", Algorithm: keystore.ES256,
		Rotation: "@daily", TokenTTL: 5 * time.Minute, JWKSMaxAge: time.Minute})
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	send := func(token string) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/keysets/app/sign", strings.NewReader(`{"claims":{}}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	codes := map[int]int{}
	for i := range 10000 {
		tok := ""
		if i%2 == 0 {
			tok = "wrong-token-" + strconv.Itoa(i)
		}
		resp := send(tok)
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 {
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
				t.Fatalf("429 without a Retry-After in seconds: %q", resp.Header.Get("Retry-After"))
			}
		}
		if i == 5000 {
			if resp := send(apitest.ServiceToken); resp.StatusCode != 200 {
				t.Fatalf("a valid caller from the flooding address: %d", resp.StatusCode)
			}
		}
	}
	if codes[401] != authguard.DefaultBurst || codes[429] != 10000-authguard.DefaultBurst {
		t.Fatalf("answers: %v", codes)
	}
	clock.Add(time.Minute)
	guard.Flush()
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	records, counted := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Event == audit.EventAuthFailed {
			records++
			counted += r.Count
		}
	}
	// Two reasons (missing, unknown_token), each one record at once and
	// one summary.
	if records != 4 || counted != 10000 {
		t.Fatalf("auth_failed records: %d counting %d failures (want 4 counting 10000)", records, counted)
	}
}

// A 700,000-byte kid in a forged token came back whole in the verify
// answer and the audit record; both are capped now.
func TestHugeKIDIsCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(audit.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := apitest.Handler(t, apitest.Options{Audit: log}, keystore.Policy{Name: "app", Algorithm: keystore.ES256,
		Rotation: "@daily", TokenTTL: 5 * time.Minute, JWKSMaxAge: time.Minute})
	srv := httptest.NewServer(h)
	defer srv.Close()
	b64 := base64URL
	forged := b64(`{"alg":"ES256","kid":"`+strings.Repeat("k", 700000)+`"}`) + "." + b64(`{"exp":9999999999}`) + ".AAAA"
	body, _ := json.Marshal(map[string]string{"token": forged})
	req, _ := http.NewRequest("POST", srv.URL+"/v1/keysets/app/verify", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+apitest.ServiceToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(answer) > 1000 || !strings.Contains(string(answer), "unknown_key") {
		t.Fatalf("verify answer: %d, %d bytes: %.300s", resp.StatusCode, len(answer), answer)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() > 2000 {
		t.Fatalf("audit trail grew by %d bytes for one verification", fi.Size())
	}
}

func base64URL(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
