package openapi_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/keyd-dev/keyd/backup"
	"github.com/keyd-dev/keyd/internal/api"
	"github.com/keyd-dev/keyd/internal/api/apitest"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/metrics"
	"github.com/keyd-dev/keyd/openapi"
	"github.com/keyd-dev/keyd/refresh"
)

func init() {
	// A compact JWT is text; kin-openapi knows JSON, forms and text/plain.
	openapi3filter.RegisterBodyDecoder("application/jwt", func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(body)
		return string(b), err
	})
}

func load(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openapi.YAML())
	if err != nil {
		t.Fatalf("openapi.yaml does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	return doc
}

// TestEveryRouteIsDocumented holds the server's routes and the document to
// each other: every route the API registers is in the document, and every
// documented operation is served.
func TestEveryRouteIsDocumented(t *testing.T) {
	doc := load(t)
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	served := api.Patterns(api.Options{Metrics: metrics.New(), MetricsRoute: true, Refresh: &refresh.Service{},
		Reload: func(context.Context) error { return nil },
		Backup: func(context.Context, io.Writer, []string) (*backup.Manifest, error) { return nil, nil }})
	sort.Strings(documented)
	sort.Strings(served)
	for _, p := range served {
		if !slices.Contains(documented, p) {
			t.Errorf("%s is served but not in openapi.yaml", p)
		}
	}
	for _, p := range documented {
		if !slices.Contains(served, p) {
			t.Errorf("%s is in openapi.yaml but not served", p)
		}
	}
}

// TestAnswersMatchTheDocument sends real requests, successes and each kind
// of error, to the API on loopback and validates requests and answers
// against the document's schemas with kin-openapi.
func TestAnswersMatchTheDocument(t *testing.T) {
	doc := load(t)
	doc.Servers = nil // match the test server's address
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	s := apitest.Serve(t, metrics.New(),
		keystore.Policy{Name: "app", Algorithm: keystore.ES256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute, RefreshTTL: time.Hour},
		keystore.Policy{Name: "hs", Algorithm: keystore.HS256, Rotation: "@daily", TokenTTL: 10 * time.Minute, JWKSMaxAge: time.Minute})
	_, signed := s.Call("POST", "/v1/keysets/app/sign", apitest.ServiceToken, `{"claims":{"sub":"a"}}`)
	token := between(signed, `"token":"`, `"`)
	_, pair := s.Call("POST", "/v1/keysets/app/token-pair", apitest.ServiceToken, `{"claims":{"sub":"a"}}`)
	refreshToken := between(pair, `"refresh_token":"`, `"`)
	_, ks := s.Call("GET", "/v1/keysets/hs", apitest.AdminToken, "")
	kid := between(ks, `"kid":"`, `"`)
	svc, admin := apitest.ServiceToken, apitest.AdminToken
	cases := []struct {
		method, path, token, body string
		status                    int
	}{
		{"GET", "/healthz", "", "", 200},
		{"GET", "/readyz", "", "", 200},
		{"GET", "/openapi.json", "", "", 200},
		{"GET", "/metrics", "", "", 200},
		{"GET", "/.well-known/jwks.json", "", "", 200},
		{"GET", "/v1/keysets/app/jwks.json", "", "", 200},
		{"GET", "/v1/keysets/nope/jwks.json", "", "", 404},
		{"GET", "/.well-known/openid-configuration", "", "", 404},
		{"POST", "/v1/keysets/app/sign", svc, `{"claims":{"sub":"alice"},"ttl":"5m"}`, 200},
		{"POST", "/v1/keysets/app/sign", svc, `{"claims":{"sub":"alice"},"ttl":"5h"}`, 400},
		{"POST", "/v1/keysets/app/sign", "", `{"claims":{}}`, 401},
		{"POST", "/v1/keysets/app/sign", admin, `{"claims":{}}`, 403},
		{"POST", "/v1/keysets/nope/sign", svc, `{"claims":{}}`, 404},
		{"POST", "/v1/keysets/app/sign", svc, `{"claims":{"x":"` + strings.Repeat("y", 1<<20) + `"}}`, 413},
		{"POST", "/v1/keysets/app/sign-batch", svc, `{"items":[{"claims":{"sub":"a"}},{"claims":{},"ttl":"9h"}]}`, 200},
		{"POST", "/v1/keysets/app/verify", svc, `{"token":"` + token + `","audience":"x"}`, 200},
		{"POST", "/v1/keysets/app/verify", svc, `{"token":"` + token + `"}`, 200},
		{"POST", "/v1/keysets/app/token-pair", svc, `{"claims":{"sub":"b"}}`, 200},
		{"POST", "/v1/keysets/app/refresh", svc, `{"refresh_token":"` + refreshToken + `"}`, 200},
		{"POST", "/v1/keysets/app/refresh", svc, `{"refresh_token":"` + refreshToken + `"}`, 401},
		{"POST", "/v1/keysets/hs/token-pair", svc, `{"claims":{}}`, 404},
		{"GET", "/v1/keysets", admin, "", 200},
		{"GET", "/v1/keysets/app", admin, "", 200},
		{"POST", "/v1/keysets/app/rotate", admin, `{}`, 409},
		{"POST", "/v1/keysets/app/rotate", admin, `{"force":true}`, 200},
		{"POST", "/v1/keysets/hs/keys/" + kid + "/revoke", admin, "", 200},
		{"POST", "/v1/keysets/app/revocations", admin, `{"sub":"alice","reason":"r"}`, 200},
		{"POST", "/v1/keysets/app/revocations", admin, `{}`, 400},
		{"GET", "/v1/keysets/app/revocations", admin, "", 200},
		{"GET", "/v1/keysets/app/revocations.jwt", "", "", 200},
		{"GET", "/v1/keysets/hs/revocations.jwt", "", "", 404},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, s.URL+c.path, strings.NewReader(c.body))
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Errorf("%s %s: not in the document: %v", c.method, c.path, err)
			continue
		}
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		if c.status < 400 || c.status == 401 || c.status == 403 || c.status == 404 || c.status == 409 {
			if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
				t.Errorf("%s %s: the request does not match the document: %v", c.method, c.path, err)
			}
		}
		req, _ = http.NewRequest(c.method, s.URL+c.path, strings.NewReader(c.body))
		req.Header = in.Request.Header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: %d, want %d: %.200s", c.method, c.path, resp.StatusCode, c.status, body)
			continue
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Options: &openapi3filter.Options{IncludeResponseStatus: true}}
		out.SetBodyBytes(body)
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			t.Errorf("%s %s -> %d: the answer does not match the document: %v", c.method, c.path, resp.StatusCode, err)
		}
	}
}

func between(s, from, to string) string {
	_, rest, _ := strings.Cut(s, from)
	v, _, _ := strings.Cut(rest, to)
	return v
}
