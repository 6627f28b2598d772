package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/testredis"
	"github.com/keyd-dev/keyd/internal/testvault"
)

// tokenWorld is what a backup must carry: tokens signed, revoked by jti
// and by subject, and a login, checked against a daemon.
type tokenWorld struct {
	t                *testing.T
	rec              *recorder
	valid, jti, subj string // tokens: one in force, one revoked by jti, one of a revoked subject
	refresh          string
}

func (w *tokenWorld) call(d *daemonProc, path, token, body string) (int, string) {
	w.t.Helper()
	status, out, _ := w.rec.call(w.t, "POST", d.addr+path, token, body)
	return status, string(out)
}

func (w *tokenWorld) field(body, name string) string {
	m := regexp.MustCompile(`"` + name + `":"([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		w.t.Fatalf("no %s in %s", name, body)
	}
	return m[1]
}

func (w *tokenWorld) sign(d *daemonProc, sub string) string {
	status, body := w.call(d, "/v1/keysets/es/sign", serviceToken, `{"claims":{"sub":"`+sub+`"}}`)
	if status != 200 {
		w.t.Fatalf("sign: %d %s", status, body)
	}
	return w.field(body, "token")
}

// make signs and revokes on d.
func (w *tokenWorld) make(d *daemonProc) {
	w.valid, w.jti, w.subj = w.sign(d, "alice"), w.sign(d, "bob"), w.sign(d, "mallory")
	for _, body := range []string{fmt.Sprintf(`{"jti":%q,"exp":%d}`, jtiOf(w.t, w.jti), time.Now().Add(10*time.Minute).Unix()), `{"sub":"mallory"}`} {
		if status, out := w.call(d, "/v1/keysets/es/revocations", adminToken, body); status != 200 {
			w.t.Fatalf("revoke: %d %s", status, out)
		}
	}
	status, body := w.call(d, "/v1/keysets/es/token-pair", serviceToken, `{"claims":{"sub":"carol"}}`)
	if status != 200 {
		w.t.Fatalf("token pair: %d %s", status, body)
	}
	w.refresh = w.field(body, "refresh_token")
}

// check holds d to what make did: the valid token verifies, the revoked
// ones do not, and the login refreshes once (its spent token is refused).
// rotates rotates key set es at d: exactly one key is active before and
// after, a new one, a new token is signed by it, and the token in force
// before still verifies.
func (w *tokenWorld) rotates(d *daemonProc, where string) {
	w.t.Helper()
	active := func() string {
		keys := keysOf(w.t, w.rec, d, "es")
		var ids []string
		for _, k := range keys {
			if k.State == "active" {
				ids = append(ids, k.KID)
			}
		}
		if len(ids) != 1 {
			w.t.Fatalf("%s: %d active keys: %+v", where, len(ids), keys)
		}
		return ids[0]
	}
	before := active()
	if status, body := w.call(d, "/v1/keysets/es/rotate", adminToken, `{"force":true}`); status != 200 {
		w.t.Fatalf("%s: rotate: %d %s", where, status, body)
	}
	after := active()
	if after == before {
		w.t.Fatalf("%s: the rotation left %s active", where, before)
	}
	var header struct{ KID string }
	head, _, _ := strings.Cut(w.sign(d, "after-rotation"), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(head)
	if err := json.Unmarshal(raw, &header); err != nil || header.KID != after {
		kid := header.KID
		w.t.Fatalf("%s: a token after the rotation is signed by %s, want %s", where, kid, after)
	}
	w.verifies(d, w.valid, where+", after a rotation")
}

// verifies requires tok to verify at d.
func (w *tokenWorld) verifies(d *daemonProc, tok, where string) {
	w.t.Helper()
	if status, body := w.call(d, "/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`); status != 200 || !strings.Contains(body, `"valid":true`) {
		w.t.Fatalf("%s: a token signed before: %d %s", where, status, body)
	}
}

