package config

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
)

//go:embed weak-tokens.txt
var weakTokenWords string

// weakTokenHashes holds the SHA-256 (hex) of tokens anyone would guess:
// the words of weak-tokens.txt in three cases with common suffixes, and
// every number below 100000. Built once, on the first validation that has
// tokens (about 150,000 hashes, tens of milliseconds).
var weakTokenHashes = sync.OnceValue(func() map[string]bool {
	set := make(map[string]bool, 160000)
	add := func(s string) {
		sum := sha256.Sum256([]byte(s))
		set[hex.EncodeToString(sum[:])] = true
	}
	for _, line := range strings.Split(weakTokenWords, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, w := range strings.Fields(line) {
			for _, c := range []string{w, strings.ToUpper(w[:1]) + w[1:], strings.ToUpper(w)} {
				for _, suffix := range []string{"", "1", "12", "123", "1234", "!", "-token", "_token", "-secret", "2024", "2025", "2026"} {
					add(c + suffix)
				}
			}
		}
	}
	for n := range 100000 {
		add(strconv.Itoa(n))
	}
	return set
})

// weakToken reports whether hash (hex SHA-256) is that of a guessable
// token.
func weakToken(hash string) bool { return weakTokenHashes()[strings.ToLower(hash)] }

// placeholderPrefix starts the sha256 fields of the shipped example
// configs: such a config does not start until each is replaced.
const placeholderPrefix = "REPLACE"
