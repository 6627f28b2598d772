package file_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
)

// TestRekey: after a rekey only the new master key opens the file, and it
// opens every key set and record as they were (material, data, versions).
func TestRekey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyd.db")
	oldKey, newKey := masterKey(t), masterKey(t)
	s, err := file.Open(file.Options{Path: path, MasterKey: oldKey})
	if err != nil {
		t.Fatal(err)
	}
	var sets []*keystore.KeySet
	for i, alg := range []keystore.Algorithm{keystore.ES256, keystore.HS256, keystore.EdDSA} {
		stored, err := s.Put(ctx, keystoretest.KeySet(t, fmt.Sprint("ks", i), alg))
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, stored)
	}
	for _, kind := range []string{"refresh", "revocation"} {
		var recs []*keystore.Record
		for i := range 25_000 { // past one batch of the new file
			recs = append(recs, &keystore.Record{ID: fmt.Sprint(kind, i), Data: fmt.Appendf(nil, "secret %s %d", kind, i)})
		}
		if err := keystore.PutRecordsOver(ctx, s, kind, recs); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := file.Rekey(path, oldKey, newKey); !errors.Is(err, file.ErrLocked) {
		t.Fatalf("rekey of a file in use = %v, want ErrLocked", err)
	}
	s.Close()
	if err := os.WriteFile(path+".rekey", []byte("half a file from a killed rekey"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := file.Rekey(path, oldKey, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if st.KeySets != 3 || st.Keys != 6 || st.Records != 50_000 {
		t.Fatalf("rekeyed %+v", st)
	}
	_, err = file.Open(file.Options{Path: path, MasterKey: oldKey})
	if !errors.Is(err, file.ErrWrongMasterKey) || !strings.Contains(err.Error(), file.KeyID(newKey)) {
		t.Fatalf("old key after rekey: %v", err)
	}
	s, err = file.Open(file.Options{Path: path, MasterKey: newKey})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, want := range sets {
		got, err := s.Get(ctx, want.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != want.Version || len(got.Keys) != 2 || !bytes.Equal(got.Keys[0].Material, want.Keys[0].Material) || !bytes.Equal(got.Keys[1].Material, want.Keys[1].Material) {
			t.Fatalf("key set %s changed by the rekey", want.Name)
		}
	}
	r, err := s.GetRecord(ctx, "refresh", "refresh24999")
	if err != nil || string(r.Data) != "secret refresh 24999" || r.Version != 1 {
		t.Fatalf("record after rekey: %+v %v", r, err)
	}
	if _, err := os.Stat(path + ".rekey"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the new file's temporary name is left: %v", err)
	}
	if _, err := file.Rekey(path, newKey, newKey); err == nil {
		t.Fatal("rekey to the key in use accepted")
	}
}
