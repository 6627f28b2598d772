package sealed_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyd-dev/keyd/backends/file"
	"github.com/keyd-dev/keyd/internal/testredis"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/refresh"
	"github.com/keyd-dev/keyd/signer"
	"github.com/keyd-dev/keyd/tokenstate/redis"
	"github.com/keyd-dev/keyd/tokenstate/sealed"
)

type fixture struct {
	svc      *refresh.Service
	sg       *signer.Signer
	rdb      *goredis.Client
	inner    keystore.RecordStore
	recs     *sealed.Records
	keys     *file.Store
	rejected map[string]int
}

// setup is a refresh service whose logins live in a real redis-server,
// sealed under a key kept in a bbolt key store.
func setup(t *testing.T) *fixture {
	t.Helper()
	srv := testredis.Start(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	keys, err := file.Open(file.Options{Path: filepath.Join(t.TempDir(), "keyd.db"), MasterKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = keys.Close() })
	f := &fixture{rdb: rdb, keys: keys, inner: redis.New(rdb, "keyd:").Records(), rejected: map[string]int{}}
	key, migrated, err := sealed.Key(context.Background(), keys, "redis:test")
	if err != nil || migrated {
		t.Fatalf("the sealing key: %v, migrated %v", err, migrated)
	}
	if f.recs, err = sealed.New(f.inner, key, func(kind string) { f.rejected[kind]++ }); err != nil {
		t.Fatal(err)
	}
	f.sg = signer.New(time.Now, nil)
	ks := keystoretest.KeySet(t, "app", keystore.ES256)
	ks.Version = 1
	if err := f.sg.Load(keystore.Policy{Name: "app", Algorithm: keystore.ES256, TokenTTL: 5 * time.Minute, JWKSMaxAge: time.Minute}, ks); err != nil {
		t.Fatal(err)
	}
	f.svc = refresh.New(f.recs, f.sg, time.Now, func(string) (refresh.Settings, bool) { return refresh.Settings{TTL: time.Hour}, true })
	return f
}

// forgedToken is the refresh token of family id at gen under secret, as
// anyone who knows keyd's token format computes it.
func forgedToken(keyset, id string, gen uint64, secret []byte) string {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "keyd-refresh/v1|%s|%s|%d", keyset, id, gen)
	fid, _ := base64.RawURLEncoding.DecodeString(id)
	b := binary.BigEndian.AppendUint64(fid, gen)
	return "krt_" + base64.RawURLEncoding.EncodeToString(append(b, m.Sum(nil)...))
}

// family is a login as an attacker would write it in clear.
func family(secret []byte, sub string) []byte {
	now := time.Now().UTC()
	data, _ := json.Marshal(map[string]any{
		"keyset": "app", "claims": json.RawMessage(`{"sub":"` + sub + `","role":"superuser"}`), "secret": secret,
		"generation": 1, "created_at": now, "expires_at": now.Add(time.Hour),
	})
	return data
}

