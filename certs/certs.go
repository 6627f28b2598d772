// Package certs issues X.509 certificates for key sets' published keys, so
// that the JWKS can carry x5c and x5t#S256 for the verifiers that require a
// certificate chain (.NET and Java stacks, some gateways).
//
// It is a package of its own because it holds a certificate authority's
// private key and the rules of issuing and renewing, which neither the key
// store (it only keeps each key's certificate) nor the JWKS renderer (it
// only shows it) should know. An [Authority] either signs with a CA read
// from files, or has each key sign its own certificate (self-signed). A
// certificate is renewed once two thirds of its lifetime have passed, so
// a verifier always sees one with at least a third of its lifetime left.
package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/keyimport"
	"github.com/keyd-dev/keyd/keystore"
)

// Backdate is how far before its issuance a certificate's validity starts,
// for verifiers whose clocks run behind.
const Backdate = 5 * time.Minute

// Authority issues the certificates of one key set's keys.
type Authority struct {
	// Imported, when set, gives imported public keys (whose kid another
	// issuer chose) a certificate too; off, only keys keyd made or holds
	// the private half of get one.
	Imported bool
	validity time.Duration
	signer   crypto.Signer     // the CA's key; nil: self-signed
	ca       *x509.Certificate // nil: self-signed
	chain    [][]byte          // DER: the CA certificate, then the rest of its file
}

// OIDDocumentSigning is id-kp-documentSigning (RFC 9336), the one extended
// key usage of keyd's certificates.
var OIDDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}

// CertifiesImported reports whether imported public keys get a
// certificate (Imported).
func (a *Authority) CertifiesImported() bool { return a.Imported }

// SelfSigned returns an Authority under which each key signs its own
// certificate, valid for validity. Keys without a private half (imported
// public keys) get none.
func SelfSigned(validity time.Duration) *Authority { return &Authority{validity: validity} }

// Load reads a CA certificate (PEM; the CA first, then any intermediate up
// to the root) and its private key (PEM, PKCS #8, PKCS #1 or SEC 1, in a
// file nobody but its owner may read). Errors name the files, never their
// content.
func Load(certFile, keyFile string, validity time.Duration) (*Authority, error) {
	chain, err := readChain(certFile)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%s: the first certificate does not parse: %v", certFile, err)
	}
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return nil, fmt.Errorf("%s: the first certificate is not a CA (basicConstraints CA:TRUE)", certFile)
	}
	if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: the CA certificate's key usage does not allow signing certificates (keyCertSign)", certFile)
	}
	signer, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(ca.PublicKey) {
		return nil, fmt.Errorf("%s does not hold the private key of the certificate in %s", keyFile, certFile)
	}
	return &Authority{validity: validity, signer: signer, ca: ca, chain: chain}, nil
}

func readChain(path string) ([][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var chain [][]byte
	for {
		var b *pem.Block
		b, raw = pem.Decode(raw)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			chain = append(chain, b.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return chain, nil
}

func readKey(path string) (crypto.Signer, error) {
	raw, err := secretfile.Read(path)
	if err != nil {
		return nil, err
	}
	key, err := keyimport.ParsePEM(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), keystore.ErrInvalidImport.Error()+": "))
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s holds a public key; the CA's private key is needed", path)
	}
	return signer, nil
}

// Validity is how long each certificate is valid.
func (a *Authority) Validity() time.Duration { return a.validity }

// SelfSigned reports whether keys sign their own certificates.
func (a *Authority) SelfSigned() bool { return a.signer == nil }

// ErrNoPrivateKey means a self-signed certificate was asked for a key
// without a private half.
var ErrNoPrivateKey = errors.New("a self-signed certificate needs the key's private half")

// Issue makes a certificate for pub, named after the key set and kid,
// valid from now (less Backdate) for the authority's validity. Self-signed
// authorities sign with self, the key's own signer (nil for a public-only
// key: ErrNoPrivateKey). It returns the certificate's DER.
func (a *Authority) Issue(keyset, kid string, pub crypto.PublicKey, self crypto.Signer, now time.Time) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	ski := sha256.Sum256([]byte(kid))
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)), // positive, never zero
		// Never a name a TLS client could match: a kid another issuer
		// chose (*.corp.example.com) stays inside "keyd:KEYSET:KID", which
		// no host name is, and the certificate has no SAN.
		Subject:   pkix.Name{CommonName: "keyd:" + keyset + ":" + kid, Organization: []string{"keyd key set " + keyset}},
		NotBefore: now.Add(-Backdate).UTC().Truncate(time.Second),
		NotAfter:  now.Add(a.validity).UTC().Truncate(time.Second),
		KeyUsage:  x509.KeyUsageDigitalSignature,
		// Document signing only (RFC 9336): a JWT is a signed document. An
		// extended key usage that names neither serverAuth nor clientAuth
		// makes TLS stacks refuse the certificate for either; without any,
		// they took it for both.
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{OIDDocumentSigning},
		BasicConstraintsValid: true,
		SubjectKeyId:          ski[:20],
	}
	parent, signer := a.ca, a.signer
	if a.SelfSigned() {
		if self == nil {
			return nil, ErrNoPrivateKey
		}
		// A self-signed certificate is its own trust anchor: OpenSSL
		// accepts one as such only if it may sign certificates.
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, signer = tmpl, self
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for key %s: %w", kid, err)
	}
	return der, nil
}

// RenewAt is when the certificate der should be replaced: two thirds into
// its lifetime. ok is false when it must be replaced now: it does not
// parse, this authority did not issue it (the CA changed, or self-signing
// was switched on or off), or it is valid for longer than the validity now
// configured.
func (a *Authority) RenewAt(der []byte) (at time.Time, ok bool) {
	if len(der) == 0 {
		return time.Time{}, false
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return time.Time{}, false
	}
	if a.SelfSigned() {
		err = c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature)
	} else {
		err = c.CheckSignatureFrom(a.ca)
	}
	life := c.NotAfter.Sub(c.NotBefore)
	if err != nil || life > a.validity+Backdate+time.Second {
		return time.Time{}, false
	}
	return c.NotBefore.Add(life * 2 / 3), true
}

// Chain is the x5c of a key whose certificate is leaf: the leaf, then the
// CA's chain.
func (a *Authority) Chain(leaf []byte) [][]byte {
	return append([][]byte{leaf}, a.chain...)
}
