package file_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
)

func masterKey(t *testing.T) []byte {
	t.Helper()
	s, err := file.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := file.ParseMasterKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestConformance(t *testing.T) {
	keystoretest.Run(t, func(t *testing.T) keystore.Store {
		s, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: masterKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestRecordConformance(t *testing.T) {
	keystoretest.RunRecords(t, func(t *testing.T) keystore.RecordStore {
		s, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: masterKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestFileModeAndEncryptionAtRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "keyd.db")
	s, err := file.Open(file.Options{Path: path, MasterKey: masterKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	ks := keystoretest.KeySet(t, "secrets", keystore.HS256)
	if _, err := s.Put(context.Background(), ks); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Fatalf("db file mode %o, want 600", mode)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks.Keys {
		if bytes.Contains(raw, k.Material) {
			t.Fatalf("HMAC secret of %s is in the db file in plain form", k.ID)
		}
		if !bytes.Contains(raw, []byte(k.ID)) {
			t.Fatalf("kid %s not found in the file: test looks at the wrong file", k.ID)
		}
	}
}

func TestLooseModeIsTightened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyd.db")
	key := masterKey(t)
	s, err := file.Open(file.Options{Path: path, MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = file.Open(file.Options{Path: path, MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, _ := os.Stat(path)
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Fatalf("db file mode %o after reopen, want 600", mode)
	}
}

func TestReopenKeepsKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyd.db")
	key := masterKey(t)
	s, err := file.Open(file.Options{Path: path, MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	want, err := s.Put(context.Background(), keystoretest.KeySet(t, "default", keystore.RS256))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s, err = file.Open(file.Options{Path: path, MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(context.Background(), "default")
	if err != nil {
		t.Fatal(err)
	}
	keystoretest.RequireSameKeys(t, got, want)
	if got.Version != want.Version {
		t.Fatalf("version %d after reopen, want %d", got.Version, want.Version)
	}
}

func TestWrongMasterKeyFailsAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyd.db")
	s, err := file.Open(file.Options{Path: path, MasterKey: masterKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), keystoretest.KeySet(t, "default", keystore.ES256)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	_, err = file.Open(file.Options{Path: path, MasterKey: masterKey(t)})
	if !errors.Is(err, file.ErrWrongMasterKey) {
		t.Fatalf("Open with another master key = %v, want ErrWrongMasterKey", err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyd.db")
	key := masterKey(t)
	s, err := file.Open(file.Options{Path: path, MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	_, err = file.Open(file.Options{Path: path, MasterKey: key, LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, file.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("lock error %q does not name the file", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("second Open took %v, want it to fail fast", waited)
	}
}

func TestParseMasterKey(t *testing.T) {
	for _, bad := range []string{"", "not base64 !!", "c2hvcnQ="} {
		if _, err := file.ParseMasterKey(bad); !errors.Is(err, file.ErrBadMasterKey) {
			t.Errorf("ParseMasterKey(%q) = %v, want ErrBadMasterKey", bad, err)
		}
	}
	k, err := file.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.ParseMasterKey(" " + k + "\n"); err != nil {
		t.Fatalf("ParseMasterKey(fresh key with white space) = %v", err)
	}
	if _, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "x.db"), MasterKey: []byte("short")}); !errors.Is(err, file.ErrBadMasterKey) {
		t.Fatalf("Open with a short key = %v", err)
	}
}

func TestClosedStoreIsUnavailable(t *testing.T) {
	s, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: masterKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if _, err := s.List(context.Background()); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("List after Close = %v, want ErrUnavailable", err)
	}
}
