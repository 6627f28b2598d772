package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keyd-dev/keyd/backends/file"
)

// TestAuditTrail runs the real daemon with a required audit trail, makes
// every kind of security event, and checks the file with `keyd audit
// verify`: intact, then with one byte flipped.
func TestAuditTrail(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	auditPath := filepath.Join(dir, "audit.log")
	appendConfig(t, cfgPath, fmt.Sprintf("audit: {path: %q, required: true}\n", auditPath))
	masterKey, err := file.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"KEYD_MASTER_KEY=" + masterKey}
	rec := &recorder{}
	d := startDaemon(t, env, "--config", cfgPath)

	var jtis, tokens []string
	for _, ks := range []string{"es256", "hs256", "eddsa"} {
		status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/"+ks+"/sign", serviceToken,
			`{"claims": {"sub": "alice", "aud": ["billing", "ledger"], "secret_claim": "do-not-record"}, "ttl": "5m"}`)
		if status != 200 {
			t.Fatalf("sign %s: %d %s", ks, status, body)
		}
		var out struct{ Token string }
		_ = json.Unmarshal(body, &out)
		tokens = append(tokens, out.Token)
		jtis = append(jtis, jtiOf(t, out.Token))
	}
	status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es256/sign-batch", serviceToken, `{"items": [{"claims": {"sub": "b1"}}, {"claims": {"sub": "b2"}}]}`)
	if status != 200 {
		t.Fatalf("sign-batch: %d %s", status, body)
	}
	var batch struct{ Results []struct{ Token string } }
	_ = json.Unmarshal(body, &batch)
	for _, r := range batch.Results {
		tokens = append(tokens, r.Token)
		jtis = append(jtis, jtiOf(t, r.Token))
	}
	rec.call(t, "POST", d.addr+"/v1/keysets/es256/verify", serviceToken, `{"token": "not-a-token"}`)
	rec.call(t, "POST", d.addr+"/v1/keysets/es256/sign", "", `{}`)
	rec.call(t, "POST", d.addr+"/v1/keysets/es256/sign", "wrong-token", `{}`)
	rec.call(t, "POST", d.addr+"/v1/keysets/es256/sign", adminToken, `{}`)
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es256/rotate", adminToken, `{"force": true}`); status != 200 {
		t.Fatalf("rotate: %d %s", status, body)
	}
	var view struct{ Keys []struct{ KID, State string } }
	_, body, _ = rec.call(t, "GET", d.addr+"/v1/keysets/es256", adminToken, "")
	_ = json.Unmarshal(body, &view)
	var pending string
	for _, k := range view.Keys {
		if k.State == "pending" {
			pending = k.KID
		}
	}
	if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es256/keys/"+pending+"/revoke", adminToken, ``); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	// The trail's metrics: every token's record counted (each was written
	// before its token was returned), batches timed, none failed.
	m := scrape(t, d.addr)
	counted := m["keyd_audit_records_total"]
	if counted < float64(len(jtis)) {
		t.Errorf("keyd_audit_records_total = %v after %d tokens", counted, len(jtis))
	}
	if n := m["keyd_audit_write_duration_seconds"]; n < 1 || n > counted {
		t.Errorf("%v timed batches for %v records", n, counted)
	}
	if m["keyd_audit_write_errors_total"] != 0 {
		t.Errorf("keyd_audit_write_errors_total = %v", m["keyd_audit_write_errors_total"])
	}
	d.stop()

	code, out := runKeyd(t, nil, "", "audit", "verify", auditPath)
	if code != 0 || !strings.Contains(out, "chain intact") {
		t.Fatalf("audit verify: exit %d: %s", code, out)
	}
	data, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	if lines := bytes.Count(data, []byte("\n")); counted > float64(lines) {
		t.Errorf("keyd_audit_records_total = %v, but the file holds %d records", counted, lines)
	}
	if fi, _ := os.Stat(auditPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v", fi.Mode().Perm())
	}
	events := map[string]int{}
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var r struct{ Event, Reason, Trigger, Caller string }
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("audit line is not JSON: %s", line)
		}
		events[r.Event]++
		if r.Event == "auth_failed" {
			events["auth_failed:"+r.Reason]++
		}
		if r.Event == "rotated" {
			events["rotated:"+r.Trigger+":"+r.Caller]++
		}
	}
	for event, want := range map[string]int{
		"config_loaded": 1, "keyset_created": 13, "token_signed": 5, "verify_failed": 1, "rotated": 1, "revoked": 1,
		"auth_failed:missing": 1, "auth_failed:unknown_token": 1, "auth_failed:forbidden": 1,
	} {
		if events[event] != want {
			t.Errorf("%d %s records, want %d (%v)", events[event], event, want, events)
		}
	}
	for _, jti := range jtis {
		if !bytes.Contains(data, []byte(`"jti":"`+jti+`"`)) {
			t.Errorf("the audit trail lacks token %s", jti)
		}
	}
	if !bytes.Contains(data, []byte(`"sub":"alice","aud":["billing","ledger"]`)) || !bytes.Contains(data, []byte(`"caller":"svc"`)) {
		t.Errorf("token records lack sub, aud or the caller's name:\n%s", data)
	}
	for _, secret := range append(tokens, serviceToken, adminToken, "wrong-token", "do-not-record", masterKey) {
		if bytes.Contains(data, []byte(secret)) {
			t.Fatalf("the audit trail holds a secret: %.30s...", secret)
		}
	}
	noSecretsAnywhere(t, filepath.Join(dir, "keyd.db"), masterKey, []string{string(data)})

	// One flipped byte in line 3 is found and named.
	lines := bytes.SplitAfter(data, []byte("\n"))
	off := len(lines[0]) + len(lines[1]) + len(lines[2]) - 10
	data[off] ^= 0x01
	if err := os.WriteFile(auditPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = runKeyd(t, nil, "", "audit", "verify", auditPath)
	if code == 0 || !strings.Contains(out, "audit.log:3:") {
		t.Fatalf("audit verify of an altered file: exit %d: %s", code, out)
	}
}