// A Redis writer sets keyd:rec:refresh:<id> to a login of its choosing
// and builds the matching refresh token: keyd signs nothing for it (the
// attack worked while records were stored in clear), counts it, and a
// Redis reader finds no secret, claim or subject in keyd's keys.
func TestRedisWriterCannotMintALogin(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	id := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16))
	secret := bytes.Repeat([]byte{1}, 32)
	raw := append(binary.BigEndian.AppendUint64(nil, 1), family(secret, "admin")...)
	if err := f.rdb.Set(ctx, "keyd:rec:refresh:"+id, raw, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	pair, err := f.svc.Refresh(ctx, "app", forgedToken("app", id, 1, secret))
	if !errors.Is(err, refresh.ErrInvalid) {
		t.Fatalf("a forged login refreshed: %v, %+v", err, pair)
	}
	if f.rejected[refresh.Kind] == 0 {
		t.Fatal("the forged record was not counted")
	}

	// A real login: its record in Redis holds nothing readable.
	f.rdb.Del(ctx, "keyd:rec:refresh:"+id)
	login, err := f.svc.Issue(ctx, "app", signer.Claims{"sub": json.RawMessage(`"alice"`), "email": json.RawMessage(`"alice@example.com"`)})
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := f.rdb.Keys(ctx, "keyd:*").Result()
	for _, k := range keys {
		v, _ := f.rdb.Get(ctx, k).Bytes()
		if bytes.Contains(v, []byte("alice")) || bytes.Contains(v, []byte("secret")) || bytes.Contains(v, []byte("claims")) {
			t.Fatalf("Redis key %s holds a login in clear: %q", k, v)
		}
	}
	// Moving the real sealed record to the forged id does not make it a
	// login there (the id is bound into the seal).
	lid := loginID(t, login.RefreshToken)
	real, _ := f.rdb.Get(ctx, "keyd:rec:refresh:"+lid).Bytes()
	if err := f.rdb.Set(ctx, "keyd:rec:refresh:"+id, real, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Refresh(ctx, "app", forgedToken("app", id, 1, secret)); !errors.Is(err, refresh.ErrInvalid) {
		t.Fatalf("a sealed record moved to another id: %v", err)
	}
	next, err := f.svc.Refresh(ctx, "app", login.RefreshToken)
	if err != nil || next.RefreshToken == "" {
		t.Fatalf("the real login's refresh: %v", err)
	}
}

// loginID is the family id a refresh token names.
func loginID(t *testing.T, tok string) string {
	b, err := base64.RawURLEncoding.DecodeString(tok[len("krt_"):])
	if err != nil || len(b) < 16 {
		t.Fatalf("refresh token %q", tok)
	}
	return base64.RawURLEncoding.EncodeToString(b[:16])
}

// Logins an older keyd wrote in clear are sealed once by Migrate and keep
// working; the key store remembers it, and after that an unsealed record
// is refused like a forged one.
func TestMigrateSealsOlderLogins(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	old := refresh.New(f.inner, f.sg, time.Now, func(string) (refresh.Settings, bool) { return refresh.Settings{TTL: time.Hour}, true })
	login, err := old.Issue(ctx, "app", signer.Claims{"sub": json.RawMessage(`"bob"`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Refresh(ctx, "app", login.RefreshToken); !errors.Is(err, refresh.ErrInvalid) {
		t.Fatalf("an unsealed login before the migration: %v, want refused", err)
	}
	n, err := f.recs.Migrate(ctx, refresh.Kind, refresh.SubjectKind)
	if err != nil || n != 1 {
		t.Fatalf("migrate: %d records, %v", n, err)
	}
	if err := sealed.Migrated(ctx, f.keys, "redis:test"); err != nil {
		t.Fatal(err)
	}
	if _, migrated, err := sealed.Key(ctx, f.keys, "redis:test"); err != nil || !migrated {
		t.Fatalf("the key store forgot the migration: %v %v", migrated, err)
	}
	if _, err := f.svc.Refresh(ctx, "app", login.RefreshToken); err != nil {
		t.Fatalf("the older login after the migration: %v", err)
	}
	// A subject cut-off record forged in clear is replaced, not a conflict.
	if err := f.rdb.Set(ctx, "keyd:rec:"+refresh.SubjectKind+":x", append(binary.BigEndian.AppendUint64(nil, 3), "{}"...), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := keystore.UpdateRecord(ctx, f.recs, refresh.SubjectKind, "x", func(*keystore.Record) ([]byte, time.Time, error) {
		return []byte(`{"ok":true}`), time.Time{}, nil
	}); err != nil {
		t.Fatalf("updating over a forged record: %v", err)
	}
	if r, err := f.recs.GetRecord(ctx, refresh.SubjectKind, "x"); err != nil || string(r.Data) != `{"ok":true}` {
		t.Fatalf("after the update: %v", err)
	}
}

// BenchmarkRecord is a login's write and read on a real redis-server,
// sealed and in clear: what sealing adds to a refresh's record round
// trips (compare the two in one run).
func BenchmarkRecord(b *testing.B) {
	srv := testredis.Start(b)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	inner := redis.New(rdb, "bench:").Records()
	recs, err := sealed.New(inner, bytes.Repeat([]byte{1}, 32), nil)
	if err != nil {
		b.Fatal(err)
	}
	data := family(bytes.Repeat([]byte{2}, 32), "alice")
	n := 0 // record ids, never reused across rounds
	for _, c := range []struct {
		name string
		rs   keystore.RecordStore
	}{{"clear", inner}, {"sealed", recs}, {"clear", inner}, {"sealed", recs}} {
		name, rs := c.name, c.rs
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				n++
				id := fmt.Sprintf("%s-%d", name, n)
				if _, err := rs.PutRecord(ctx, refresh.Kind, &keystore.Record{ID: id, Data: data}); err != nil {
					b.Fatal(err)
				}
				if _, err := rs.GetRecord(ctx, refresh.Kind, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
