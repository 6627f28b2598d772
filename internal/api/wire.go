package api

import "github.com/keyd-dev/keyd/client"

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
