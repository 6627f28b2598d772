// Package custody holds what every key custody shares: Watch, which
// counts a custody's failures (keyd_custody_errors_total) and remembers
// whether its last operation failed (/readyz says degraded until one
// succeeds). The custody interface is the domain's (keystore.Custody); the
// engines are custody/transit and custody/pkcs11, and custody/custodytest
// is the suite they pass.
package custody

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/keyd-dev/keyd/keystore"
)

// Watched is a custody whose outcomes are watched.
type Watched struct {
	keystore.Custody
	keyset string
	failed func(keyset, op string)
	last   atomic.Pointer[error]
}

// Watch wraps c, the custody of the key set called keyset; failed (nil:
// none) is told each failure by operation: create, sign, destroy, list.
func Watch(c keystore.Custody, keyset string, failed func(keyset, op string)) *Watched {
	return &Watched{Custody: c, keyset: keyset, failed: failed}
}

// Err is the failure of the custody's last operation; nil after a success.
func (w *Watched) Err() error {
	if e := w.last.Load(); e != nil {
		return *e
	}
	return nil
}

func (w *Watched) note(op string, err error) {
	if err == nil {
		if w.last.Load() != nil { // a store only when it changes: signatures from every core read this
			w.last.Store(nil)
		}
		return
	}
	w.last.Store(&err)
	if w.failed != nil {
		w.failed(w.keyset, op)
	}
}

// Create implements keystore.Custody.
func (w *Watched) Create(ctx context.Context, keyset string, alg keystore.Algorithm, rsaBits int) (string, crypto.PublicKey, error) {
	ref, pub, err := w.Custody.Create(ctx, keyset, alg, rsaBits)
	w.note("create", err)
	return ref, pub, err
}

// Destroy implements keystore.Custody.
func (w *Watched) Destroy(ctx context.Context, ref string) error {
	err := w.Custody.Destroy(ctx, ref)
	w.note("destroy", err)
	return err
}

// Signer implements keystore.Custody: its signatures are watched too.
func (w *Watched) Signer(ref string, pub crypto.PublicKey) (crypto.Signer, error) {
	s, err := w.Custody.Signer(ref, pub)
	if err != nil {
		w.note("sign", err)
		return nil, err
	}
	return watchedSigner{s, w}, nil
}

// SignConcurrency implements keystore.CustodyConcurrency: the custody's.
func (w *Watched) SignConcurrency() int { return keystore.SignConcurrency(w.Custody) }

// Objects implements keystore.CustodyLister when the custody does; a
// custody that cannot list has no objects to report.
func (w *Watched) Objects(ctx context.Context, keyset string) ([]keystore.CustodyObject, error) {
	l, ok := w.Custody.(keystore.CustodyLister)
	if !ok {
		return nil, nil
	}
	objs, err := l.Objects(ctx, keyset)
	w.note("list", err)
	return objs, err
}

type watchedSigner struct {
	crypto.Signer
	w *Watched
}

func (s watchedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.Signer.Sign(r, digest, opts)
	s.w.note("sign", err)
	return sig, err
}

// MAC implements keystore.CustodyMACer when the custody does: its MACs
// are watched too.
func (w *Watched) MAC(ref string, alg keystore.Algorithm) (keystore.MAC, error) {
	m, ok := w.Custody.(keystore.CustodyMACer)
	if !ok {
		return nil, fmt.Errorf("%w: the %s custody holds no HMAC secrets", keystore.ErrCustodyUnavailable, w.Name())
	}
	mac, err := m.MAC(ref, alg)
	if err != nil {
		w.note("sign", err)
		return nil, err
	}
	return watchedMAC{mac, w}, nil
}

type watchedMAC struct {
	keystore.MAC
	w *Watched
}

func (m watchedMAC) Sum(input []byte) ([]byte, error) {
	sum, err := m.MAC.Sum(input)
	m.w.note("sign", err)
	return sum, err
}
