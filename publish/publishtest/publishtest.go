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
