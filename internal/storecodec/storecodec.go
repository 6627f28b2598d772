// Package storecodec is the stored form of a key set, shared by the
// backends: a versioned JSON record with key material passed through a
// seal/open pair. The bbolt backend seals with AES-256-GCM; the Vault
// backend, whose storage Vault encrypts, passes material through as is. It
// is internal because the format is the backends' business, not an API.
package storecodec

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyd-dev/keyd/keystore"
)

// Record is a stored key set.
type Record struct {
	Name      string      `json:"name"`
	Algorithm string      `json:"algorithm"`
	RotatedAt time.Time   `json:"rotated_at"`
	Version   uint64      `json:"version,omitempty"` // bbolt keeps it here; Vault in its metadata
	Keys      []KeyRecord `json:"keys"`
	// Revoked tokens and subjects; absent in records from before they
	// existed.
	RevokedTokens   []RevokedToken   `json:"revoked_tokens,omitempty"`
	RevokedSubjects []RevokedSubject `json:"revoked_subjects,omitempty"`
}

// RevokedToken is a stored keystore.TokenRevocation.
type RevokedToken struct {
	JTI       string    `json:"jti"`
	Expires   time.Time `json:"exp"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// RevokedSubject is a stored keystore.SubjectRevocation.
type RevokedSubject struct {
	Subject   string    `json:"sub"`
	Before    time.Time `json:"before"`
	Until     time.Time `json:"until"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// KeyRecord is a stored key.
type KeyRecord struct {
	ID          string    `json:"kid"`
	Algorithm   string    `json:"alg"`
	State       string    `json:"state"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	Material    []byte    `json:"material"` // as sealed; base64 in JSON
	// Imported keys (absent in records from before import existed).
	Imported    bool      `json:"imported,omitempty"`
	VerifyUntil time.Time `json:"verify_until,omitzero"`
	PublicOnly  bool      `json:"public_only,omitempty"` // material is a PKIX public key
	Certificate []byte    `json:"certificate,omitempty"` // X.509 DER, for key sets with certificates
	// Keys held by a custody: its name, and the public key (PKIX DER);
	// material is then the custody's reference.
	Custody string `json:"custody,omitempty"`
	Public  []byte `json:"public,omitempty"`
}

// Seal transforms material before it is stored; aad names the key set and
// kid it belongs to.
type Seal func(material, aad []byte) ([]byte, error)

// Open reverses Seal.
type Open func(stored, aad []byte) ([]byte, error)

// Plain is a Seal and an Open that change nothing.
func Plain(b, _ []byte) ([]byte, error) { return b, nil }

// AAD binds sealed material to its key set and kid, so a sealed value
// copied onto another key does not open.
func AAD(name, kid string) []byte { return []byte("keyd/v1/" + name + "/" + kid) }

// Encode turns ks into its record, sealing each key's material.
func Encode(ks *keystore.KeySet, seal Seal) (*Record, error) {
	r := &Record{Name: ks.Name, Algorithm: string(ks.Algorithm), RotatedAt: ks.RotatedAt.UTC(), Version: ks.Version, Keys: []KeyRecord{}}
	for _, t := range ks.Revocations.Tokens {
		r.RevokedTokens = append(r.RevokedTokens, RevokedToken(t))
	}
	for _, s := range ks.Revocations.Subjects {
		r.RevokedSubjects = append(r.RevokedSubjects, RevokedSubject(s))
	}
	for _, k := range ks.Keys {
		sealed, err := seal(k.Material, AAD(ks.Name, k.ID))
		if err != nil {
			return nil, err
		}
		r.Keys = append(r.Keys, KeyRecord{
			ID: k.ID, Algorithm: string(k.Algorithm), State: string(k.State),
			CreatedAt: k.CreatedAt.UTC(), ActivatedAt: k.ActivatedAt.UTC(),
			RetiredAt: k.RetiredAt.UTC(), RevokedAt: k.RevokedAt.UTC(),
			Material: sealed, Imported: k.Imported, VerifyUntil: k.VerifyUntil.UTC(), PublicOnly: k.PublicOnly,
			Certificate: k.Certificate, Custody: k.Custody, Public: k.Public,
		})
	}
	return r, nil
}

// Decode turns a record back into a key set, opening each key's material.
// Errors wrap keystore.ErrCorrupt and never include material.
func (r *Record) Decode(open Open) (*keystore.KeySet, error) {
	ks := &keystore.KeySet{Name: r.Name, Algorithm: keystore.Algorithm(r.Algorithm), RotatedAt: r.RotatedAt, Version: r.Version}
	for _, t := range r.RevokedTokens {
		ks.Revocations.Tokens = append(ks.Revocations.Tokens, keystore.TokenRevocation(t))
	}
	for _, s := range r.RevokedSubjects {
		ks.Revocations.Subjects = append(ks.Revocations.Subjects, keystore.SubjectRevocation(s))
	}
	for _, kr := range r.Keys {
		m, err := open(kr.Material, AAD(r.Name, kr.ID))
		if err != nil {
			return nil, fmt.Errorf("%w: key set %s key %s: material does not open", keystore.ErrCorrupt, r.Name, kr.ID)
		}
		ks.Keys = append(ks.Keys, keystore.Key{
			ID: kr.ID, Algorithm: keystore.Algorithm(kr.Algorithm), State: keystore.State(kr.State),
			CreatedAt: kr.CreatedAt, ActivatedAt: kr.ActivatedAt, RetiredAt: kr.RetiredAt, RevokedAt: kr.RevokedAt,
			Material: m, Imported: kr.Imported, VerifyUntil: kr.VerifyUntil, PublicOnly: kr.PublicOnly,
			Certificate: kr.Certificate, Custody: kr.Custody, Public: kr.Public,
		})
	}
	return ks, nil
}

// Unmarshal parses a record.
func Unmarshal(raw []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", keystore.ErrCorrupt, err)
	}
	return &r, nil
}
