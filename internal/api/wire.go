package api

import (
	"encoding/json"

	"github.com/keyd-dev/keyd/client"
)

// The API's answers are the client package's wire types, so that the
// daemon and its Go client cannot drift apart.
type (
	SignResponse       = client.Token
	BatchResult        = client.BatchResult
	ErrorBody          = client.Problem
	PairResponse       = client.Pair
	KeySetView         = client.KeySet
	KeyView            = client.Key
	ImportView         = client.ImportResult
	RevocationView     = client.Revocations
	RevokedTokenView   = client.RevokedToken
	RevokedSubjectView = client.RevokedSubject
	verifyResponse     = client.Verification
)

// verifiedResponse is a valid verifyResponse with the claims as the token
// carries them (the same JSON object, already checked), not encoded again
// from their map.
type verifiedResponse struct {
	Valid  bool            `json:"valid"`
	Claims json.RawMessage `json:"claims"`
	KID    string          `json:"kid,omitempty"`
}