func (w *tokenWorld) check(d *daemonProc, where string) {
	w.t.Helper()
	want := map[string]string{w.valid: "valid", w.jti: "token_revoked", w.subj: "token_revoked"}
	for tok, code := range want {
		status, body := w.call(d, "/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`)
		got := "valid"
		if m := regexp.MustCompile(`"code":"([a-z_]+)"`).FindStringSubmatch(body); m != nil {
			got = m[1]
		}
		if status != 200 || got != code {
			w.t.Fatalf("%s: verify = %d %s, want %s", where, status, body, code)
		}
	}
	status, body := w.call(d, "/v1/keysets/es/refresh", serviceToken, `{"refresh_token":"`+w.refresh+`"}`)
	if status != 200 {
		w.t.Fatalf("%s: the login does not refresh: %d %s", where, status, body)
	}
	if status, body := w.call(d, "/v1/keysets/es/refresh", serviceToken, `{"refresh_token":"`+w.refresh+`"}`); status == 200 {
		w.t.Fatalf("%s: a spent refresh token refreshed again: %s", where, body)
	}
}

// ageIdentity writes a new age identity file (owner-only) and returns its
// path and recipient.
func ageIdentity(t *testing.T, dir string) (string, string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "backup.key")
	writeFile(t, path, []byte("# keyd backups\n"+id.String()+"\n"))
	return path, id.Recipient().String()
}

// TestBackupRestoresIntoAnyStore: a backup of a running keyd on bbolt,
// restored into another bbolt (another master key) and into OpenBao with
// the token state on Redis: every token signed before verifies, every
// revocation holds, the login refreshes once, and the backup holds no
// secret for a caller without the admin scope nor a reader without the
// identity.
func TestBackupRestoresIntoAnyStore(t *testing.T) {
	dir := t.TempDir()
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	cfg := writeKeydConfig(t, dir, "", ", refresh: {ttl: 1h}")
	idFile, recipient := ageIdentity(t, dir)
	d := startDaemon(t, env, "--config", cfg)
	w := &tokenWorld{t: t, rec: &recorder{}}
	w.make(d)

	if status, body := w.call(d, "/v1/backup", serviceToken, `{"recipients":["`+recipient+`"]}`); status != 403 {
		t.Fatalf("backup with a service token: %d %s", status, body)
	}
	if status, body := w.call(d, "/v1/backup", adminToken, `{"recipients":["AGE-SECRET-KEY-1XYZ"]}`); status != 400 || !strings.Contains(body, "recipients[0]") {
		t.Fatalf("backup to an identity: %d %s", status, body)
	}
	out := filepath.Join(dir, "keyd.backup")
	cli := []string{"KEYD_ADDR=" + d.addr, "KEYD_TOKEN=" + adminToken}
	if code, o := runKeyd(t, cli, "", "backup", "--recipient", recipient, "--out", out); code != 0 || !strings.Contains(o, "1 key set(s), 2 revocation(s)") {
		t.Fatalf("keyd backup: exit %d\n%s", code, o)
	}
	d.stop()
	if code, o := runKeyd(t, nil, "", "backup", "inspect", "--identity", idFile, out); code != 0 || !strings.Contains(o, "checked: it decrypts") {
		t.Fatalf("keyd backup inspect: exit %d\n%s", code, o)
	}
	raw, _ := os.ReadFile(out)
	if strings.Contains(string(raw), "carol") || strings.Contains(string(raw), "mallory") {
		t.Fatal("the backup shows token state in clear")
	}

	t.Run("bbolt", func(t *testing.T) {
		dir2 := t.TempDir()
		mk2, _ := file.NewMasterKey()
		env2 := []string{"KEYD_MASTER_KEY=" + mk2}
		cfg2 := writeKeydConfig(t, dir2, "", ", refresh: {ttl: 1h}")
		if code, o := runKeyd(t, env2, "", "restore", "--config", cfg2, "--identity", idFile, out); code != 0 || !strings.Contains(o, "restored 1 key set(s), 2 revocation(s), 2 record(s)") {
			t.Fatalf("keyd restore: exit %d\n%s", code, o)
		}
		if code, o := runKeyd(t, env2, "", "restore", "--config", cfg2, "--identity", idFile, out); code == 0 || !strings.Contains(o, "--replace") {
			t.Fatalf("a second restore into a store in use: exit %d\n%s", code, o)
		}
		d := startDaemon(t, env2, "--config", cfg2)
		restored := &tokenWorld{t: t, rec: w.rec, valid: w.valid, jti: w.jti, subj: w.subj, refresh: w.refresh}
		restored.check(d, "restored into bbolt")
		restored.rotates(d, "restored into bbolt")
		d.stop()
	})
	t.Run("openbao with redis token state", func(t *testing.T) {
		vault, redis := testvault.Start(t), testredis.Start(t)
		cfg3 := filepath.Join(t.TempDir(), "keyd.yaml")
		writeFile(t, cfg3, fmt.Appendf(nil, `listen: 127.0.0.1:0
storage:
  backend: vault
  vault: {address: %q, mount: secret, prefix: "keyd-restore-%d", auth: {method: token}}
  token_state: {backend: redis, url: %q}
keysets:
  - {name: es, algorithm: ES256, rotation: "@daily", token_ttl: 10m, jwks_max_age: 1m, refresh: {ttl: 1h}}
auth:
  tokens:
    - {name: ops, sha256: %q, scopes: [admin]}
    - {name: svc, sha256: %q, scopes: ["sign:*", "verify:*"]}
`, vault.Addr, os.Getpid(), redis.URL, config.TokenHash(adminToken), config.TokenHash(serviceToken)))
		if code, o := runKeyd(t, vaultEnv, "", "restore", "--config", cfg3, "--identity", idFile, out); code != 0 {
			t.Fatalf("keyd restore: exit %d\n%s", code, o)
		}
		d := startDaemon(t, vaultEnv, "--config", cfg3)
		restored := &tokenWorld{t: t, rec: w.rec, valid: w.valid, jti: w.jti, subj: w.subj, refresh: w.refresh}
		restored.check(d, "restored into OpenBao and Redis")
		restored.rotates(d, "restored into OpenBao and Redis")
		if strings.Contains(d.log(), "moved the token state") {
			t.Errorf("a start after a restore moved the token state again:\n%s", d.log())
		}
		d.stop()
	})
}

