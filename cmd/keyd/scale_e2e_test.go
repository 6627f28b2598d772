package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/config"
)

// TestManyKeySets starts keyd cold with 300 key sets (ES256, EdDSA, HS256
// and 5 RSA-2048, real key generation), waits until it is ready, and
// restarts it: every key set is served with the same keys, and the warm
// start is quick. The bench tool runs the full thousand.
func TestManyKeySets(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nstorage: {backend: file, file: {path: %q}}\nkeysets:\n", filepath.Join(dir, "keyd.db"))
	algs := []string{"ES256", "EdDSA", "HS256"}
	for i := range 300 {
		alg := algs[i%3]
		if i%60 == 0 {
			alg = "RS256"
		}
		fmt.Fprintf(&b, "  - {name: ks%03d, algorithm: %s, rotation: \"@daily\", token_ttl: 5m, jwks_max_age: 1m}\n", i, alg)
	}
	fmt.Fprintf(&b, "auth:\n  tokens:\n    - {name: ops, sha256: %q, scopes: [admin, \"sign:*\"]}\n", config.TokenHash(adminToken))
	cfgPath := filepath.Join(dir, "keyd.yaml")
	writeFile(t, cfgPath, []byte(b.String()))
	masterKey, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	rec := &recorder{}

	kids := func(d *daemonProc) map[string]string {
		status, body, _ := rec.call(t, "GET", d.addr+"/v1/keysets", adminToken, "")
		var out struct {
			KeySets []struct {
				Name string
				Keys []struct{ KID, State string }
			}
		}
		if status != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("keysets: %d %.200s", status, body)
		}
		m := map[string]string{}
		for _, ks := range out.KeySets {
			for _, k := range ks.Keys {
				if k.State == "active" {
					m[ks.Name] = k.KID
				}
			}
		}
		return m
	}
	start := time.Now()
	d := startDaemon(t, env, "--config", cfgPath)
	waitFor(t, "readiness", func() bool {
		status, _, _ := rec.call(t, "GET", d.addr+"/readyz", "", "")
		return status == 200
	})
	cold := time.Since(start)
	before := kids(d)
	if len(before) != 300 {
		t.Fatalf("%d key sets have an active key, want 300", len(before))
	}
	status, body, _ := rec.call(t, "GET", d.addr+"/.well-known/jwks.json", "", "")
	var set struct{ Keys []json.RawMessage }
	if status != 200 || json.Unmarshal(body, &set) != nil || len(set.Keys) != 2*(95+100+5) {
		t.Fatalf("global JWKS: %d, %d keys", status, len(set.Keys))
	}
	rss := rssOf(d)
	d.stop()

	start = time.Now()
	d = startDaemon(t, env, "--config", cfgPath)
	waitFor(t, "readiness after a restart", func() bool {
		status, _, _ := rec.call(t, "GET", d.addr+"/readyz", "", "")
		return status == 200
	})
	warm := time.Since(start)
	after := kids(d)
	for name, kid := range before {
		if after[name] != kid {
			t.Fatalf("%s: active key %s before the restart, %s after", name, kid, after[name])
		}
	}
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/ks150/sign", adminToken, `{}`); status != 200 {
		t.Fatalf("sign: %d %s", status, body)
	}
	d.stop()
	t.Logf("300 key sets: cold start ready in %v (RSS %d MiB), warm restart ready in %v", cold.Round(time.Millisecond), rss>>20, warm.Round(time.Millisecond))
}

// rssOf reads the daemon's resident set size from /proc.
func rssOf(d *daemonProc) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}
