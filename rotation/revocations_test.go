package rotation_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/rotation"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate"
	"github.com/keyd-dev/keyd/tokenstate/records"
)

// Revocations that older versions kept inside a key set's document move
// to entries of their own at start (once): the index has them, the token
// state has them, the document no longer does, and a restart finds them.
func TestEmbeddedRevocationsMoveToEntries(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyd.db")
	store, err := file.Open(file.Options{Path: path, MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c := &clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	ks := keystoretest.KeySet(t, "default", keystore.ES256)
	ks.Revocations = keystore.Revocations{
		Tokens:   []keystore.TokenRevocation{{JTI: "stolen", Expires: c.t.Add(time.Minute), RevokedAt: c.t}},
		Subjects: []keystore.SubjectRevocation{{Subject: "alice", Before: c.t, Until: c.t.Add(20 * time.Minute), RevokedAt: c.t}},
	}
	if _, err := store.Put(ctx, ks); err != nil {
		t.Fatal(err)
	}
	startWith := func() (*rotation.Manager, *signer.Signer) {
		sg := signer.New(c.now, nil)
		m := rotation.NewManager(rotation.Options{Store: store, Policies: []keystore.Policy{policy(keystore.ES256)}, Generator: keystoretest.FastGenerator,
			Now: c.now, Logger: slog.New(slog.DiscardHandler), Listeners: []rotation.Listener{sg},
			TokenState: records.New(store), Revocations: sg.Revocations()})
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return m, sg
	}
	m, sg := startWith()
	if m.Revocations().Len("default") != 2 {
		t.Fatalf("index: %d entries", m.Revocations().Len("default"))
	}
	if at, ok := sg.SubjectCutoff("default", "alice"); !ok || !at.Equal(c.t) {
		t.Fatalf("alice's cut-off: %v %v", at, ok)
	}
	stored, _ := store.Get(ctx, "default")
	if stored.Revocations.Len() != 0 {
		t.Fatalf("the document still holds %d revocations", stored.Revocations.Len())
	}
	if all, _ := tokenstate.All(ctx, records.New(store)); len(all) != 2 {
		t.Fatalf("token state: %d entries", len(all))
	}
	// A new revocation is one entry; a restart finds all three.
	if _, err := m.RevokeToken(ctx, "default", "another", c.t.Add(time.Minute), "lost"); err != nil {
		t.Fatal(err)
	}
	m, _ = startWith()
	if m.Revocations().Len("default") != 3 {
		t.Fatalf("after a restart: %d entries", m.Revocations().Len("default"))
	}
}
