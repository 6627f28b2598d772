package rotation

import (
	"crypto"
	"fmt"
	"slices"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// EventCertified is a published key given a new X.509 certificate.
const EventCertified EventKind = "key_certified"

// certifiable reports whether k should carry a certificate under c: a
// published key, and for self-signed certificates one with a private half;
// an imported public key (its kid another issuer's) only when c certifies
// those (certificates.imported).
func certifiable(k keystore.Key, c keystore.Certifier) bool {
	if !k.Published() {
		return false
	}
	if k.Imported && k.PublicOnly {
		if ci, ok := c.(interface{ CertifiesImported() bool }); !ok || !ci.CertifiesImported() {
			return false
		}
	}
	if s, ok := c.(interface{ SelfSigned() bool }); ok && s.SelfSigned() && k.PublicOnly {
		return false
	}
	return true
}

// dueCertificates lists the keys of ks whose certificate is missing or
// due for renewal at now, and the soonest renewal after now.
func dueCertificates(ks *keystore.KeySet, c keystore.Certifier, now time.Time) (due []string, next time.Time) {
	if c == nil {
		return nil, time.Time{}
	}
	for _, k := range ks.Keys {
		if !certifiable(k, c) {
			continue
		}
		at, ok := c.RenewAt(k.Certificate)
		if !ok || !now.Before(at) {
			due = append(due, k.ID)
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return due, next
}

// certify gives every key of ks that is due one a new certificate,
// returning a copy of ks (ks itself when none is due) and the kids
// certified. Run inside the write that changes the key set, so that no
// key is ever published without its certificate.
func certify(ks *keystore.KeySet, p keystore.Policy, now time.Time) (*keystore.KeySet, []string, error) {
	due, _ := dueCertificates(ks, p.Certificates, now)
	if len(due) == 0 {
		return ks, nil, nil
	}
	out := ks.Clone()
	for i, k := range out.Keys {
		if !slices.Contains(due, k.ID) {
			continue
		}
		pub, err := k.VerificationKey()
		if err != nil {
			return nil, nil, err
		}
		var self crypto.Signer
		if !k.PublicOnly {
			priv, err := k.PrivateKey()
			if err != nil {
				return nil, nil, err
			}
			self, _ = priv.(crypto.Signer)
		}
		der, err := p.Certificates.Issue(ks.Name, k.ID, pub, self, now)
		if err != nil {
			return nil, nil, fmt.Errorf("key set %s: %w", ks.Name, err)
		}
		out.Keys[i].Certificate = der
	}
	return out, due, nil
}
