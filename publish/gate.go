package publish

import (
	"slices"
	"strings"
	"time"
)

// Set is every publisher of a keyd: the rotation gate asks it when a key
// may sign.
type Set []*Publisher

// Held says when the pending key kid of keyset may start signing as far as
// the targets are concerned: once every required target publishing keyset
// has held it (read back) for its cache time. gated is false when no
// required target publishes keyset; readyAt is zero while a target does
// not hold the key yet; why names the targets that hold the rotation back.
func (s Set) Held(keyset, kid string, now time.Time) (readyAt time.Time, gated bool, why string) {
	var missing, caching []string
	for _, p := range s {
		if !p.Spec.Required || !slices.Contains(p.Spec.KeySets, keyset) {
			continue
		}
		gated = true
		since, cacheFor, ok := p.Held(kid)
		if !ok {
			missing = append(missing, p.Spec.Name)
			continue
		}
		at := since.Add(cacheFor)
		if at.After(readyAt) {
			readyAt = at
		}
		if now.Before(at) {
			caching = append(caching, p.Spec.Name+" until "+at.UTC().Format(time.RFC3339))
		}
	}
	switch {
	case len(missing) > 0:
		return time.Time{}, true, "publishing targets that do not hold the new key yet: " + strings.Join(missing, ", ")
	case len(caching) > 0:
		return readyAt, true, "the caches of publishing targets: " + strings.Join(caching, ", ")
	}
	return readyAt, gated, ""
}
