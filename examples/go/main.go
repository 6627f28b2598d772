// Command example is a Go service that takes keyd's tokens with the verify
// package's middleware: the JWKS and the revocation list cached, the
// algorithm pinned, aud and iss checked, keyd's codes in 401 answers.
//
//	KEYD_URL=http://127.0.0.1:8080 go run ./examples/go [ADDR]   (default 127.0.0.1:8090)
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/keyd-dev/keyd/verify"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	v, err := verify.New(ctx, cmp.Or(os.Getenv("KEYD_URL"), "http://127.0.0.1:8080"), cmp.Or(os.Getenv("KEYD_KEYSET"), "app"), verify.Options{
		Algorithm: cmp.Or(os.Getenv("KEYD_ALG"), "ES256"),
		Audience:  []string{cmp.Or(os.Getenv("APP_AUDIENCE"), "billing")},
		Issuer:    cmp.Or(os.Getenv("APP_ISSUER"), "https://keyd.example"),
		Leeway:    verify.NoLeeway,
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/me", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := verify.Claims(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"user": claims["sub"]})
	})))
	addr := "127.0.0.1:8090"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	srv := &http.Server{Addr: addr, Handler: mux}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	log.Printf("listening on http://%s", addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
