package signer

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/keyd-dev/keyd/internal/parallel"
	"github.com/keyd-dev/keyd/keystore"
)

// Claims are a token's claims by name, each value the raw JSON the caller
// gave, so numbers keep their exact digits and nothing is decoded that
// keyd does not read. Sign does not modify them.
type Claims map[string]json.RawMessage

// Token is a signed JWT and what the caller needs to know about it.
type Token struct {
	Token     string
	KID       string
	Alg       string
	JTI       string // the token's jti, given or generated
	IssuedAt  time.Time
	ExpiresAt time.Time
}

var b64 = base64.RawURLEncoding

// Sign signs claims with the active key of the key set called name. The
// token lives for ttl (0: the key set's token_ttl, which is also the
// maximum) unless claims carry an exp within that limit. iat is always now;
// jti is random and iss is the key set's issuer unless the claims give
// them.
func (s *Signer) Sign(name string, claims Claims, ttl time.Duration) (*Token, error) {
	r, err := s.ring(name)
	if err != nil {
		return nil, err
	}
	return r.sign(s.now(), claims, ttl)
}

// Batch signs several tokens with one key set's keys as they are when
// Batch is called: every token of a batch is signed by the same active
// key, whatever rotation happens meanwhile.
type Batch struct {
	now  func() time.Time
	ring *keyring
}

// Batch returns a Batch for the key set called name.
func (s *Signer) Batch(name string) (*Batch, error) {
	r, err := s.ring(name)
	if err != nil {
		return nil, err
	}
	return &Batch{now: s.now, ring: r}, nil
}

// Sign signs one token of the batch, as Signer.Sign does.
func (b *Batch) Sign(claims Claims, ttl time.Duration) (*Token, error) {
	return b.ring.sign(b.now(), claims, ttl)
}

// Item is one token to sign in a batch: its claims and lifetime, as for
// Sign.
type Item struct {
	Claims Claims
	TTL    time.Duration
}

// SignAll signs every item, as Sign does, and returns each one's token or
// error in the items' order. A key keyd holds signs them one after another
// (the batch is one of the requests sharing the cores); a key in custody
// signs as many at once as the custody says it takes
// (keystore.CustodyConcurrency), so that a batch costs its custody a few
// round trips rather than one per token: Transit gathers them into a
// request or a few, an HSM's sessions sign in parallel.
func (b *Batch) SignAll(items []Item) ([]*Token, []error) {
	toks, errs := make([]*Token, len(items)), make([]error, len(items))
	one := func(i int) { toks[i], errs[i] = b.Sign(items[i].Claims, items[i].TTL) }
	if b.ring.concurrency < 2 || len(items) < 2 {
		for i := range items {
			one(i)
		}
		return toks, errs
	}
	parallel.Each(len(items), b.ring.concurrency, one)
	return toks, errs
}

// sign makes a token and tells the observer how it went.
func (r *keyring) sign(now time.Time, claims Claims, ttl time.Duration) (*Token, error) {
	tok, err := r.make(now, claims, ttl)
	switch {
	case err == nil:
		r.obs.Signed()
	case errors.Is(err, ErrInvalidRequest):
		r.obs.SignFailed("bad_request")
	default:
		r.obs.SignFailed("internal")
	}
	return tok, err
}

// make makes the token: the claims encoded once, appended to the header
// encoded when the keyring was made, signed by the keyring's method.
func (r *keyring) make(now time.Time, claims Claims, ttl time.Duration) (*Token, error) {
	now = now.Truncate(time.Second)
	if err := checkClaimNames(claims); err != nil {
		return nil, err
	}
	exp, err := r.expiry(now, claims, ttl)
	if err != nil {
		return nil, err
	}
	if raw, given := claims["nbf"]; given {
		if _, ok := numericDate(raw); !ok {
			return nil, invalid("claims.nbf must be a NumericDate (whole seconds since the epoch)")
		}
	}
	payload, jti, err := r.payload(claims, now, exp)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 0, len(r.header)+b64.EncodedLen(len(payload))+2+b64.EncodedLen(r.sigSize))
	buf = append(buf, r.header...)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, payload)
	buf, err = r.seal(buf)
	if err != nil {
		return nil, err
	}
	// buf is never written again: the string may share its bytes.
	tok := unsafe.String(unsafe.SliceData(buf), len(buf))
	return &Token{Token: tok, KID: r.kid, Alg: string(r.alg), JTI: jti, IssuedAt: now.UTC(), ExpiresAt: exp.UTC()}, nil
}

