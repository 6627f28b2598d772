package daemon

import (
	"github.com/keyd-dev/keyd/backends/vault"
	"github.com/keyd-dev/keyd/custody/transit"
	"github.com/keyd-dev/keyd/internal/config"
	"github.com/keyd-dev/keyd/keystore"
)

// policies returns cfg's key set policies, each with its custody: Vault
// Transit through the Vault store's own client (the config check makes
// sure the store is Vault's).
func policies(cfg *config.Config, store keystore.Store) []keystore.Policy {
	ps := cfg.Policies()
	for i, ks := range cfg.KeySets {
		if ks.Custody.Type != transit.Name {
			continue
		}
		if vs, ok := store.(*vault.Store); ok {
			ps[i].Custody = transit.New(vs.Client(), ks.Custody.Mount, ks.Custody.KeyPrefix)
		}
	}
	return ps
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
