package tokencheck

import (
	"bytes"
	jsonv1 "encoding/json"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// header is what Check reads of a token's protected header. Other members
// are ignored, as RFC 7515 lets a recipient do; crit and b64 name
// extensions keyd does not implement, so a token carrying either fails
// (RFC 7515 4.1.11). The header is decoded as strictly as the claims: one
// object, valid UTF-8, no member twice, names matched exactly.
type header struct {
	Alg, KID, Typ string
	Extension     bool // crit or b64 is present
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
	err = walkObject(seg, func(name string, dec *jsontext.Decoder) error {
		var dst *string
		switch name {
		case "alg":
			dst = &h.Alg
		case "kid":
			dst = &h.KID
		case "typ":
			dst = &h.Typ
		case "crit", "b64":
			h.Extension = true
		}
		if dst == nil {
			return dec.SkipValue()
		}
		tok, err := dec.ReadToken()
		if err != nil || tok.Kind() != '"' {
			return fmt.Errorf("%s is not a string", name)
		}
		*dst = tok.String()
		return nil
	})
	return h, err
}

func (p parts) payload() ([]byte, error) {
	seg := p.raw[p.dot1+1 : p.dot2]
	return strict.AppendDecode(make([]byte, 0, strict.DecodedLen(len(seg))), seg)
}

func (p parts) signature() ([]byte, error) {
	seg := p.raw[p.dot2+1:]
	return strict.AppendDecode(make([]byte, 0, strict.DecodedLen(len(seg))), seg)
}

// decodeVerifiedClaims decodes a verified token's claims by the rules
// keyd applies wherever it reads claims: one JSON object and nothing
// after it, valid UTF-8, no member given twice (at any depth, escaped or
// not: json/v2 refuses both natively), no registered claim name in
// another case. Numbers are json.Number, at any depth: exp and its kind
// are read exactly, and a claim such as a 64-bit id comes back to the
// caller unrounded.
func decodeVerifiedClaims(raw []byte) (map[string]any, error) {
	claims := make(map[string]any, 8)
	err := DecodeClaims(raw, func(name string, dec *jsontext.Decoder) error {
		v, err := readValue(dec)
		claims[name] = v
		return err
	})
	if err != nil {
		return nil, err
	}
	return claims, nil
}

// DecodeClaims walks the members of a claims set by the rules keyd
// applies wherever it reads claims (verifying, the Kubernetes signer): one
// JSON object and nothing after it, valid UTF-8, no member given twice at
// any depth, no registered claim name in another case. member gets each
// name with the decoder at its value, which it must read whole. Errors say
// why in words safe to show the caller.
func DecodeClaims(raw []byte, member func(name string, dec *jsontext.Decoder) error) error {
	if !utf8.Valid(raw) {
		return errors.New("not valid UTF-8")
	}
	return walkObject(raw, func(name string, dec *jsontext.Decoder) error {
		if CaseVariant(name) {
			return fmt.Errorf("claim %q is the registered claim %q in another case", clip(name), strings.ToLower(name))
		}
		return member(name, dec)
	})
}

// readValue reads one claim's value: strings, numbers, booleans and null
// straight from the decoder's tokens (nearly every claim), objects and
// arrays through json/v2.
func readValue(dec *jsontext.Decoder) (any, error) {
	switch kind := dec.PeekKind(); kind {
	case '"', 't', 'f', 'n':
		tok, err := dec.ReadToken()
		switch {
		case err != nil: // a token's accessors panic on an invalid token
			return nil, err
		case kind == '"':
			return tok.String(), nil
		case kind == 'n':
			return nil, nil
		}
		return tok.Bool(), nil
	case '0':
		val, err := dec.ReadValue()
		return jsonv1.Number(val), err
	}
	val, err := dec.ReadValue()
	if err != nil {
		return nil, err
	}
	var v any
	err = json.Unmarshal(val, &v, numbers)
	return v, err
}

// numbers makes json/v2 decode JSON numbers as json.Number.
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

// decoder is a pooled jsontext decoder over a byte slice.
type decoder struct {
	r   bytes.Reader
	dec jsontext.Decoder
}

var decoders = sync.Pool{New: func() any { return new(decoder) }}

// walkObject reads raw as one JSON object and nothing after it, calling
// member for each member's name with the decoder at its value, which
// member must read whole. jsontext refuses invalid UTF-8 and a name given
// twice (escaped or not); errors say why in words safe to show.
func walkObject(raw []byte, member func(name string, dec *jsontext.Decoder) error) error {
	d := decoders.Get().(*decoder)
	defer func() {
		d.r.Reset(nil)
		decoders.Put(d)
	}()
	d.r.Reset(raw)
	d.dec.Reset(&d.r)
	dec := &d.dec
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return errors.New("not a JSON object")
	}
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return decodeError(err)
		}
		if err := member(tok.String(), dec); err != nil {
			return decodeError(err)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return decodeError(err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return errors.New("not one JSON object")
	}
	return nil
}

// decodeError says in words safe to show the caller why JSON did not
// decode.
func decodeError(err error) error {
	var syn *jsontext.SyntacticError
	if errors.Is(err, jsontext.ErrDuplicateName) && errors.As(err, &syn) {
		return fmt.Errorf("a member is given twice (%s)", clip(string(syn.JSONPointer)))
	}
	if _, ok := err.(*jsontext.SyntacticError); ok {
		return errors.New("not one JSON object")
	}
	if _, ok := err.(*json.SemanticError); ok {
		return errors.New("not one JSON object")
	}
	return err
}
