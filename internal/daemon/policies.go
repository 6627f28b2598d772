package daemon

import (
	"errors"
	"fmt"

	"github.com/keyd-dev/keyd/certs"
	"github.com/keyd-dev/keyd/custody/pkcs11"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/keystore"
)

// policies builds cfg's key set policies: the config's settings (data),
// each with its custody (opened at start: a custody changes only at a
// restart) and its certificate authority, whose CA files are read here, at
// every start and reload. Errors name the field.
func policies(cfg *config.Config, custodies map[string]keystore.Custody) ([]keystore.Policy, error) {
	ps := cfg.Policies()
	var errs []error
	for i, ks := range cfg.KeySets {
		ps[i].Custody = custodies[ks.Name]
		a, err := authority(ks.Certificates)
		if err != nil {
			errs = append(errs, fmt.Errorf("keysets[%d].certificates: %w", i, err))
		}
		ps[i].Certificates = a
	}
	return ps, errors.Join(errs...)
}

// authority is the certificate authority of a key set's certificates
// setting: nil when off, a self-signing one, or the CA whose files it
// names, loaded and checked (the key must be the certificate's).
func authority(cs config.Certificates) (keystore.Certifier, error) {
	var a *certs.Authority
	switch {
	case !cs.On():
		return nil, nil
	case cs.SelfSigned:
		a = certs.SelfSigned(cs.ValidityOrDefault())
	default:
		var err error
		if a, err = certs.Load(cs.CACertFile, cs.CAKeyFile, cs.ValidityOrDefault()); err != nil {
			return nil, err
		}
	}
	a.Imported = cs.Imported
	return a, nil
}

// checkTokens goes through the PKCS#11 tokens cfg names (key sets'
// custody, the wrapped master key) as a start would: this keyd has
// PKCS#11, and a named PIN file is owner-only.
func checkTokens(cfg *config.Config) []error {
	var errs []error
	check := func(f, typeField, pinFile string) {
		if !pkcs11.Available {
			errs = append(errs, fmt.Errorf("%s: %w", typeField, pkcs11.ErrNotBuilt))
			return
		}
		if pinFile != "" {
			if err := secretfile.Check(pinFile); err != nil {
				errs = append(errs, fmt.Errorf("%s.pin_file: %w", f, err))
			}
		}
	}
	for i, ks := range cfg.KeySets {
		if ks.Custody.Type == pkcs11.Name {
			f := fmt.Sprintf("keysets[%d].custody", i)
			check(f, f+".type", ks.Custody.PINFile)
		}
	}
	if m := cfg.Storage.File.MasterKey; cfg.Storage.Backend == "file" && m.WrappedBy == pkcs11.Name {
		f := "storage.file.master_key"
		check(f, f+".wrapped_by", m.PINFile)
	}
	return errs
}
