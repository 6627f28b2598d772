package publish_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/jwks"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/keystore/keystoretest"
	"github.com/keyd-dev/keyd/publish"
	"github.com/keyd-dev/keyd/publish/blob"
)

var start = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// source is a real jwks.Publisher with key sets es (ES256), ed (EdDSA)
// and hs (HS256, never published).
func source(t *testing.T) (*jwks.Publisher, map[string]*keystore.KeySet) {
	t.Helper()
	pub := jwks.New()
	sets := map[string]*keystore.KeySet{}
	for name, alg := range map[string]keystore.Algorithm{"es": keystore.ES256, "ed": keystore.EdDSA, "hs": keystore.HS256} {
		ks := keystoretest.KeySet(t, name, alg)
		ks.Version = 1
		if err := pub.Load(keystore.Policy{Name: name, Algorithm: alg, TokenTTL: 5 * time.Minute, JWKSMaxAge: 2 * time.Minute}, ks); err != nil {
			t.Fatal(err)
		}
		sets[name] = ks
	}
	return pub, sets
}

func folder(t *testing.T) (*blob.Target, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "site")
	tg, err := blob.Open(context.Background(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg, dir
}

// TestPublishesWhatVerifiersRead: the JWKS of the target's key sets and
// the discovery document pointing at it, with content type and cache
// control, every kid held from the first confirmed write.
func TestPublishesWhatVerifiersRead(t *testing.T) {
	ctx := context.Background()
	src, sets := source(t)
	tg, _ := folder(t)
	clock := keystoretest.NewClock(start)
	var reported []string
	p := publish.New(publish.Spec{Name: "bucket", KeySets: []string{"es", "ed"}, Files: []string{publish.FileJWKS, publish.FileDiscovery},
		Issuer: "https://issuer.example/cluster", Required: true}, tg, src, clock.Now, func(target string, err error) {
		reported = append(reported, target+":"+errString(err))
	})
	if err := p.Once(ctx, false); err != nil {
		t.Fatal(err)
	}
	raw, err := tg.Get(ctx, publish.DefaultJWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []struct{ Kid, Alg string } `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil || len(set.Keys) != 4 {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	ct, cc, err := tg.Headers(ctx, publish.DefaultJWKSPath)
	if err != nil || ct != "application/json" || cc != "public, max-age=120" {
		t.Fatalf("headers %q %q %v", ct, cc, err)
	}
	disc, _ := tg.Get(ctx, publish.DiscoveryPath)
	if !strings.Contains(string(disc), `"jwks_uri":"https://issuer.example/cluster/.well-known/jwks.json"`) ||
		!strings.Contains(string(disc), `"id_token_signing_alg_values_supported":["ES256","EdDSA"]`) {
		t.Fatalf("discovery %s", disc)
	}
	pending, _ := sets["es"].Pending()
	since, cacheFor, ok := p.Held(pending.ID)
	if !ok || !since.Equal(start) || cacheFor != 2*time.Minute {
		t.Fatalf("held %v %v %v", since, cacheFor, ok)
	}
	clock.Add(time.Minute)
	if err := p.Once(ctx, true); err != nil { // the timer's re-assertion
		t.Fatal(err)
	}
	if since, _, _ := p.Held(pending.ID); !since.Equal(start) {
		t.Fatalf("held since %v after a re-assertion, want the first write's %v", since, start)
	}
	if len(reported) != 2 || reported[0] != "bucket:" {
		t.Fatalf("reported %v", reported)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestConsumerRules: algorithms narrow the JWKS, and a JWKS past max_keys
// is refused (nothing written) naming the limit.
func TestConsumerRules(t *testing.T) {
	ctx := context.Background()
	src, _ := source(t)
	tg, _ := folder(t)
	p := publish.New(publish.Spec{Name: "aws", KeySets: []string{"es", "ed"}, Files: []string{publish.FileJWKS}, Algorithms: []string{"ES256"}}, tg, src, time.Now, nil)
	if err := p.Once(ctx, false); err != nil {
		t.Fatal(err)
	}
	raw, _ := tg.Get(ctx, publish.DefaultJWKSPath)
	if strings.Contains(string(raw), "EdDSA") || strings.Count(string(raw), `"kid"`) != 2 {
		t.Fatalf("JWKS %s, want the two ES256 keys only", raw)
	}
	tg2, _ := folder(t)
	p = publish.New(publish.Spec{Name: "small", KeySets: []string{"es", "ed"}, Files: []string{publish.FileJWKS}, MaxKeys: 3}, tg2, src, time.Now, nil)
	if err := p.Once(ctx, false); err == nil || !strings.Contains(err.Error(), "max_keys 3") {
		t.Fatalf("a JWKS of 4 keys to max_keys 3: %v", err)
	}
	if _, err := tg2.Get(ctx, publish.DefaultJWKSPath); err == nil {
		t.Fatal("a JWKS past max_keys was written")
	}
}

// TestGate: a pending key may sign once every required target has held it
// for its cache time; a target that does not hold it holds the rotation;
// targets that are not required, or publish other key sets, never do.
func TestGate(t *testing.T) {
	ctx := context.Background()
	src, sets := source(t)
	clock := keystoretest.NewClock(start)
	a, _ := folder(t)
	b, _ := folder(t)
	req := publish.New(publish.Spec{Name: "bucket", KeySets: []string{"es"}, Files: []string{publish.FileJWKS}, Required: true}, a, src, clock.Now, nil)
	opt := publish.New(publish.Spec{Name: "mirror", KeySets: []string{"es"}, Files: []string{publish.FileJWKS}}, b, src, clock.Now, nil)
	set := publish.Set{req, opt}
	pending, _ := sets["es"].Pending()
	at, gated, why := set.Held("es", pending.ID, clock.Now())
	if !gated || !at.IsZero() || !strings.Contains(why, "bucket") || strings.Contains(why, "mirror") {
		t.Fatalf("before any write: %v %v %q", at, gated, why)
	}
	if err := req.Once(ctx, false); err != nil {
		t.Fatal(err)
	}
	at, _, why = set.Held("es", pending.ID, clock.Now())
	if !at.Equal(start.Add(2*time.Minute)) || !strings.Contains(why, "caches") {
		t.Fatalf("held: ready at %v (%q), want the cache time after the write", at, why)
	}
	clock.Add(2 * time.Minute)
	if _, _, why := set.Held("es", pending.ID, clock.Now()); why != "" {
		t.Fatalf("after the cache time: still waiting: %q", why)
	}
	if _, gated, _ := set.Held("ed", "any", clock.Now()); gated {
		t.Fatal("a key set no required target publishes is gated")
	}
	// A target that writes only the discovery document holds no key.
	c, _ := folder(t)
	disc := publish.New(publish.Spec{Name: "discovery-only", KeySets: []string{"es"}, Files: []string{publish.FileDiscovery}, Issuer: "https://x", Required: true}, c, src, clock.Now, nil)
	if err := disc.Once(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := disc.Held(pending.ID); ok {
		t.Fatal("a target without the JWKS counts as holding the pending key")
	}
}

// hanging is a target whose writes never answer (a store frozen
// mid-request) until their context ends.
type hanging struct{ publish.Target }

func (hanging) Put(ctx context.Context, _ string, _ []byte, _, _ string) error {
	<-ctx.Done()
	return ctx.Err()
}

// A store that stops answering is a reported error within Spec.Timeout,
// retried, never a publisher stuck for good.
func TestRunTimesOutAHangingTarget(t *testing.T) {
	src, _ := source(t)
	tg, _ := folder(t)
	errs := make(chan error, 8)
	p := publish.New(publish.Spec{Name: "frozen", KeySets: []string{"es"}, Files: []string{publish.FileJWKS}, Timeout: 20 * time.Millisecond},
		hanging{tg}, src, time.Now, func(_ string, err error) { errs <- err })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case err := <-errs:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("reported %v, want the round's deadline", err)
		}
	case <-time.After(20 * time.Second): // a bound on a failure, not a wait for time to pass
		t.Fatal("a hanging target was never reported")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after its context ended", err)
	}
}
