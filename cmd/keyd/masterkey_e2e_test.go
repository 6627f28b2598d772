package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
)

// TestMasterKeyRotation: 1,000 key sets and 100,000 records sealed under a
// new master key; keyd master-key rotate killed (SIGKILL) at random moments
// leaves a file one of the two keys opens whole; finished, only the new key
// opens it and keyd serves with it.
func TestMasterKeyRotation(t *testing.T) {
	dir := t.TempDir()
	oldB64, _ := file.NewMasterKey()
	oldKey, _ := file.ParseMasterKey(oldB64)
	newFile := filepath.Join(dir, "new.key")
	if code, o := runKeyd(t, nil, "", "master-key", "new", "--out", newFile); code != 0 || !strings.Contains(o, "id ") {
		t.Fatalf("master-key new: exit %d\n%s", code, o)
	}
	raw, _ := os.ReadFile(newFile)
	newKey, err := file.ParseMasterKey(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"KEYD_MASTER_KEY=" + oldB64}
	cfg := writeKeydConfig(t, dir, "", "")
	d := startDaemon(t, env, "--config", cfg) // makes key set es
	w := &tokenWorld{t: t, rec: &recorder{}}
	tok := w.sign(d, "alice")
	if code, o := runKeyd(t, env, "", "master-key", "rotate", "--config", cfg, "--new-key-file", newFile); code == 0 || !strings.Contains(o, "stop keyd first") {
		t.Fatalf("rotation under a running keyd: exit %d\n%s", code, o)
	}
	d.stop()
	db := filepath.Join(dir, "keyd.db")
	const sets, records = 1000, 100_000
	fillForRekey(t, db, oldKey, sets, records)
	pristine := db + ".pristine"
	copyFile(t, db, pristine)

	for round := range 4 {
		copyFile(t, pristine, db)
		cmd := exec.Command(keydBinary, "master-key", "rotate", "--config", cfg, "--new-key-file", newFile)
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+rand.IntN(1200)) * time.Millisecond) // a random moment of the rotation, not a wait for an outcome
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		opened := ""
		for name, key := range map[string][]byte{"old": oldKey, "new": newKey} {
			if s, err := file.Open(file.Options{Path: db, MasterKey: key}); err == nil {
				checkWhole(t, s, sets+1, records)
				s.Close()
				opened = name
			}
		}
		if opened == "" {
			t.Fatalf("round %d: neither key opens the file after a kill", round)
		}
		t.Logf("round %d: killed; the %s key opens the file whole", round, opened)
	}

	copyFile(t, pristine, db)
	if code, o := runKeyd(t, env, "", "master-key", "rotate", "--config", cfg, "--new-key-file", newFile); code != 0 || !strings.Contains(o, "1001 key set(s)") {
		t.Fatalf("master-key rotate: exit %d\n%s", code, o)
	}
	if code, o := runKeyd(t, env, "", "serve", "--config", cfg); code == 0 || !strings.Contains(o, "does not open this database") || !strings.Contains(o, file.KeyID(newKey)) {
		t.Fatalf("keyd with the old key after the rotation: exit %d\n%s", code, o)
	}
	d = startDaemon(t, []string{"KEYD_MASTER_KEY=" + strings.TrimSpace(string(raw))}, "--config", cfg)
	status, body := w.call(d, "/v1/keysets/es/verify", serviceToken, `{"token":"`+tok+`"}`)
	if status != 200 || !strings.Contains(body, `"valid":true`) {
		t.Fatalf("a token signed before the rotation: %d %s", status, body)
	}
	d.stop()
}

// fillForRekey adds n key sets and records to the bbolt file at path.
func fillForRekey(t *testing.T, path string, key []byte, n, records int) {
	t.Helper()
	ctx := context.Background()
	s, err := file.Open(file.Options{Path: path, MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	for i := range n {
		a, _ := keystore.Generate(keystore.GenerateMaterial, keystore.ES256, 0, now)
		b, _ := keystore.Generate(keystore.GenerateMaterial, keystore.ES256, 0, now)
		ks, err := keystore.NewKeySet(fmt.Sprintf("bulk%04d", i), keystore.ES256, a, b, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, ks); err != nil {
			t.Fatal(err)
		}
	}
	var recs []*keystore.Record
	for i := range records {
		recs = append(recs, &keystore.Record{ID: fmt.Sprint("login-", i), Data: fmt.Appendf(nil, `{"n":%d}`, i)})
		if len(recs) == 10_000 {
			if err := keystore.PutRecordsOver(ctx, s, "refresh", recs); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

// checkWhole requires every key set and record to open.
func checkWhole(t *testing.T, s *file.Store, sets, records int) {
	t.Helper()
	ctx := context.Background()
	all, err := s.List(ctx)
	if err != nil || len(all) != sets {
		t.Fatalf("%d key sets open (%v), want %d", len(all), err, sets)
	}
	var n atomic.Int64 // fn runs on several goroutines
	if err := keystore.EachRecord(ctx, s, "refresh", func(*keystore.Record) error { n.Add(1); return nil }); err != nil || n.Load() != int64(records) {
		t.Fatalf("%d records open (%v), want %d", n.Load(), err, records)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
