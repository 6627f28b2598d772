package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

// v1Decode is how the API decoded bodies before: encoding/json's Decoder
// over a copy, unknown fields refused, one value.
func v1Decode(body string, v any) string {
	dec := json.NewDecoder(bytes.NewReader([]byte(body)))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return "bad_json: request body is not valid: " + jsonProblem(err)
	}
	if dec.More() {
		return "bad_json: request body has data after the JSON object"
	}
	return "ok"
}

// TestDecodeKeepsV1Semantics: decode reads bodies straight from the bytes
// with json/v2 under encoding/json's options, and answers every body as
// the Decoder did, error messages included.
func TestDecodeKeepsV1Semantics(t *testing.T) {
	type req struct {
		Token    string                     `json:"token"`
		Audience []string                   `json:"audience,omitempty"`
		TTL      string                     `json:"ttl"`
		Claims   map[string]json.RawMessage `json:"claims"`
		N        int                        `json:"n"`
	}
	for _, body := range []string{`{"token":"x"}`, `{"Token":"x"}`, `{"token":"x","tll":1}`, `{"token":1}`, `{"claims":[1]}`, `{"token":"x"} {}`, `{"token":"x"} x`, `{"token":`, `[`, `{"audience":"a"}`, `{"n":1.5}`, `{"n":"1"}`, `{"token":"\xff"}`, `{"token":"x","token":"y"}`, `null`, `{"claims":{"a":1,"a":2}}`, `  {"token":"x"}  `, `{"claims": {"sub": "<b>"}}`} {
		var a, b req
		want := v1Decode(body, &a)
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		got := "ok"
		if err := decode(httptest.NewRecorder(), r, &b, false); err != nil {
			e := err.(*apiError)
			got = e.code + ": " + e.message
		}
		if got != want {
			t.Errorf("%s:\n old %s\n new %s", body, want, got)
		}
	}
}
