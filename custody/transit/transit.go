// Package transit is the Vault Transit custody (keystore.Custody): each of
// a key set's keys is a Transit key of its own (never exportable), created
// in Transit, used there to sign (marshaling_algorithm asn1, prehashed
// digests, PSS with the salt as long as the hash), and deleted when keyd
// destroys the key, so destroying one never touches another. keyd stores
// only the Transit key's name and its public key. It uses the Vault
// connection (address, auth, TLS) of keyd's Vault backend.
package transit

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/keyd-dev/keyd/keystore"
)

// Name is the custody's type in the config and on each stored key.
const Name = "vault_transit"

// Timeout bounds each Transit request (a signature waits for it).
const Timeout = 10 * time.Second

// Custody keeps keys in a Transit mount, named KeyPrefix + key set + "-"
// + a random suffix.
type Custody struct {
	// MaxInFlight is how many Transit requests signing with one key may
	// have out at once (0: DefaultMaxInFlight); signatures asked for
	// beyond that leave together in the next request. Set it before use.
	MaxInFlight int

	c         *vault.Client
	http      *http.Client // the client's own: its pooled connections
	mount     string
	keyPrefix string
}

func (t *Custody) maxInFlight() int {
	if t.MaxInFlight > 0 {
		return t.MaxInFlight
	}

	return DefaultMaxInFlight
}

// New returns the custody of the Transit engine mounted at mount (default
// "transit"), naming its keys with keyPrefix (default "keyd-").
func New(c *vault.Client, mount, keyPrefix string) *Custody {
	if mount = strings.Trim(mount, "/"); mount == "" {
		mount = "transit"
	}
	if keyPrefix == "" {
		keyPrefix = "keyd-"
	}
	return &Custody{c: c, http: c.CloneConfig().HttpClient, mount: mount, keyPrefix: keyPrefix}
}

var _ keystore.Custody = (*Custody)(nil)

// Name implements keystore.Custody.
func (*Custody) Name() string { return Name }

// KeyType is Transit's key type for alg, "" if Transit has none.
func KeyType(alg keystore.Algorithm, rsaBits int) string {
	switch alg {
	case keystore.ES256:
		return "ecdsa-p256"
	case keystore.ES384:
		return "ecdsa-p384"
	case keystore.ES512:
		return "ecdsa-p521"
	case keystore.EdDSA:
		return "ed25519"
	case keystore.HS256, keystore.HS384, keystore.HS512:
		return "hmac"
	case keystore.RS256, keystore.RS384, keystore.RS512, keystore.PS256, keystore.PS384, keystore.PS512:
		if rsaBits == 0 {
			rsaBits = keystore.DefaultRSABits
		}
		return fmt.Sprintf("rsa-%d", rsaBits)
	}
	return ""
}

// unavailable wraps a failed Transit call: keystore.ErrCustodyUnavailable,
// with Vault's own words (they never hold key material).
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: vault transit %s: %v", keystore.ErrCustodyUnavailable, op, err)
}

// suffixBytes is the length of the random part of keyd's Transit key
// names (16 lowercase hex digits).
const suffixBytes = 8

// Owns implements keystore.Custody: ref is exactly key_prefix + keyset +
// "-" + 16 lowercase hex digits. The suffix holds no "-", so a key of key
// set a-b (keyd-a-b-0123456789abcdef) is never one of key set a's.
func (t *Custody) Owns(keyset, ref string) bool {
	rest, ok := strings.CutPrefix(ref, t.keyPrefix+keyset+"-")
	return ok && keystore.IsRef(rest, suffixBytes)
}

// Create implements keystore.Custody.
func (t *Custody) Create(ctx context.Context, keyset string, alg keystore.Algorithm, rsaBits int) (string, crypto.PublicKey, error) {
	typ := KeyType(alg, rsaBits)
	if typ == "" {
		return "", nil, fmt.Errorf("%w: Vault Transit holds no %s keys for keyd", keystore.ErrUnsupportedAlgorithm, alg)
	}
	suffix := make([]byte, suffixBytes)
	_, _ = rand.Read(suffix)
	name := t.keyPrefix + keyset + "-" + hex.EncodeToString(suffix)
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	params := map[string]any{"type": typ, "exportable": false, "allow_plaintext_backup": false}
	if typ == "hmac" {
		params["key_size"] = alg.SecretSize()
	}
	if _, err := t.c.Logical().WriteWithContext(ctx, t.mount+"/keys/"+name, params); err != nil {
		return "", nil, unavailable("create key", err)
	}
	if typ == "hmac" {
		return name, nil, nil // a secret: nothing public
	}
	pub, err := t.publicKey(ctx, name)
	if err != nil {
		_ = t.Destroy(ctx, name)
		return "", nil, err
	}
	return name, pub, nil
}

