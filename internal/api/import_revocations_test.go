package api_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
)

// A team's denylist comes along: one JSON object a line, tokens by jti and
// exp and subjects; good lines are revoked, an expired token is counted and
// skipped, and each bad line is named with its number and why, the rest
// imported all the same. Importing again changes nothing.
func TestRevocationImport(t *testing.T) {
	p := keystore.Policy{Name: "es", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute, Leeway: 30 * time.Second}
	s := apitest.Serve(t, nil, p)
	stolen, alice, keep := signAt(t, s, "es", `{"sub":"x"}`), signAt(t, s, "es", `{"sub":"alice"}`), signAt(t, s, "es", `{"sub":"bob"}`)
	now := s.Clock.Now()
	lines := []string{
		fmt.Sprintf(`{"jti":%q,"exp":%d,"reason":"from redis"}`, jtiOf(t, stolen.Token), stolen.ExpiresAt.Unix()),
		`{"sub":"alice"}`,
		"",
		fmt.Sprintf(`{"jti":"old","exp":%d}`, now.Add(-time.Hour).Unix()),
		`{"jti":"a"}`,
		`not json`,
		`{"jti":"a","exp":1,"expires":2}`,
		fmt.Sprintf(`{"jti":"far","exp":%d}`, now.Add(24*time.Hour).Unix()),
		`{"jti":"a","sub":"b","exp":1}`,
		fmt.Sprintf(`{"sub":"carol","before":%d}`, now.Add(time.Hour).Unix()),
	}
	body := strings.Join(lines, "\n")
	code, out := s.Call("POST", "/v1/keysets/es/revocations:import", apitest.AdminToken, body)
	var res api.ImportResult
	if code != 200 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("import: %d %s", code, out)
	}
	if res.Imported != 2 || res.Expired != 1 || res.Refused != 6 || len(res.Errors) != 6 || res.InForce != 2 {
		t.Fatalf("import: %+v", res)
	}
	for i, want := range []struct {
		line int
		says string
	}{{5, `"exp" goes with "jti"`}, {6, "not a JSON object"}, {7, "unknown field"}, {8, "beyond"}, {9, "one of"}, {10, "future"}} {
		if e := res.Errors[i]; e.Line != want.line || !strings.Contains(e.Error, want.says) {
			t.Errorf("error %d: %+v, want line %d saying %q", i, e, want.line, want.says)
		}
	}
	for tok, want := range map[string]string{stolen.Token: signer.CodeRevoked, alice.Token: signer.CodeRevoked, keep.Token: ""} {
		if got := verifyCode(t, s, "es", tok); got != want {
			t.Errorf("after the import: %q, want %q", got, want)
		}
	}
	if code, out := s.Call("POST", "/v1/keysets/es/revocations:import", apitest.AdminToken, body); code != 200 || !strings.Contains(out, `"in_force":2`) {
		t.Fatalf("the same import again: %d %s", code, out)
	}
	if code, _ := s.Call("POST", "/v1/keysets/es/revocations:import", apitest.ServiceToken, body); code != 403 {
		t.Fatalf("an import without admin: %d", code)
	}
}
