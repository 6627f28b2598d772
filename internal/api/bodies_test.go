package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
)

// Requests refused before their body is read (413 over the limit, 401
// without a token) get their answer, not a connection reset, even over
// keep-alive connections with large bodies: 1,000 of them.
func TestRefusedBodiesGetTheirAnswer(t *testing.T) {
	h, _ := apitest.Handler(t, apitest.Options{}, keystore.Policy{Name: "app", Algorithm: keystore.ES256,
		Rotation: "@daily", TokenTTL: 5 * time.Minute, JWKSMaxAge: time.Minute})
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 30 * time.Second}
	big := bytes.Repeat([]byte("x"), 1<<20+64<<10) // over the 1 MiB limit, past what the server drops on its own
	mid := bytes.Repeat([]byte("y"), 300<<10)
	cases := []struct {
		body  []byte
		token string
		want  int // 401 may be 429: failed authentications from one address are limited
	}{
		{big, apitest.ServiceToken, http.StatusRequestEntityTooLarge},
		{mid, "", http.StatusUnauthorized},
		{big, "wrong", http.StatusUnauthorized},
		{mid, apitest.ServiceToken, http.StatusBadRequest},
	}
	var mu sync.Mutex
	failures := map[string]int{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				c := cases[(w+i)%len(cases)]
				req, _ := http.NewRequest("POST", srv.URL+"/v1/keysets/app/sign", bytes.NewReader(c.body))
				if c.token != "" {
					req.Header.Set("Authorization", "Bearer "+c.token)
				}
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					failures[err.Error()]++
					mu.Unlock()
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != c.want && !(c.want == http.StatusUnauthorized && resp.StatusCode == http.StatusTooManyRequests) {
					mu.Lock()
					failures[fmt.Sprintf("status %d, want %d", resp.StatusCode, c.want)]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("of 1,000 refused requests: %v", failures)
	}
}