// publicKey reads the public key of Transit key name's first version.
func (t *Custody) publicKey(ctx context.Context, name string) (crypto.PublicKey, error) {
	s, err := t.readKey(ctx, name)
	if err != nil {
		return nil, err
	}
	return parsePublic(name, s.Data)
}

// readKey reads Transit key name's description.
func (t *Custody) readKey(ctx context.Context, name string) (*vault.Secret, error) {
	s, err := t.c.Logical().ReadWithContext(ctx, t.mount+"/keys/"+name)
	if err != nil {
		return nil, unavailable("read key", err)
	}
	if s == nil {
		return nil, unavailable("read key", fmt.Errorf("key %s not found", name))
	}
	return s, nil
}

// parsePublic is the public key of version 1 in a Transit key's description.
func parsePublic(name string, data map[string]any) (crypto.PublicKey, error) {
	keys, _ := data["keys"].(map[string]any)
	v1, _ := keys["1"].(map[string]any)
	raw, _ := v1["public_key"].(string)
	if raw == "" {
		return nil, fmt.Errorf("%w: transit key %s has no public key", keystore.ErrCorrupt, name)
	}
	if b, _ := pem.Decode([]byte(raw)); b != nil {
		pub, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: transit key %s: public key does not parse", keystore.ErrCorrupt, name)
		}
		return pub, nil
	}
	der, err := base64.StdEncoding.DecodeString(raw) // ed25519: the raw key, in base64
	if err != nil || len(der) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: transit key %s: public key does not parse", keystore.ErrCorrupt, name)
	}
	return ed25519.PublicKey(der), nil
}

// checkKey reads Transit key name before keyd first signs with it and
// refuses it (wrapping keystore.ErrForeignKey) when it is not the key keyd
// made and stored: made exportable, rotated to a second version, or (pub
// non-nil) with a public key other than the stored one. keyd signs only
// with version 1 (key_version), the one its JWKS publishes, whatever
// happens to the key later.
func (t *Custody) checkKey(name string, pub crypto.PublicKey) error {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	s, err := t.readKey(ctx, name)
	if err != nil {
		return err
	}
	if exp, _ := s.Data["exportable"].(bool); exp {
		return fmt.Errorf("%w: transit key %s was made exportable outside keyd: its private key may have left Vault; keyd will not sign with it (rotate or revoke the key)", keystore.ErrForeignKey, name)
	}
	if v := fmt.Sprint(s.Data["latest_version"]); v != "1" {
		return fmt.Errorf("%w: transit key %s was rotated outside keyd (latest version %s); keyd signs only with version 1, the one its JWKS holds, and will not sign with a key changed behind its back (rotate or revoke the key)", keystore.ErrForeignKey, name, v)
	}
	if pub == nil {
		return nil
	}
	got, err := parsePublic(name, s.Data)
	if err != nil {
		return err
	}
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(got) {
		return fmt.Errorf("%w: transit key %s does not hold the public key stored for it: it is not the key keyd made", keystore.ErrForeignKey, name)
	}
	return nil
}

// Destroy implements keystore.Custody: deletion is allowed on the key,
// then it is deleted; a key already gone is no error.
func (t *Custody) Destroy(ctx context.Context, ref string) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if _, err := t.c.Logical().WriteWithContext(ctx, t.mount+"/keys/"+ref+"/config", map[string]any{"deletion_allowed": true}); err != nil {
		if isNotFound(err) {
			return nil
		}
		return unavailable("allow deletion", err)
	}
	if _, err := t.c.Logical().DeleteWithContext(ctx, t.mount+"/keys/"+ref); err != nil && !isNotFound(err) {
		return unavailable("delete key", err)
	}
	return nil
}

func isNotFound(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && (re.StatusCode == http.StatusNotFound ||
		(re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "no existing key")))
}

// Objects implements keystore.CustodyLister: the Transit keys of the key
// set, with when each was made.
func (t *Custody) Objects(ctx context.Context, keyset string) ([]keystore.CustodyObject, error) {
	names, err := t.Keys(ctx, keyset)
	if err != nil {
		return nil, err
	}
	var out []keystore.CustodyObject
	for _, name := range names {
		ctx, cancel := context.WithTimeout(ctx, Timeout)
		s, err := t.c.Logical().ReadWithContext(ctx, t.mount+"/keys/"+name)
		cancel()
		if err != nil {
			return nil, unavailable("read key", err)
		}
		o := keystore.CustodyObject{Ref: name}
		if s != nil {
			keys, _ := s.Data["keys"].(map[string]any)
			v1, _ := keys["1"].(map[string]any)
			if ts, _ := v1["creation_time"].(string); ts != "" {
				o.CreatedAt, _ = time.Parse(time.RFC3339Nano, ts)
			}
		}
		out = append(out, o)
	}
	return out, nil
}

