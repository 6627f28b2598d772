package config

// Key sets: custody and certificates settings, and the validation of
// keysets[] (the rest of the config is in config.go).

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/keyd-dev/keyd/keystore"
	"github.com/keyd-dev/keyd/rotation"
)

// Custody says who holds a key set's private keys: keyd itself (the
// default, "software"), or Vault's Transit engine (vault_transit), through
// the Vault connection of storage.vault.
type Custody struct {
	Type      string `yaml:"type"`       // software (default), vault_transit or pkcs11
	Mount     string `yaml:"mount"`      // vault_transit: the Transit mount; default transit
	KeyPrefix string `yaml:"key_prefix"` // vault_transit: Transit key names start with it; default keyd-
	// vault_transit: how many Transit requests signing with one key may be
	// out at once; signatures asked for beyond that leave together in one
	// request (batch_input). Default 4.
	MaxInFlight int `yaml:"max_in_flight"`
	// pkcs11: the module (library), the token's label, and a file holding
	// the user PIN (else KEYD_PKCS11_PIN).
	Module     string `yaml:"module"`
	TokenLabel string `yaml:"token_label"`
	PINFile    string `yaml:"pin_file"`
}

// Certificates configures the X.509 certificates of a key set's published
// keys: signed by a CA (ca_cert_file, ca_key_file) or each by its own key
// (self_signed).
type Certificates struct {
	Validity   time.Duration `yaml:"validity"` // 0: DefaultCertificateValidity
	SelfSigned bool          `yaml:"self_signed"`
	CACertFile string        `yaml:"ca_cert_file"`
	CAKeyFile  string        `yaml:"ca_key_file"`
	// Imported gives imported public keys a certificate too (off: their
	// kid was chosen by another issuer).
	Imported bool `yaml:"imported"`
}

// On reports whether certificates are configured.
func (c Certificates) On() bool { return c.SelfSigned || c.CACertFile != "" || c.CAKeyFile != "" }

// DefaultCertificateValidity is how long a key's certificate is valid
// unless keysets[].certificates.validity says otherwise; it is renewed
// two thirds of the way through.
const DefaultCertificateValidity = 90 * 24 * time.Hour

// validateKeySets checks every key set and returns their names.
func (c *Config) validateKeySets(bad func(field, format string, args ...any)) map[string]bool {
	if len(c.KeySets) == 0 {
		bad("keysets", "at least one key set is required")
	}
	names := map[string]bool{}
	gaps := map[string]time.Duration{} // a thousand key sets share a few schedules
	minGap := func(spec string, sched cron.Schedule) time.Duration {
		gap, ok := gaps[spec]
		if !ok {
			gap = rotation.MinGap(sched)
			gaps[spec] = gap
		}
		return gap
	}
	for i, ks := range c.KeySets {
		f := fmt.Sprintf("keysets[%d]", i)
		if !nameRE.MatchString(ks.Name) {
			bad(f+".name", "%q must be 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit", ks.Name)
		} else if names[ks.Name] {
			bad(f+".name", "%q is used by another key set", ks.Name)
		}
		names[ks.Name] = true
		if _, err := keystore.ParseAlgorithm(ks.Algorithm); err != nil {
			bad(f+".algorithm", "%v", err)
		}
		if ks.RSABits != 0 && keystore.Algorithm(ks.Algorithm).Family() != keystore.FamilyRSA {
			bad(f+".rsa_bits", "only RSA key sets (RS256/384/512, PS256/384/512) take rsa_bits; this one is %s", ks.Algorithm)
		} else if ks.RSABits != 0 && !slices.Contains(keystore.RSABits, ks.RSABits) {
			bad(f+".rsa_bits", "%d is not allowed (want one of %v)", ks.RSABits, keystore.RSABits)
		}
		if ks.TokenTTL <= 0 {
			bad(f+".token_ttl", "must be positive, got %v", ks.TokenTTL)
		}
		if ks.JWKSMaxAge <= 0 {
			bad(f+".jwks_max_age", "must be positive, got %v", ks.JWKSMaxAge)
		} else if ks.JWKSMaxAge%time.Second != 0 {
			bad(f+".jwks_max_age", "must be whole seconds (it becomes Cache-Control max-age), got %v", ks.JWKSMaxAge)
		}
		for j, a := range ks.Verify.Audience {
			if a == "" {
				bad(fmt.Sprintf("%s.verify.audience[%d]", f, j), "is empty")
			}
		}
		for j, c := range ks.Verify.RequiredClaims {
			if c == "" {
				bad(fmt.Sprintf("%s.verify.required_claims[%d]", f, j), "is empty")
			}
		}
		if ks.Refresh.TTL < 0 || (ks.Refresh.TTL > 0 && ks.Refresh.TTL < ks.TokenTTL) {
			bad(f+".refresh.ttl", "must be at least token_ttl (%v), got %v", ks.TokenTTL, ks.Refresh.TTL)
		}
		if ks.MaxRevocations < 0 || ks.MaxRevocations > 10_000_000 {
			bad(f+".max_revocations", "must be between 1 and 10000000 (0: the default %d; each takes about 112 bytes of memory), got %d", keystore.DefaultMaxRevocations, ks.MaxRevocations)
		}
		if ks.Leeway != nil && *ks.Leeway < 0 {
			bad(f+".leeway", "must not be negative, got %v", *ks.Leeway)
		}
		c.validateCertificates(f+".certificates", &c.KeySets[i], bad)
		c.validateCustody(f+".custody", ks, bad)
		if l := ks.Legacy; l != (Legacy{}) {
			if l.KID == "" {
				bad(f+".legacy.kid", "is required: the kid of the imported key that verifies tokens without one")
			}
			if l.Until.IsZero() {
				bad(f+".legacy.until", "is required (an RFC 3339 time): tokens without a kid are accepted only until then")
			}
		}
		sched, err := rotation.ParseSchedule(ks.Rotation)
		if err != nil {
			hint := ""
			switch ks.Rotation {
			case "hourly", "daily", "weekly", "monthly", "yearly", "annually", "midnight":
				hint = fmt.Sprintf(" (did you mean @%s?)", ks.Rotation)
			}
			bad(f+".rotation", "%q is not a valid cron spec: %v%s", ks.Rotation, err, hint)
		} else if gap := minGap(ks.Rotation, sched); gap == 0 {
			bad(f+".rotation", "%q never fires", ks.Rotation)
		} else if need := ks.JWKSMaxAge + c.pollInterval(); ks.JWKSMaxAge > 0 && gap < need {
			bad(f+".rotation", "%q can fire %v apart, less than the %v a pending key must be published before it signs (jwks_max_age %v%s), or verifiers with a cached JWKS reject fresh tokens", ks.Rotation, gap, need, ks.JWKSMaxAge, c.publishDelayNote())
		}
	}
	return names
}

