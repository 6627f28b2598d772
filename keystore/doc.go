// Package keystore is keyd's domain: key sets, keys, their lifecycle states
// and the storage contract every backend implements.
//
// A [KeySet] is a named group of keys that share one [Algorithm]. Each [Key]
// moves through the states pending -> active -> retired, or to revoked, by
// the plain functions in lifecycle.go ([NewKeySet], [Rotate], [Revoke],
// [Prune]). They do no I/O and never generate keys themselves: callers make
// new keys first (key generation can take seconds) and then apply a
// transition inside [Update], so a transition retried after a conflicting
// write by another replica reuses the same fresh key.
//
// A [Store] persists key sets. Its one write, [Store.Put], is an atomic
// compare-and-swap on [KeySet.Version]; [Update] builds read-modify-write on
// top of it. Package keystoretest holds the conformance suite every backend
// passes.
//
// Key material ([Material]) is held in plain form in memory and formats
// itself as "[redacted]" in logs, fmt verbs and JSON, so it cannot leak by
// accident; backends that encrypt at rest do so explicitly.
package keystore