// Keys lists the Transit keys of this custody's prefix for the key set
// called keyset: those it Owns, no other key set's nor application's.
func (t *Custody) Keys(ctx context.Context, keyset string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	s, err := t.c.Logical().ListWithContext(ctx, t.mount+"/keys")
	if err != nil {
		return nil, unavailable("list keys", err)
	}
	var out []string
	if s == nil {
		return nil, nil
	}
	keys, _ := s.Data["keys"].([]any)
	for _, k := range keys {
		if name, _ := k.(string); t.Owns(keyset, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// Signer implements keystore.Custody.
func (t *Custody) Signer(ref string, pub crypto.PublicKey) (crypto.Signer, error) {
	return &signer{t: t, name: ref, pub: pub}, nil
}

type signer struct {
	t        *Custody
	name     string
	pub      crypto.PublicKey
	batchers sync.Map // batchKey -> *batcher
	checked  checked
}

// checked remembers that a Transit key passed checkKey: it is read once,
// before keyd first signs with it, not per signature (callers arriving
// meanwhile wait for that one read).
type checked struct {
	ok atomic.Bool
	mu sync.Mutex
}

func (c *checked) check(t *Custody, name string, pub crypto.PublicKey) error {
	if c.ok.Load() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok.Load() {
		return nil
	}
	if err := t.checkKey(name, pub); err != nil {
		if errors.Is(err, keystore.ErrCustodyUnavailable) {
			return err
		}
		return fmt.Errorf("%w: %w", keystore.ErrCustodyUnavailable, err)
	}
	c.ok.Store(true)
	return nil
}

type batchKey struct {
	path string
	params
}

func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign asks Transit to sign digest (for Ed25519 the whole message). It is
// keyd's hot path with this custody: concurrent signatures with one key
// leave together (see batcher).
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := s.checked.check(s.t, s.name, s.pub); err != nil {
		return nil, err
	}
	k := batchKey{path: s.t.mount + "/sign/" + s.name, params: params{KeyVersion: 1}}
	if h := opts.HashFunc(); h != 0 {
		alg, ok := map[crypto.Hash]string{crypto.SHA256: "sha2-256", crypto.SHA384: "sha2-384", crypto.SHA512: "sha2-512"}[h]
		if !ok {
			return nil, fmt.Errorf("vault transit: hash %v is not supported", h)
		}
		k.path += "/" + alg
		k.Prehashed, k.Marshaling = true, "asn1"
		if _, isRSA := s.pub.(*rsa.PublicKey); isRSA {
			k.SignatureAlgorithm = "pkcs1v15"
			if pss, ok := opts.(*rsa.PSSOptions); ok {
				if pss.SaltLength != rsa.PSSSaltLengthEqualsHash {
					return nil, errors.New("vault transit: only PSS with the salt as long as the hash")
				}
				k.SignatureAlgorithm, k.SaltLength = "pss", "hash"
			}
		}
	}
	b, ok := s.batchers.Load(k)
	if !ok {
		b, _ = s.batchers.LoadOrStore(k, newBatcher(s.t, k.path, k.params, "signature"))
	}
	sig, err := b.(*batcher).do(digest)
	if err != nil {
		return nil, unavailable("sign", err)
	}
	return sig, nil
}

// MAC implements keystore.CustodyMACer: Transit's hmac endpoint with the
// key's hash.
func (t *Custody) MAC(ref string, alg keystore.Algorithm) (keystore.MAC, error) {
	h, ok := map[keystore.Algorithm]string{keystore.HS256: "sha2-256", keystore.HS384: "sha2-384", keystore.HS512: "sha2-512"}[alg]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an HMAC algorithm", keystore.ErrUnsupportedAlgorithm, alg)
	}
	return &mac{b: newBatcher(t, t.mount+"/hmac/"+ref+"/"+h, params{KeyVersion: 1}, "hmac"), t: t, name: ref}, nil
}

type mac struct {
	b       *batcher
	t       *Custody
	name    string
	checked checked
}

func (m *mac) Sum(input []byte) ([]byte, error) {
	if err := m.checked.check(m.t, m.name, nil); err != nil {
		return nil, err
	}
	sum, err := m.b.do(input)
	if err != nil {
		return nil, unavailable("hmac", err)
	}
	return sum, nil
}
