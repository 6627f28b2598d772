// Package refresh issues access and refresh token pairs and rotates
// refresh tokens with reuse detection (RFC 9700, section 4.14.2): each
// refresh token works once; presenting a spent one again is taken as theft
// and revokes every refresh token descended from the same login.
//
// A login is a family, one record in the store (keystore.RecordStore) with
// its own compare-and-swap version: the claims to sign, a secret, the
// current generation, and when the family expires. A refresh token names
// its family and generation and carries an HMAC of both under the family's
// secret, so it is opaque, usable only at keyd, and never a JWT (the
// verify endpoint and the JWKS know nothing of it). Two replicas presented
// the same token at once race on the family's version: one wins and
// answers a new pair, the other sees a spent generation, which is reuse.
package refresh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keyd-dev/keyd/internal/wait"
	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/signer"
)

// Errors of a refresh; each is a 401 with its own code at the API.
var (
	ErrReused   = errors.New("refresh token already used: every refresh token of this login is now revoked")
	ErrExpired  = errors.New("refresh token expired: log in again")
	ErrRevoked  = errors.New("refresh token revoked: log in again")
	ErrInvalid  = errors.New("refresh token is not one keyd issued for this key set")
	ErrDisabled = errors.New("refresh tokens are not enabled for this key set")
	// ErrClaims means the claims of a pair carry what keyd sets per token.
	ErrClaims = errors.New("invalid token pair claims")
)

// MaxClaimsBytes caps the claims a login stores (for refresh.ttl, in the
// store): a sign-scoped caller cannot park a megabyte per login.
const MaxClaimsBytes = 16 << 10

// pruneGrace is how long a login's record outlives its expiry, so that a
// late presentation gets refresh_token_expired rather than invalid; stores
// that expire records themselves (Redis) drop it then, the others prune.
const pruneGrace = 24 * time.Hour

// Kind is the record kind of refresh token families.
const Kind = "refresh"

const tokenPrefix = "krt_"

// Settings are a key set's refresh settings.
type Settings struct {
	TTL time.Duration // how long a login's refresh tokens work, from the login; 0: refresh is off
}

// Service issues and refreshes token pairs.
type Service struct {
	store    keystore.RecordStore
	signer   *signer.Signer
	now      func() time.Time
	settings func(keyset string) (Settings, bool)
	orphans  chan string // logins whose creation failed (see ForgetOrphans)
	sleep    func(ctx context.Context, d time.Duration) bool
}

// New returns a Service storing families in store and signing with sg;
// settings looks a key set's refresh settings up (it may change on
// reload), false for a key set that is not configured.
func New(store keystore.RecordStore, sg *signer.Signer, now func() time.Time, settings func(string) (Settings, bool)) *Service {
	return &Service{store: store, signer: sg, now: now, settings: settings, orphans: make(chan string, maxOrphans), sleep: wait.Sleep}
}

// enabled returns the settings of a key set with refresh on.
func (s *Service) enabled(keyset string) (Settings, error) {
	set, known := s.settings(keyset)
	switch {
	case !known:
		return Settings{}, fmt.Errorf("%w: %q", signer.ErrUnknownKeySet, keyset)
	case set.TTL == 0:
		return Settings{}, fmt.Errorf("%w: %s", ErrDisabled, keyset)
	}
	return set, nil
}

// Pair is an access token and the refresh token that replaces it.
type Pair struct {
	Access         *signer.Token
	Claims         signer.Claims // the login's, as signed
	RefreshToken   string
	RefreshExpires time.Time
}

// family is the stored state of one login.
type family struct {
	KeySet     string          `json:"keyset"`
	Claims     json.RawMessage `json:"claims"` // signer.Claims as given at login
	Secret     []byte          `json:"secret"`
	Generation uint64          `json:"generation"` // of the one refresh token that works now
	CreatedAt  time.Time       `json:"created_at"`
	ExpiresAt  time.Time       `json:"expires_at"`
	RevokedAt  time.Time       `json:"revoked_at,omitzero"`
}

