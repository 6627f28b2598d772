package tokencheck

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
)

var jwaHS256 = jwa.HS256()

func hmacSHA256(secret []byte, input string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return m.Sum(nil)
}

// TestClaimsDecoding: numbers at every depth stay exact json.Numbers, and
// every ambiguity the security review named is refused, at any depth.
func TestClaimsDecoding(t *testing.T) {
	got, err := decodeVerifiedClaims([]byte(`{"exp":1799999999,"id":12345678901234567891,"ok":true,"no":null,"s":"x\u00e9","aud":["a","b"],"act":{"n":[1.5,{"m":2}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"exp": json.Number("1799999999"), "id": json.Number("12345678901234567891"), "ok": true, "no": nil, "s": "xé",
		"aud": []any{"a", "b"}, "act": map[string]any{"n": []any{json.Number("1.5"), map[string]any{"m": json.Number("2")}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %#v\nwant %#v", got, want)
	}
	for in, why := range map[string]string{
		`{"exp":1,"exp":2}`:      "given twice",
		`{"exp":1,"e\u0078p":2}`: "given twice",
		`{"a":{"b":1,"b":2}}`:    "given twice",
		`{"a":[{"b":1,"b":2}]}`:  "given twice",
		`{"Exp":1}`:              "another case",
		"{\"s\":\"\xff\"}":       "UTF-8",
		`null`:                   "not a JSON object",
		`[1]`:                    "not a JSON object",
		`{"a":1}{}`:              "not one JSON object",
		`{"a":1`:                 "not one JSON object",
		`{"a":01}`:               "not one JSON object",
		`{"a":1,}`:               "not one JSON object",
		`{"a" 1}`:                "not one JSON object",
		`{"a":tru}`:              "not one JSON object",
		`{"a":1} x`:              "not one JSON object",
		`{"a":"` + "\x01" + `"}`: "not one JSON object",
	} {
		if _, err := decodeVerifiedClaims([]byte(in)); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: %v, want %q", in, err, why)
		}
	}
}

// TestHeaderDecoding: the header's members keyd reads, as exactly as the
// claims.
func TestHeaderDecoding(t *testing.T) {
	enc := func(h string) parts { return split(b64.EncodeToString([]byte(h)) + ".e30.AA") }
	h, err := enc(`{"alg":"ES256","kid":"k1","typ":"at+jwt","x5u":"https://x","jwk":{"kty":"EC"}}`).header()
	if err != nil || h != (header{Alg: "ES256", KID: "k1", Typ: "at+jwt"}) {
		t.Errorf("header %+v %v", h, err)
	}
	if h, _ := enc(`{"alg":"ES256","crit":["b64"],"b64":false}`).header(); !h.Extension {
		t.Error("crit and b64 not seen")
	}
	for _, in := range []string{`{"alg":"none","alg":"ES256"}`, `{"alg":"ES256","k\u0069d":"a","kid":"b"}`, `{"alg":1}`, `{"kid":null}`, `null`, `"ES256"`, `{"alg":"ES256"}{}`} {
		if _, err := enc(in).header(); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}

// FuzzCheck: whatever a token holds, Check answers with an error or a
// verification, never a panic (the daemon verifies whatever a caller
// posts).
func FuzzCheck(f *testing.F) {
	for _, seed := range []string{`{"alg":"HS256","kid":"k"}`, `{"alg":"HS256","crit":["x"]}`, `{"a":tru}`, `{"exp":1e999}`, `{"aud":[1,{"a":[]}]}`} {
		f.Add(seed, seed)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	key := func(kid string) (any, bool) { return secret, kid == "k" }
	f.Fuzz(func(t *testing.T, hdr, claims string) {
		input := b64.EncodeToString([]byte(hdr)) + "." + b64.EncodeToString([]byte(claims))
		mac := hmacSHA256(secret, input)
		v, err := Check(input+"."+b64.EncodeToString(mac), jwaHS256, key, time.Unix(1700000000, 0), time.Minute, Expect{}, nil)
		if (v == nil) == (err == nil) {
			t.Fatalf("verified %v and error %v", v, err)
		}
	})
}
