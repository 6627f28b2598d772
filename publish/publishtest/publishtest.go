// Package publishtest is the conformance suite every publishing target
// passes: Run(t, open).
package publishtest

import (
	"context"
	"errors"
	"testing"

	"github.com/keyd-dev/keyd/publish"
)

// Run checks a target; open returns a fresh, empty one.
func Run(t *testing.T, open func(t *testing.T) publish.Target) {
	ctx := context.Background()
	t.Run("PutGetOverwrite", func(t *testing.T) {
		tg := open(t)
		if _, err := tg.Get(ctx, ".well-known/jwks.json"); !errors.Is(err, publish.ErrNotFound) {
			t.Fatalf("Get of a missing file = %v, want ErrNotFound", err)
		}
		for _, body := range []string{`{"keys":[]}`, `{"keys":[{"kid":"a"}]}`} {
			if err := tg.Put(ctx, ".well-known/jwks.json", []byte(body), "application/json", "public, max-age=60"); err != nil {
				t.Fatal(err)
			}
			got, err := tg.Get(ctx, ".well-known/jwks.json")
			if err != nil || string(got) != body {
				t.Fatalf("Get after Put = %q, %v; want %q", got, err, body)
			}
		}
	})
	t.Run("Headers", func(t *testing.T) {
		tg := open(t)
		h, ok := tg.(interface {
			Headers(ctx context.Context, name string) (contentType, cacheControl string, err error)
		})
		if !ok {
			t.Skip("the target keeps no headers (a ConfigMap)")
		}
		for _, f := range []struct{ name, ct, cc string }{
			{".well-known/jwks.json", "application/json", "public, max-age=60"},
			{"revocations.jwt", "application/jwt", "public, max-age=30"},
		} {
			if err := tg.Put(ctx, f.name, []byte("x"), f.ct, f.cc); err != nil {
				t.Fatal(err)
			}
			if ct, cc, err := h.Headers(ctx, f.name); err != nil || ct != f.ct || cc != f.cc {
				t.Fatalf("%s served as %q, %q (%v); want %q, %q", f.name, ct, cc, err, f.ct, f.cc)
			}
		}
	})
	t.Run("FilesApart", func(t *testing.T) {
		tg := open(t)
		files := map[string]string{".well-known/jwks.json": `{"keys":[]}`, ".well-known/openid-configuration": `{"issuer":"https://x"}`, "openid/v1/jwks": `{"keys":[{"kid":"k"}]}`}
		for name, body := range files {
			if err := tg.Put(ctx, name, []byte(body), "application/json", "public, max-age=60"); err != nil {
				t.Fatal(err)
			}
		}
		for name, body := range files {
			if got, err := tg.Get(ctx, name); err != nil || string(got) != body {
				t.Fatalf("Get(%s) = %q, %v; want %q", name, got, err, body)
			}
		}
	})
}
