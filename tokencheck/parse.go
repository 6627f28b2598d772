package tokencheck

import (
	"bytes"
	jsonv1 "encoding/json"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// header is what Check reads of a token's protected header. Other members
// are ignored, as RFC 7515 lets a recipient do; crit and b64 name
// extensions keyd does not implement, so a token carrying either fails
// (RFC 7515 4.1.11). The header is decoded as strictly as the claims: one
// object, valid UTF-8, no member twice, names matched exactly.
type header struct {
	Alg  string         `json:"alg"`
	KID  string         `json:"kid"`
	Typ  string         `json:"typ"`
	Crit jsontext.Value `json:"crit"`
	B64  jsontext.Value `json:"b64"`
}

// strict decodes base64url as RFC 7515 writes it: no padding, and no
// other spelling of the same bytes (unused low bits set), so one
// signature has one encoding.
var strict = b64.Strict()

// parts is a compact token cut at its dots, over one copy of the token.
type parts struct {
	raw        []byte // the whole token
	dot1, dot2 int
}

func (p parts) signingInput() []byte { return p.raw[:p.dot2] }

// split cuts a token that compactJWS accepted.
func split(token string) parts {
	raw := []byte(token)
	return parts{raw: raw, dot1: strings.IndexByte(token, '.'), dot2: strings.LastIndexByte(token, '.')}
}

// header decodes the protected header.
func (p parts) header() (header, error) {
	var h header
	seg, err := strict.AppendDecode(make([]byte, 0, strict.DecodedLen(p.dot1)), p.raw[:p.dot1])
	if err != nil {
		return h, err
	}
	if err := json.Unmarshal(seg, &h); err != nil {
		return h, err
	}
	if bytes.TrimLeft(seg, " \t\r\n")[0] != '{' { // null decodes into the struct without an error
		return h, errors.New("the header is not a JSON object")
	}
	return h, nil
}

func (p parts) payload() ([]byte, error) {
	seg := p.raw[p.dot1+1 : p.dot2]
	return strict.AppendDecode(make([]byte, 0, strict.DecodedLen(len(seg))), seg)
}

func (p parts) signature() ([]byte, error) {
	seg := p.raw[p.dot2+1:]
	return strict.AppendDecode(make([]byte, 0, strict.DecodedLen(len(seg))), seg)
}

// numbers decodes every JSON number of the claims, at any depth, as a
// json.Number: exp and its kind are read exactly, and a claim such as a
// 64-bit id comes back to the caller unrounded.
var numbers = json.WithUnmarshalers(json.UnmarshalFromFunc(func(dec *jsontext.Decoder, v *any) error {
	if dec.PeekKind() != '0' {
		return errors.ErrUnsupported // everything else as json/v2 decodes any
	}
	val, err := dec.ReadValue()
	if err != nil {
		return err
	}
	*v = jsonv1.Number(val)
	return nil
}))

// decodeVerifiedClaims decodes a verified token's claims by the rules
// keyd applies wherever it reads claims: one JSON object and nothing
// after it, valid UTF-8, no member given twice (at any depth, escaped or
// not: json/v2 refuses both natively), no registered claim name in
// another case. Numbers are json.Number.
func decodeVerifiedClaims(raw []byte) (map[string]any, error) {
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("the claims are not valid UTF-8")
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims, numbers); err != nil {
		return nil, claimsError(err)
	}
	if claims == nil { // null
		return nil, fmt.Errorf("the claims are not a JSON object")
	}
	for name := range claims {
		if CaseVariant(name) {
			return nil, fmt.Errorf("claim %q is the registered claim %q in another case", clip(name), strings.ToLower(name))
		}
	}
	return claims, nil
}

// claimsError says in words safe to show the caller why claims did not
// decode.
func claimsError(err error) error {
	var syn *jsontext.SyntacticError
	if errors.Is(err, jsontext.ErrDuplicateName) && errors.As(err, &syn) {
		return fmt.Errorf("the claims give a member twice (%s)", clip(string(syn.JSONPointer)))
	}
	return fmt.Errorf("the claims are not one JSON object")
}