// TestRestoreKilledIsFinished: a restore killed (SIGKILL) while it writes
// leaves a store keyd refuses to serve, and running it again finishes it:
// every revocation of the backup holds.
func TestRestoreKilledIsFinished(t *testing.T) {
	dir := t.TempDir()
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	cfg := writeKeydConfig(t, dir, "", "")
	idFile, recipient := ageIdentity(t, dir)
	d := startDaemon(t, env, "--config", cfg)
	const n = 40_000
	var lines strings.Builder
	exp := time.Now().Add(5 * time.Minute).Unix()
	for i := range n {
		fmt.Fprintf(&lines, `{"jti":"j-%d","exp":%d}`+"\n", i, exp)
	}
	cli := []string{"KEYD_ADDR=" + d.addr, "KEYD_TOKEN=" + adminToken}
	if code, o := runKeyd(t, cli, lines.String(), "revoke-token", "--from", "-", "es"); code != 0 {
		t.Fatalf("import: exit %d\n%s", code, o)
	}
	out := filepath.Join(dir, "keyd.backup")
	if code, o := runKeyd(t, cli, "", "backup", "--recipient", recipient, "--out", out); code != 0 {
		t.Fatalf("keyd backup: exit %d\n%s", code, o)
	}
	d.stop()

	// How long a whole restore takes here, now: the kill lands at 70% of
	// it, inside the writes (the first part checks the file, writing
	// nothing), whatever the machine's load.
	scratch := writeKeydConfig(t, t.TempDir(), "", "")
	began := time.Now()
	if code, o := runKeyd(t, env, "", "restore", "--config", scratch, "--identity", idFile, out); code != 0 {
		t.Fatalf("restore: exit %d\n%s", code, o)
	}
	whole := time.Since(began)

	// The kill's moment moves until it lands inside the writes: earlier
	// when a restore finished first (the machine sped up), later when it
	// came before any write. Each attempt restores into an empty store.
	var dir2, cfg2 string
	killed, at := false, whole*7/10
	for attempt := 0; attempt < 8 && !killed; attempt++ {
		dir2 = t.TempDir()
		cfg2 = writeKeydConfig(t, dir2, "", "")
		cmd := exec.Command(keydBinary, "restore", "--config", cfg2, "--identity", idFile, out)
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(at) // the kill's moment, not a wait for an outcome
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		killed = restoring(t, filepath.Join(dir2, "keyd.db"), env[0])
		switch {
		case killed:
		case hasKeySets(t, filepath.Join(dir2, "keyd.db"), env[0]):
			at = at * 6 / 10 // it finished first
		default:
			at = at * 13 / 10 // before any write
		}
	}
	if !killed {
		t.Fatalf("no kill landed inside the restore's writes in 8 attempts (%v for a whole one, last kill at %v)", whole, at)
	}
	code, o := runKeyd(t, env, "", "serve", "--config", cfg2)
	if code == 0 || !strings.Contains(o, "did not finish") {
		t.Fatalf("keyd served a store whose restore was killed: exit %d\n%s", code, o)
	}
	if code, o := runKeyd(t, env, "", "restore", "--config", cfg2, "--identity", idFile, out); code != 0 || !strings.Contains(o, "finished a restore") {
		t.Fatalf("restore again: exit %d\n%s", code, o)
	}
	d = startDaemon(t, env, "--config", cfg2)
	status, body, _ := (&recorder{}).call(t, "GET", d.addr+"/v1/keysets/es/revocations", adminToken, "")
	m := regexp.MustCompile(`"in_force":(\d+)`).FindStringSubmatch(string(body))
	if status != 200 || m == nil || m[1] != fmt.Sprint(n) {
		t.Fatalf("revocations after the finished restore: %d %v, want %d in force", status, m, n)
	}
	d.stop()
}