// seal signs input (the encoded header, a dot and the encoded payload)
// with the active key and appends a dot and the encoded signature: the
// compact JWS, in input's own array when it has room.
func (r *keyring) seal(input []byte) ([]byte, error) {
	sig, err := r.method(input)
	if errors.Is(err, keystore.ErrCustodyUnavailable) {
		// The key's custody did not answer: its own words (a Vault error,
		// never key material), so the operator can tell why.
		return nil, fmt.Errorf("sign with %s key %s: %w", r.alg, r.kid, err)
	}
	if err != nil {
		// The crypto's errors describe algorithms and sizes, never key
		// bytes; still, keep them out of what callers see.
		return nil, fmt.Errorf("%w: sign with %s key %s failed", ErrInternal, r.alg, r.kid)
	}
	return b64.AppendEncode(append(input, '.'), sig), nil
}

// expiry applies the lifetime rules: claims.exp or ttl, never both, never
// beyond token_ttl.
func (r *keyring) expiry(now time.Time, claims Claims, ttl time.Duration) (time.Time, error) {
	maxTTL := r.policy.TokenTTL
	if raw, given := claims["exp"]; given {
		if ttl != 0 {
			return time.Time{}, invalid("give either ttl or claims.exp, not both")
		}
		secs, ok := numericDate(raw)
		if !ok {
			return time.Time{}, invalid("claims.exp must be a NumericDate (whole seconds since the epoch)")
		}
		exp := time.Unix(secs, 0)
		if !exp.After(now) {
			return time.Time{}, invalid("claims.exp is not in the future")
		}
		if exp.Sub(now) > maxTTL {
			return time.Time{}, invalid("claims.exp is %v from now, beyond the key set's token_ttl of %v", exp.Sub(now), maxTTL)
		}
		return exp, nil
	}
	switch {
	case ttl < 0:
		return time.Time{}, invalid("ttl must be positive")
	case ttl > maxTTL:
		return time.Time{}, invalid("ttl %v exceeds the key set's token_ttl of %v", ttl, maxTTL)
	case ttl == 0:
		ttl = maxTTL
	}
	if ttl < time.Second {
		return time.Time{}, invalid("ttl must be at least 1s")
	}
	return now.Add(ttl), nil
}

// payload encodes the claims as given (sorted, compact) and adds exp, iat
// and, unless given, jti and iss. It returns the token's jti.
func (r *keyring) payload(claims Claims, now, exp time.Time) ([]byte, string, error) {
	if _, given := claims["iat"]; given {
		// iat is always keyd's clock: drop the caller's rather than emit
		// the member twice.
		claims = maps.Clone(claims)
		delete(claims, "iat")
	}
	var out []byte
	if len(claims) == 0 {
		out = []byte{'{'}
	} else {
		var err error
		if out, err = json.Marshal(claims); err != nil {
			return nil, "", invalid("claims are not valid JSON values")
		}
		if !utf8.Valid(out) {
			return nil, "", invalid("claims are not valid UTF-8")
		}
		out[len(out)-1] = ','
	}
	if _, given := claims["exp"]; !given {
		out = append(out, `"exp":`...)
		out = strconv.AppendInt(out, exp.Unix(), 10)
		out = append(out, ',')
	}
	out = append(out, `"iat":`...)
	out = strconv.AppendInt(out, now.Unix(), 10)
	var jti string
	if raw, given := claims["jti"]; given {
		// A given jti that is not a plain string is kept as given; the
		// caller sees it in the token, not here.
		_ = json.Unmarshal(raw, &jti)
	} else {
		jti = randomID()
		out = append(out, `,"jti":"`...)
		out = append(out, jti...)
		out = append(out, '"')
	}
	if _, given := claims["iss"]; !given && r.issuer != nil {
		out = append(out, `,"iss":`...)
		out = append(out, r.issuer...)
	}
	return append(out, '}'), jti, nil
}

// numericDate accepts a JSON integer: whole seconds since the epoch.
func numericDate(raw json.RawMessage) (int64, bool) {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	return n, err == nil
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return b64.EncodeToString(b[:])
}