// perToken are the claims keyd sets on every token of a pair itself.
var perToken = []string{"exp", "iat", "nbf", "jti"}

// Issue starts a login: an access token for claims and the first refresh
// token of a new family.
func (s *Service) Issue(ctx context.Context, keyset string, claims signer.Claims) (*Pair, error) {
	set, err := s.enabled(keyset)
	if err != nil {
		return nil, err
	}
	for _, name := range perToken {
		if _, given := claims[name]; given {
			return nil, fmt.Errorf("%w: %s is set by keyd on every token of a pair", ErrClaims, name)
		}
	}
	raw, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrClaims, err)
	}
	if len(raw) > MaxClaimsBytes {
		return nil, fmt.Errorf("%w: %d bytes of claims; a login keeps at most %d for refresh.ttl", ErrClaims, len(raw), MaxClaimsBytes)
	}
	access, err := s.signer.Sign(keyset, claims, 0)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	f := family{KeySet: keyset, Claims: raw, Secret: random(32), Generation: 1, CreatedAt: now, ExpiresAt: now.Add(set.TTL)}
	id := base64.RawURLEncoding.EncodeToString(random(16))
	data, _ := json.Marshal(f)
	if _, err := s.store.PutRecord(ctx, Kind, &keystore.Record{ID: id, Data: data, Expires: f.ExpiresAt.Add(pruneGrace)}); err != nil {
		if errors.Is(err, keystore.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			s.orphan(id) // it may land once the store is back
		}
		return nil, err
	}
	return &Pair{Access: access, Claims: claims, RefreshToken: f.token(id, f.Generation), RefreshExpires: f.ExpiresAt}, nil
}

// Refresh spends refresh token tok of keyset and answers a new pair with
// the login's claims. A spent token revokes its family (ErrReused).
func (s *Service) Refresh(ctx context.Context, keyset, tok string) (*Pair, error) {
	rec, f, gen, err := s.login(ctx, keyset, tok)
	if err != nil {
		return nil, err
	}
	id := rec.ID
	now := s.now().UTC()
	switch {
	case !f.RevokedAt.IsZero():
		return nil, ErrRevoked
	case !now.Before(f.ExpiresAt):
		return nil, ErrExpired
	case gen < f.Generation:
		return nil, s.reused(ctx, rec, f, now)
	case gen > f.Generation: // a valid MAC for a generation never issued: not ours
		return nil, ErrInvalid
	}
	// "Log out everywhere": a revocation of the login's subject ends it.
	if revoked, err := s.subjectRevoked(ctx, f); err != nil {
		return nil, err
	} else if revoked {
		if err := s.revokeFamily(ctx, rec, f, now); err != nil {
			return nil, err
		}
		return nil, ErrRevoked
	}
	var claims signer.Claims
	if err := json.Unmarshal(f.Claims, &claims); err != nil {
		return nil, fmt.Errorf("%w: family %s claims: %v", keystore.ErrCorrupt, id, err)
	}
	access, err := s.signer.Sign(keyset, claims, 0)
	if err != nil {
		return nil, err
	}
	f.Generation++
	data, _ := json.Marshal(f)
	_, err = s.store.PutRecord(ctx, Kind, &keystore.Record{ID: id, Data: data, Version: rec.Version, Expires: f.ExpiresAt.Add(pruneGrace)})
	if errors.Is(err, keystore.ErrConflict) {
		// Someone spent this generation first (another replica, or a
		// concurrent request): this presentation is the reuse.
		rec, cur, lerr := s.load(ctx, id)
		if lerr != nil {
			return nil, lerr
		}
		if !cur.RevokedAt.IsZero() {
			return nil, ErrRevoked
		}
		return nil, s.reused(ctx, rec, cur, now)
	}
	if err != nil {
		return nil, err
	}
	return &Pair{Access: access, Claims: claims, RefreshToken: f.token(id, f.Generation), RefreshExpires: f.ExpiresAt}, nil
}

