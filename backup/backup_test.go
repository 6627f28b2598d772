package backup_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
)

var now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// bolt opens a real bbolt store with a master key of its own, as a State.
func bolt(t *testing.T) (backup.State, *file.Store) {
	t.Helper()
	k, err := file.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	mk, _ := file.ParseMasterKey(k)
	s, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: mk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return backup.State{KeySets: s, Tokens: records.New(s), Records: s, Kinds: []string{"refresh", "refresh-subject"}, Meta: s}, s
}

// fill writes two key sets, revocations of both kinds (one expired) and
// login records into st, returning the key sets as stored.
func fill(t *testing.T, st backup.State) []*keystore.KeySet {
	t.Helper()
	ctx := context.Background()
	var out []*keystore.KeySet
	for _, ks := range []*keystore.KeySet{keystoretest.KeySet(t, "api", keystore.ES256), keystoretest.KeySet(t, "legacy", keystore.HS256)} {
		stored, err := st.KeySets.Put(ctx, ks)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, stored)
	}
	for _, r := range []tokenstate.Revocation{
		{KeySet: "api", JTI: "stolen-1", Expires: now.Add(time.Hour), RevokedAt: now, Reason: "stolen"},
		{KeySet: "api", Subject: "mallory", Before: now, Expires: now.Add(2 * time.Hour), RevokedAt: now},
		{KeySet: "legacy", JTI: "old", Expires: now.Add(-time.Hour), RevokedAt: now.Add(-2 * time.Hour)},
	} {
		if _, err := st.Tokens.PutRevocation(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := st.Records.PutRecord(ctx, "refresh", &keystore.Record{ID: fmt.Sprint("login-", i), Data: fmt.Appendf(nil, `{"secret-verifier":"v%d"}`, i), Expires: now.Add(24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func identity(t *testing.T) (*age.X25519Identity, []string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id, []string{id.Recipient().String()}
}

func makeBackup(t *testing.T, src backup.State, recipients []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := backup.Write(context.Background(), &buf, src, backup.Options{Recipients: recipients, KeydVersion: "test", Now: now, SpoolDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// filledBackup is a backup of a filled bbolt store, made to a new identity.
type filledBackup struct {
	raw    []byte
	id     *age.X25519Identity
	recips []string
	sets   []*keystore.KeySet
}

func backupOfFilled(t *testing.T) filledBackup {
	t.Helper()
	src, _ := bolt(t)
	sets := fill(t, src)
	id, recips := identity(t)
	return filledBackup{raw: makeBackup(t, src, recips), id: id, recips: recips, sets: sets}
}

func restore(t *testing.T, raw []byte, id age.Identity, dst backup.State, opts backup.RestoreOptions) (*backup.Result, error) {
	t.Helper()
	opts.Now = now
	return backup.Restore(context.Background(), bytes.NewReader(raw), []age.Identity{id}, dst, opts)
}

func TestRoundTripIntoAnotherStore(t *testing.T) {
	ctx := context.Background()
	b := backupOfFilled(t)
	want, id, raw := b.sets, b.id, b.raw

	dst, _ := bolt(t) // another file, another master key
	res, err := restore(t, raw, id, dst, backup.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.KeySets != 2 || res.Revocations != 2 || res.Records != 3 || res.Expired != 1 {
		t.Fatalf("restored %+v", res)
	}
	for _, w := range want {
		got, err := dst.KeySets.Get(ctx, w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Keys) != len(w.Keys) {
			t.Fatalf("%s: %d keys, want %d", w.Name, len(got.Keys), len(w.Keys))
		}
		for i, k := range w.Keys {
			g := got.Keys[i]
			if g.ID != k.ID || g.State != k.State || !bytes.Equal(g.Material, k.Material) || !g.ActivatedAt.Equal(k.ActivatedAt) {
				t.Fatalf("%s key %d: got %s %s, want %s %s (or other material)", w.Name, i, g.ID, g.State, k.ID, k.State)
			}
		}
	}
	revs, err := tokenstate.All(ctx, dst.Tokens)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range revs {
		ids = append(ids, r.KeySet+"/"+r.JTI+r.Subject)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"api/mallory", "api/stolen-1"}) {
		t.Fatalf("revocations %v", ids)
	}
	recs, err := dst.Records.ListRecords(ctx, "refresh")
	if err != nil || len(recs) != 3 || !strings.Contains(string(recs[0].Data), "secret-verifier") {
		t.Fatalf("records %v %v", recs, err)
	}
	if err := backup.CheckNotRestoring(ctx, dst.Meta); err != nil {
		t.Fatalf("marker left after a whole restore: %v", err)
	}
}

// TestNoSecretInClear: neither a private key, an HMAC secret nor a login
// record can be read in the file without the identity.
func TestNoSecretInClear(t *testing.T) {
	b := backupOfFilled(t)
	sets, raw := b.sets, b.raw
	for _, ks := range sets {
		for _, k := range ks.Keys {
			for _, form := range [][]byte{k.Material, []byte(base64.StdEncoding.EncodeToString(k.Material)), []byte(base64.RawURLEncoding.EncodeToString(k.Material))} {
				if bytes.Contains(raw, form) {
					t.Fatalf("key %s of %s readable in the backup", k.ID, ks.Name)
				}
			}
		}
	}
	for _, s := range []string{"secret-verifier", "stolen-1", "mallory"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Fatalf("%q readable in the backup", s)
		}
	}
	m, err := backup.Inspect(bytes.NewReader(raw), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.KeySets) != 2 || m.Revocations != 3 || m.Records["refresh"] != 3 || m.KeySets[1].Name != "legacy" {
		t.Fatalf("manifest %+v", m)
	}
}

// TestDamagedBackupChangesNothing: altered, truncated or re-labelled
// files, and the wrong identity, are refused before anything is written.
func TestDamagedBackupChangesNothing(t *testing.T) {
	ctx := context.Background()
	b := backupOfFilled(t)
	id, raw := b.id, b.raw
	head := bytes.Index(raw, []byte("\n{")) + 1
	body := bytes.IndexByte(raw[head:], '\n') + head + 1

	flipped := slices.Clone(raw)
	flipped[len(raw)-200] ^= 1
	relabelled := bytes.Replace(raw, []byte(`"revocations":3`), []byte(`"revocations":4`), 1)
	other, _ := age.GenerateX25519Identity()
	cases := []struct {
		name string
		raw  []byte
		id   age.Identity
		want error
	}{
		{"one bit flipped", flipped, id, backup.ErrDamaged},
		{"truncated", raw[:len(raw)-100], id, backup.ErrDamaged},
		{"cut in the middle", raw[:body+(len(raw)-body)/2], id, backup.ErrDamaged},
		{"manifest in clear altered", relabelled, id, backup.ErrDamaged},
		{"another identity", raw, other, backup.ErrIdentity},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst, _ := bolt(t)
			_, err := restore(t, c.raw, c.id, dst, backup.RestoreOptions{})
			if !errors.Is(err, c.want) {
				t.Fatalf("restore = %v, want %v", err, c.want)
			}
			if sets, _ := dst.KeySets.List(ctx); len(sets) != 0 {
				t.Fatalf("%d key sets written from a refused backup", len(sets))
			}
			if n, _ := tokenstate.All(ctx, dst.Tokens); len(n) != 0 {
				t.Fatalf("%d revocations written from a refused backup", len(n))
			}
			if err := backup.CheckNotRestoring(ctx, dst.Meta); err != nil {
				t.Fatalf("a refused backup left a marker: %v", err)
			}
		})
	}
	if _, err := backup.Inspect(bytes.NewReader(raw[:len(raw)-1]), true); !errors.Is(err, backup.ErrDamaged) {
		t.Fatalf("inspect of a truncated file = %v", err)
	}
}

func TestRestoreRefusesAStoreInUse(t *testing.T) {
	ctx := context.Background()
	b := backupOfFilled(t)
	id, raw := b.id, b.raw

	dst, _ := bolt(t)
	mine := keystoretest.KeySet(t, "mine", keystore.ES256)
	if _, err := dst.KeySets.Put(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if _, err := restore(t, raw, id, dst, backup.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "holds 1 key set") {
		t.Fatalf("restore into a store in use = %v", err)
	}
	if _, err := dst.KeySets.Get(ctx, "api"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("refused restore wrote a key set: %v", err)
	}
	res, err := restore(t, raw, id, dst, backup.RestoreOptions{Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Kept, []string{"mine"}) {
		t.Fatalf("kept %v", res.Kept)
	}
	// Restoring over the restored store (Replace) writes the same again.
	if _, err := restore(t, raw, id, dst, backup.RestoreOptions{Replace: true}); err != nil {
		t.Fatal(err)
	}
}

// TestStoppedRestoreIsFinished: a restore stopped after its marker (kill
// -9 half-way) leaves a store keyd refuses to serve; the same backup
// finishes it, another is refused.
func TestStoppedRestoreIsFinished(t *testing.T) {
	ctx := context.Background()
	b := backupOfFilled(t)
	id, recips, raw := b.id, b.recips, b.raw
	dst, _ := bolt(t)

	// Stop the restore after its first writes: a context cancelled by the
	// first key set written.
	stopped := &stopAfter{Store: dst.KeySets.(*file.Store)}
	stopped.n.Store(1)
	half := dst
	half.KeySets = stopped
	if _, err := restore(t, raw, id, half, backup.RestoreOptions{}); err == nil {
		t.Fatal("restore with a failing store succeeded")
	}
	if err := backup.CheckNotRestoring(ctx, dst.Meta); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("half a restore is servable: %v", err)
	}
	src2, _ := bolt(t)
	fill(t, src2)
	raw2 := makeBackup(t, src2, recips)
	if _, err := restore(t, raw2, id, dst, backup.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "another backup") {
		t.Fatalf("restore of another backup over a stopped one = %v", err)
	}
	res, err := restore(t, raw, id, dst, backup.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed || res.KeySets != 2 {
		t.Fatalf("resumed restore %+v", res)
	}
	if err := backup.CheckNotRestoring(ctx, dst.Meta); err != nil {
		t.Fatal(err)
	}
}

// stopAfter is a real store whose Puts fail after n of them, as a process
// killed half-way through would leave it.
type stopAfter struct {
	*file.Store
	n atomic.Int64 // Puts come from several goroutines
}

func (s *stopAfter) Put(ctx context.Context, ks *keystore.KeySet) (*keystore.KeySet, error) {
	if s.n.Add(-1) < 0 {
		return nil, fmt.Errorf("%w: stopped", keystore.ErrUnavailable)
	}
	return s.Store.Put(ctx, ks)
}

func TestRecipients(t *testing.T) {
	if _, err := backup.ParseRecipients(nil); err == nil {
		t.Fatal("no recipient accepted")
	}
	_, r := identity(t)
	_, err := backup.ParseRecipients([]string{r[0], "AGE-SECRET-KEY-1QQQ"})
	if err == nil || !strings.Contains(err.Error(), "recipients[1]") || strings.Contains(err.Error(), "SECRET-KEY-1QQQ") {
		t.Fatalf("an identity given as recipient: %v", err)
	}
	path := filepath.Join(t.TempDir(), "recipients.txt")
	if err := os.WriteFile(path, []byte("# ops\n\n"+r[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := backup.ReadRecipientsFile(path)
	if err != nil || !slices.Equal(got, r) {
		t.Fatalf("recipients file: %v %v", got, err)
	}
}
