package daemon

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/keyd-dev/keyd/custody"
	"github.com/keyd-dev/keyd/custody/pkcs11"
	"github.com/keyd-dev/keyd/custody/transit"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/internal/secretfile"
	"github.com/keyd-dev/keyd/keystore"
)

// openCustodies opens the custody of every key set that has one, once per
// place (a PKCS#11 token is logged in to once, whatever the number of key
// sets in it): Vault Transit through the Vault store's own client (the
// config check makes sure the store is Vault's), PKCS#11 with the PIN
// from pin_file or KEYD_PKCS11_PIN. Errors name the key set's field.
func (d *daemon) openCustodies() error {
	d.custodies = map[string]keystore.Custody{}
	tokens := map[pkcs11.Config]keystore.Custody{}
	for i, ks := range d.cfg.KeySets {
		f := fmt.Sprintf("keysets[%d].custody", i)
		switch ks.Custody.Type {
		case transit.Name:
			if d.engine.Vault == nil {
				return fmt.Errorf("%s: vault_transit needs storage.backend: vault", f)
			}
			c := transit.New(d.engine.Vault, ks.Custody.Mount, ks.Custody.KeyPrefix)
			c.MaxInFlight = ks.Custody.MaxInFlight
			d.custodies[ks.Name] = c
		case pkcs11.Name:
			pin := d.o.Getenv("KEYD_PKCS11_PIN")
			if ks.Custody.PINFile != "" {
				raw, err := secretfile.Read(ks.Custody.PINFile)
				if err != nil {
					return fmt.Errorf("%s.pin_file: %w", f, err)
				}
				pin = strings.TrimSpace(string(raw))
			}
			if pin == "" {
				return fmt.Errorf("%s: no PIN: set pin_file, or KEYD_PKCS11_PIN", f)
			}
			cfg := pkcs11.Config{Module: ks.Custody.Module, TokenLabel: ks.Custody.TokenLabel, PIN: pin}
			c, ok := tokens[cfg]
			if !ok {
				var err error
				if c, err = pkcs11.Open(cfg); err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				tokens[cfg] = c
				if cl, ok := c.(io.Closer); ok {
					d.closers = append(d.closers, func() { _ = cl.Close() })
				}
			}
			d.custodies[ks.Name] = c
		}
	}
	return nil
}

// custodyHealth names a key set whose custody's last operation failed,
// and the failure; "" when every custody's last operation succeeded.
func (d *daemon) custodyHealth() (string, error) {
	for _, name := range slices.Sorted(maps.Keys(d.custodies)) {
		if w, ok := d.custodies[name].(*custody.Watched); ok && w.Err() != nil {
			return name, w.Err()
		}
	}
	return "", nil
}

// custodies lists the key sets whose custody differs between a and b:
// keys already held by a custody need it to sign, so it changes only at a
// restart (and then, keys held by a custody no longer configured refuse to
// load, by name).
func custodies(a, b *config.Config) []string {
	before := map[string]config.Custody{}
	for _, ks := range a.KeySets {
		before[ks.Name] = ks.Custody
	}
	var out []string
	for _, ks := range b.KeySets {
		if c, ok := before[ks.Name]; ok && c != ks.Custody {
			out = append(out, "keysets "+ks.Name+" custody")
		}
	}
	return out
}