// reused revokes the family and returns ErrReused, or the store's error.
func (s *Service) reused(ctx context.Context, rec *keystore.Record, f *family, now time.Time) error {
	if err := s.revokeFamily(ctx, rec, f, now); err != nil {
		return err
	}
	return ErrReused
}

// Prune deletes the families that expired more than a day ago (until then
// a late presentation still gets refresh_token_expired rather than
// invalid) and the subject cut-offs every login of which has expired, and
// returns how many records it deleted. A store that expires records
// itself (Redis) is not swept: its logins are gone at their expiry, and a
// million of them are never listed.
func (s *Service) Prune(ctx context.Context) (int, error) {
	if keystore.ExpiresRecords(s.store) {
		return 0, nil
	}
	n := 0
	for _, kind := range []string{Kind, SubjectKind} {
		recs, err := s.store.ListRecords(ctx, kind)
		if err != nil {
			return n, err
		}
		for _, rec := range recs {
			var exp struct {
				ExpiresAt time.Time `json:"expires_at"`
			}
			if json.Unmarshal(rec.Data, &exp) != nil || s.now().Before(exp.ExpiresAt.Add(pruneGrace)) {
				continue
			}
			if err := s.store.DeleteRecord(ctx, kind, rec.ID); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// login finds the login refresh token tok of keyset belongs to, and the
// generation tok names: ErrInvalid unless keyd issued tok for keyset.
func (s *Service) login(ctx context.Context, keyset, tok string) (*keystore.Record, *family, uint64, error) {
	if _, err := s.enabled(keyset); err != nil {
		return nil, nil, 0, err
	}
	id, gen, mac, ok := parse(tok)
	if !ok {
		return nil, nil, 0, ErrInvalid
	}
	rec, f, err := s.load(ctx, id)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, nil, 0, ErrInvalid
	}
	if err != nil {
		return nil, nil, 0, err
	}
	if f.KeySet != keyset || !hmac.Equal(mac, f.mac(id, gen)) {
		return nil, nil, 0, ErrInvalid
	}
	return rec, f, gen, nil
}

func (s *Service) load(ctx context.Context, id string) (*keystore.Record, *family, error) {
	rec, err := s.store.GetRecord(ctx, Kind, id)
	if err != nil {
		return nil, nil, err
	}
	var f family
	if err := json.Unmarshal(rec.Data, &f); err != nil {
		return nil, nil, fmt.Errorf("%w: refresh family %s: %v", keystore.ErrCorrupt, id, err)
	}
	return rec, &f, nil
}

// token is generation gen's refresh token: krt_ and the base64url of the
// family id (16 bytes), the generation (8 bytes) and their HMAC.
func (f *family) token(id string, gen uint64) string {
	fid, _ := base64.RawURLEncoding.DecodeString(id)
	b := append(fid, binary.BigEndian.AppendUint64(nil, gen)...)
	b = append(b, f.mac(id, gen)...)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func (f *family) mac(id string, gen uint64) []byte {
	m := hmac.New(sha256.New, f.Secret)
	fmt.Fprintf(m, "keyd-refresh/v1|%s|%s|%d", f.KeySet, id, gen)
	return m.Sum(nil)
}

func parse(tok string) (id string, gen uint64, mac []byte, ok bool) {
	if len(tok) < len(tokenPrefix) || tok[:len(tokenPrefix)] != tokenPrefix {
		return "", 0, nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[len(tokenPrefix):])
	if err != nil || len(b) != 16+8+32 {
		return "", 0, nil, false
	}
	return base64.RawURLEncoding.EncodeToString(b[:16]), binary.BigEndian.Uint64(b[16:24]), b[24:], true
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}