// TestRequiredAuditRefusesToSign points a required audit trail at a full
// disk (/dev/full): signing answers 503 audit_unavailable and hands out no
// token, while the JWKS is still served.
func TestRequiredAuditRefusesToSign(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	appendConfig(t, cfgPath, "audit: {path: /dev/full, required: true}\n")
	masterKey, _ := file.NewMasterKey()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + masterKey}, "--config", cfgPath)
	rec := &recorder{}
	// One refused sign first: the start's own record has failed by then.
	rec.call(t, "POST", d.addr+"/v1/keysets/es256/sign", serviceToken, `{"claims": {}}`)
	before := scrape(t, d.addr)
	for _, path := range []string{"/v1/keysets/es256/sign", "/v1/keysets/es256/sign-batch"} {
		body := `{"claims": {"sub": "alice"}}`
		if strings.HasSuffix(path, "batch") {
			body = `{"items": [` + body + `]}`
		}
		status, out, _ := rec.call(t, "POST", d.addr+path, serviceToken, body)
		if status != 503 || !strings.Contains(string(out), `"code":"audit_unavailable"`) || strings.Contains(string(out), "eyJ") {
			t.Errorf("%s with the audit trail unwritable: %d %s", path, status, out)
		}
	}
	after := scrape(t, d.addr)
	if got := after["keyd_audit_write_errors_total"] - before["keyd_audit_write_errors_total"]; got != 2 {
		t.Errorf("keyd_audit_write_errors_total grew by %v for two refused signs, want 2", got)
	}
	if after["keyd_audit_records_total"] != 0 {
		t.Errorf("keyd_audit_records_total = %v on a full disk", after["keyd_audit_records_total"])
	}
	if status, _, _ := rec.call(t, "GET", d.addr+"/.well-known/jwks.json", "", ""); status != 200 {
		t.Errorf("JWKS: %d", status)
	}
	if !strings.Contains(d.log(), "audit records could not be written") {
		t.Errorf("the failure was not logged:\n%s", d.log())
	}
	d.stop()
}

func appendConfig(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func jtiOf(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	var claims struct{ JTI string }
	raw, err := decodeSegment(parts[1])
	if err != nil || json.Unmarshal(raw, &claims) != nil || claims.JTI == "" {
		t.Fatalf("no jti in %q", token)
	}
	return claims.JTI
}

func decodeSegment(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

// scrape reads the daemon's /metrics with Prometheus' text parser: each
// unlabelled family's value (a histogram's sample count).
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := map[string]float64{}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.Counter != nil:
				out[name] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[name] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[name] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestKeyedAuditTrail runs the daemon with audit.key_file: the trail
// verifies with the key and the checkpoint keyd logged at shutdown, and
// fails once its last records are cut off or the key is missing.
func TestKeyedAuditTrail(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	auditPath, keyPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.key")
	writeFile(t, keyPath, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{42}, 32))+"\n"))
	if err := os.Chmod(keyPath, 0o600); err != nil {
		t.Fatal(err)
	}
	appendConfig(t, cfgPath, fmt.Sprintf("audit: {path: %q, key_file: %q}\n", auditPath, keyPath))
	masterKey, _ := file.NewMasterKey()
	d := startDaemon(t, []string{"KEYD_MASTER_KEY=" + masterKey}, "--config", cfgPath)
	rec := &recorder{}
	for range 3 {
		if status, body, _ := rec.call(t, "POST", d.addr+"/v1/keysets/es256/sign", serviceToken, `{"claims": {"sub": "alice"}}`); status != 200 {
			t.Fatalf("sign: %d %s", status, body)
		}
	}
	d.stop()
	var last struct {
		Seq  uint64 `json:"seq"`
		HMAC string `json:"hmac"`
	}
	for _, l := range strings.Split(d.log(), "\n") {
		if strings.Contains(l, `"msg":"audit checkpoint"`) {
			_ = json.Unmarshal([]byte(l), &last)
		}
	}
	if last.Seq == 0 || strings.Contains(d.log(), base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{42}, 32))) {
		t.Fatalf("no checkpoint logged (or the key was):\n%s", d.log())
	}
	cp := fmt.Sprintf("%d:%s", last.Seq, last.HMAC)
	if code, out := runKeyd(t, nil, "", "audit", "verify", "--key-file", keyPath, "--checkpoint", cp, auditPath); code != 0 || !strings.Contains(out, "keyed chain intact") {
		t.Fatalf("audit verify --key-file: exit %d: %s", code, out)
	}
	if code, out := runKeyd(t, nil, "", "audit", "verify", auditPath); code != 1 || !strings.Contains(out, "--key-file") {
		t.Fatalf("audit verify without the key: exit %d: %s", code, out)
	}
	data, _ := os.ReadFile(auditPath)
	ls := bytes.SplitAfter(data, []byte("\n"))
	writeFile(t, auditPath, bytes.Join(ls[:len(ls)-3], nil)) // the last two records cut off
	if code, out := runKeyd(t, nil, "", "audit", "verify", "--key-file", keyPath, "--checkpoint", cp, auditPath); code != 1 || !strings.Contains(out, "removed from its end") {
		t.Fatalf("audit verify of a cut trail: exit %d: %s", code, out)
	}
}
