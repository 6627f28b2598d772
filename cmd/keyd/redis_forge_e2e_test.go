package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/testredis"
	"github.com/keyd-dev/keyd/tokenstate"
)

// TestRedisWriterCannotRevoke: someone who can write keyd's Redis sets a
// revocation entry of a victim's token (in clear, as keyd wrote them
// before they were sealed) and publishes it: the token still verifies,
// before and after a restart, and keyd counts what it refused. Before
// revocation entries were sealed, both revoked the token.
func TestRedisWriterCannotRevoke(t *testing.T) {
	srv := testredis.Start(t)
	dir := t.TempDir()
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	cfg := writeKeydConfig(t, dir, fmt.Sprintf("  token_state: {backend: redis, url: %q}\nmetrics: {}", srv.URL), "")
	d := startDaemon(t, env, "--config", cfg)
	w := &tokenWorld{t: t, rec: &recorder{}}
	victim := w.sign(d, "victim")
	jti := jtiOf(t, victim)
	verify := func(d *daemonProc) string {
		_, body := w.call(d, "/v1/keysets/es/verify", serviceToken, `{"token":"`+victim+`"}`)
		if m := regexp.MustCompile(`"code":"([a-z_]+)"`).FindStringSubmatch(body); m != nil {
			return m[1]
		}
		return "valid"
	}

	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	forged := tokenstate.Revocation{KeySet: "es", JTI: jti}
	entry, _ := json.Marshal(map[string]any{"keyset": "es", "jti": jti, "sub": "", "before_ms": 0, "expires_ms": exp.UnixMilli(), "revoked_ms": time.Now().UnixMilli(), "reason": "forged"})
	if err := rdb.Set(ctx, "keyd:{rev}:"+forged.ID(), entry, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, "keyd:{rev}", goredis.Z{Score: float64(exp.UnixMilli()), Member: forged.ID()}).Err(); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{string(entry), forged.ID() + " " + string(entry)} {
		if err := rdb.Publish(ctx, "keyd:revocations", msg).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The messages are heard (or not) in the order sent; a real revocation
	// published after them marks that they have been handled.
	other := w.sign(d, "other")
	if status, out := w.call(d, "/v1/keysets/es/revocations", adminToken, fmt.Sprintf(`{"jti":%q,"exp":%d}`, jtiOf(t, other), time.Now().Add(5*time.Minute).Unix())); status != 200 {
		t.Fatalf("revoke: %d %s", status, out)
	}
	if got := verify(d); got != "valid" {
		t.Fatalf("a revocation forged in Redis revoked the token: %s", got)
	}
	_, metrics, _ := w.rec.call(t, "GET", d.addr+"/metrics", adminToken, "")
	if !regexp.MustCompile(`keyd_token_state_rejected_total\{kind="revocation"\} [1-9]`).Match(metrics) {
		t.Fatalf("the forged revocations were not counted:\n%s", grepLines(string(metrics), "rejected"))
	}
	d.stop()
	d = startDaemon(t, env, "--config", cfg)
	if got := verify(d); got != "valid" {
		t.Fatalf("after a restart, the revocation forged in Redis revoked the token: %s", got)
	}
	d.stop()
}
