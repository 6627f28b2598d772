package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
)

// keyd revoke-token --from FILE (and - for stdin) brings a denylist along:
// the good lines are revoked, a bad one is named and makes the command
// exit 1, and the tokens it names no longer verify.
func TestRevokeTokenFromFile(t *testing.T) {
	dir := t.TempDir()
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	cfgPath := writeKeydConfig(t, dir, "", "")
	d := startDaemon(t, env, "--config", cfgPath)
	cli := []string{"KEYD_ADDR=" + d.addr, "KEYD_TOKEN=" + adminToken}
	rec := &recorder{}
	sign := func(sub string) string {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"`+sub+`"}}`)
		if status != 200 {
			t.Fatalf("sign: %d %s", status, body)
		}
		return strings.Split(strings.Split(string(body), `"token":"`)[1], `"`)[0]
	}
	stolen, alice := sign("bob"), sign("alice")
	list := filepath.Join(dir, "denylist.ndjson")
	writeFile(t, list, []byte(fmt.Sprintf("{\"jti\":%q,\"exp\":%d}\n{\"sub\":\"alice\"}\n{\"jti\":\"x\"}\n", jtiOf(t, stolen), time.Now().Add(10*time.Minute).Unix())))
	code, out := runKeyd(t, cli, "", "revoke-token", "--from", list, "es")
	if code != 1 || !strings.Contains(out, "imported 2 revocations") || !strings.Contains(out, `"line": 3`) || !strings.Contains(out, "1 lines were refused") {
		t.Fatalf("revoke-token --from: exit %d\n%s", code, out)
	}
	for _, tok := range []string{stolen, alice} {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`)
		if status != 200 || !strings.Contains(string(body), "token_revoked") {
			t.Fatalf("after the import: %d %s", status, body)
		}
	}
	if code, out := runKeyd(t, cli, "{\"sub\":\"carol\"}\n", "revoke-token", "--from", "-", "es"); code != 0 || !strings.Contains(out, `"imported": 1`) {
		t.Fatalf("revoke-token --from -: exit %d\n%s", code, out)
	}
}
