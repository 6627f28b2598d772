package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/internal/rawjwt"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/metrics"
)

// bareVerify is the least a verify endpoint on net/http does for an HS256
// token: decode {"token"}, verify it with the standard library alone
// (rawjwt), answer the claims.
func bareVerify(secret []byte, now func() time.Time) http.HandlerFunc {
	sigOK := rawjwt.HS256(secret)
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Token string `json:"token"`
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		claims, ok := rawjwt.Claims(req.Token, sigOK, now())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"valid": ok, "claims": claims})
	}
}

// BenchmarkVerifyHandlerRatio runs keyd's verify handler (metrics on, as
// in production) and the bare one on the same HS256 token, taking turns
// in bursts, and reports keyd's speed as a fraction of the bare
// handler's: what keyd's API adds to a verification, without the network.
func BenchmarkVerifyHandlerRatio(b *testing.B) {
	h, s := apitest.Handler(b, apitest.Options{Metrics: metrics.New()},
		keystore.Policy{Name: "bench", Algorithm: keystore.HS256, Rotation: "@daily", TokenTTL: 15 * time.Minute, JWKSMaxAge: 5 * time.Minute, Leeway: time.Minute})
	ks, _, _ := s.Manager.KeySet("bench")
	active, _ := ks.Active()
	bare := bareVerify([]byte(active.Material), s.Clock.Now)
	code, signed := call(b, h, "POST", "/v1/keysets/bench/sign", "svc-token", `{"claims": {"sub": "alice", "aud": "billing"}}`)
	var tok struct{ Token string }
	if code != 200 || json.Unmarshal(signed, &tok) != nil {
		b.Fatalf("sign: %d %s", code, signed)
	}
	body := `{"token":"` + tok.Token + `"}`
	handlers := []http.Handler{bare, h}
	var times [2][]float64
	for round := 0; b.Loop(); round++ {
		for j := range handlers {
			i := (j + round) % 2
			start := time.Now()
			for range 200 {
				if code, out := call(b, handlers[i], "POST", "/v1/keysets/bench/verify", "svc-token", body); code != 200 || !strings.Contains(string(out), `"valid":true`) {
					b.Fatalf("%d %s", code, out)
				}
			}
			times[i] = append(times[i], float64(time.Since(start).Nanoseconds())/200)
		}
	}
	median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	bareNs, keydNs := median(times[0]), median(times[1])
	b.ReportMetric(bareNs, "bare-ns/op")
	b.ReportMetric(keydNs, "keyd-ns/op")
	b.ReportMetric(bareNs/keydNs, "keyd-speed/bare")
}