// validateCustody checks where a key set's private keys are held.
func (c *Config) validateCustody(f string, ks KeySet, bad func(field, format string, args ...any)) {
	cu := ks.Custody
	switch cu.Type {
	case "", "software":
		if cu.Mount != "" || cu.KeyPrefix != "" || cu.MaxInFlight != 0 {
			bad(f+".type", "is required with mount, key_prefix or max_in_flight (vault_transit)")
		}
	case "vault_transit":
		switch {
		case cu.MaxInFlight < 0 || cu.MaxInFlight > 1024:
			bad(f+".max_in_flight", "%d is not between 1 and 1024 (0: the default, 4)", cu.MaxInFlight)
		case c.Storage.Backend != "vault":
			bad(f+".type", "vault_transit uses the Vault connection of storage.vault: set storage.backend: vault (and its address and auth)")
		case ks.Certificates.SelfSigned:
			bad(f+".type", "keys held by vault_transit cannot sign their own certificates: give certificates a ca_cert_file and ca_key_file instead of self_signed")
		}
	case "pkcs11":
		switch {
		case cu.MaxInFlight != 0:
			bad(f+".max_in_flight", "is for vault_transit; a PKCS#11 token's sessions are crypto11's pool")
		case !validateToken(f, cu.Module, cu.TokenLabel, "the keys", bad):
		case ks.Algorithm == string(keystore.EdDSA):
			bad(f+".type", "pkcs11 custody holds ES256/384/512, RS*, PS* and HS* keys, not EdDSA (crypto11 has no EdDSA): use ES256, or vault_transit")
		case ks.Certificates.SelfSigned:
			bad(f+".type", "keys held by pkcs11 cannot sign their own certificates: give certificates a ca_cert_file and ca_key_file instead of self_signed")
		}
	default:
		bad(f+".type", "%q is not a custody (want software, vault_transit or pkcs11)", cu.Type)
	}
}

// validateCertificates checks a key set's certificates settings and loads
// its CA, so that a bad file is named at start (and at reload) rather than
// at the first certificate.
func (c *Config) validateCertificates(f string, ks *KeySet, bad func(field, format string, args ...any)) {
	cs := ks.Certificates
	if !cs.On() {
		if cs.Validity != 0 {
			bad(f+".validity", "needs self_signed: true, or ca_cert_file and ca_key_file")
		}
		return
	}
	if keystore.Algorithm(ks.Algorithm).Symmetric() {
		bad(f, "%s key sets publish no public keys to certify", ks.Algorithm)
		return
	}
	validity := cs.ValidityOrDefault()
	if need := 3 * (ks.JWKSMaxAge + c.pollInterval()); validity < max(need, time.Hour) {
		bad(f+".validity", "must be at least 1h and 3 x jwks_max_age (%v): a certificate is renewed with a third of its validity left, which must outlast every cached JWKS; got %v", need, validity)
		return
	}
	switch {
	case cs.SelfSigned && (cs.CACertFile != "" || cs.CAKeyFile != ""):
		bad(f+".self_signed", "excludes ca_cert_file and ca_key_file: certificates are self-signed or signed by the CA, not both")
	case !cs.SelfSigned && (cs.CACertFile == "" || cs.CAKeyFile == ""):
		bad(f, "ca_cert_file and ca_key_file go together (or self_signed: true)")
	}
}

// ValidityOrDefault is how long the key set's certificates are valid:
// validity, or DefaultCertificateValidity.
func (cs Certificates) ValidityOrDefault() time.Duration {
	return cmp.Or(cs.Validity, DefaultCertificateValidity)
}

// validateToken checks the settings of a PKCS#11 token under f: a module
// and a token label (whether this keyd has PKCS#11, and the PIN file's
// mode, are the daemon's checks: config is data). It reports whether they
// are whole. holds says what the token holds, for the messages.
func validateToken(f, module, label, holds string, bad func(field, format string, args ...any)) bool {
	ok := true
	switch {
	case module == "":
		bad(f+".module", "is required: the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so")
		ok = false
	case label == "":
		bad(f+".token_label", "is required: the label of the token holding %s", holds)
		ok = false
	}
	return ok
}
