package keystore

import (
	"fmt"
	"strings"
	"time"
)

// CheckLegacy reports a legacy setting in force whose kid names no key of
// the key set that verifies (a typo: flsk for flask), or whose until is
// past that key's verify_until (tokens without a kid would stop earlier
// than the setting says). The manager checks at start and reload, keyd
// config check offline when it can open the store.
func CheckLegacy(p Policy, ks *KeySet, now time.Time) error {
	if ks == nil || !p.Legacy.InForce(now) {
		return nil
	}
	var kids []string
	for _, k := range ks.Keys {
		if k.ID == p.Legacy.KID && k.Verifies() {
			if !k.VerifyUntil.IsZero() && k.VerifyUntil.Before(p.Legacy.Until) {
				return fmt.Errorf("key set %s: legacy.until %s is after key %s's verify_until %s: tokens without a kid stop verifying at verify_until; import the key again with a later --verify-until, or bring legacy.until forward",
					p.Name, p.Legacy.Until.UTC().Format(time.RFC3339), k.ID, k.VerifyUntil.UTC().Format(time.RFC3339))
			}
			return nil
		}
		if k.Verifies() {
			kids = append(kids, k.ID)
		}
	}
	return fmt.Errorf("key set %s: legacy.kid %q is not a key of the key set that verifies (its keys: %s): import it first (keyd import-key %s --kid %s ...), or fix the kid",
		p.Name, p.Legacy.KID, strings.Join(kids, ", "), p.Name, p.Legacy.KID)
}