// TestScheduledBackups: backup.schedule writes whole backups into its
// folder, keeps the newest keep, tells /readyz and the metrics, and a
// config giving an identity for a recipient is refused by config check.
func TestScheduledBackups(t *testing.T) {
	dir := t.TempDir()
	mk, _ := file.NewMasterKey()
	env := []string{"KEYD_MASTER_KEY=" + mk}
	idFile, recipient := ageIdentity(t, dir)
	folder := filepath.Join(dir, "backups")
	cfg := writeKeydConfig(t, dir, "metrics: {}\nbackup: {schedule: \"@every 1s\", to: \""+folder+"\", keep: 2, recipients: [\""+recipient+"\"]}", "")
	d := startDaemon(t, env, "--config", cfg)
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(d.log(), "scheduled backup written") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("three scheduled backups not written within 30 s:\n%s", d.log())
		}
		time.Sleep(100 * time.Millisecond) // polling the daemon's log
	}
	entries, err := os.ReadDir(folder)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	if len(names) != 2 {
		t.Fatalf("the folder keeps %v, want the newest 2", names)
	}
	rec := &recorder{}
	if status, body, _ := rec.call(t, "GET", d.addr+"/readyz", "", ""); status != 200 || !strings.Contains(string(body), `"backup":"ok"`) {
		t.Fatalf("readyz: %d %s", status, body)
	}
	if _, body, _ := rec.call(t, "GET", d.addr+"/metrics", adminToken, ""); !regexp.MustCompile(`keyd_backup_last_success_timestamp_seconds 1\.[0-9]+e\+09`).Match(body) ||
		!strings.Contains(string(body), "keyd_backup_period_seconds 1\n") {
		t.Fatalf("backup metrics missing:\n%s", body)
	}
	d.stop()
	cfg2 := writeKeydConfig(t, t.TempDir(), "", "")
	if code, o := runKeyd(t, env, "", "restore", "--config", cfg2, "--identity", idFile, filepath.Join(folder, names[1])); code != 0 {
		t.Fatalf("restore of a scheduled backup: exit %d\n%s", code, o)
	}

	bad := writeKeydConfig(t, t.TempDir(), "backup: {schedule: \"@hourly\", to: /var/backups/keyd, recipients: [AGE-SECRET-KEY-1QQQQQQ]}", "")
	if code, o := runKeyd(t, env, "", "config", "check", bad); code == 0 || !strings.Contains(o, "backup.recipients[0]") || strings.Contains(o, "QQQQQQ") {
		t.Fatalf("config check of an identity as recipient: exit %d\n%s", code, o)
	}
}

// restoring says whether the bbolt file at path holds a restore under way.
func restoring(t *testing.T, path, masterKeyEnv string) bool {
	t.Helper()
	s := openBolt(t, path, masterKeyEnv)
	defer s.Close()
	return backup.CheckNotRestoring(context.Background(), s) != nil
}

func hasKeySets(t *testing.T, path, masterKeyEnv string) bool {
	t.Helper()
	s := openBolt(t, path, masterKeyEnv)
	defer s.Close()
	sets, err := s.List(context.Background())
	return err == nil && len(sets) > 0
}

func openBolt(t *testing.T, path, masterKeyEnv string) *file.Store {
	t.Helper()
	key, err := file.ParseMasterKey(strings.TrimPrefix(masterKeyEnv, "KEYD_MASTER_KEY="))
	if err != nil {
		t.Fatal(err)
	}
	s, err := file.Open(file.Options{Path: path, MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
