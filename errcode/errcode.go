// Package errcode is keyd's one table of errors as its callers see them:
// each stable code with its HTTP status and its gRPC code. The HTTP API
// answers with it, the Kubernetes signer's gRPC answers with it, the Go
// client's sentinels are its codes, and the CLI prints the code and message
// it got. It is a leaf package (it imports only gRPC's codes), so that the
// client packages can use it without compiling anything of the daemon;
// which domain error becomes which code is the daemon's (internal/errmap).
package errcode

import (
	"net/http"

	"google.golang.org/grpc/codes"
)

// The codes, as they appear in answers ({"error": {"code": ...}}).
const (
	BadJSON             = "bad_json"
	BadRequest          = "bad_request"
	InvalidKey          = "invalid_key"
	InvalidToken        = "invalid_token"
	Unauthorized        = "unauthorized"
	Forbidden           = "forbidden"
	NotFound            = "not_found"
	KeySetNotFound      = "keyset_not_found"
	KeyNotFound         = "key_not_found"
	CertificateNotFound = "certificate_not_found"
	RefreshNotEnabled   = "refresh_not_enabled"
	RequestTimeout      = "request_timeout"
	Conflict            = "conflict"
	KeyExists           = "key_exists"
	RevocationLimit     = "revocation_limit"
	RotationTooEarly    = "rotation_too_early"
	TooLarge            = "too_large"
	BodyTooLarge        = "body_too_large"
	ReloadRefused       = "reload_refused"
	TooManyAuthFailures = "too_many_auth_failures"
	RefreshTokenReused  = "refresh_token_reused"
	RefreshTokenExpired = "refresh_token_expired"
	RefreshTokenRevoked = "refresh_token_revoked"
	RefreshTokenInvalid = "refresh_token_invalid"
	Internal            = "internal"
	NotReady            = "not_ready"
	StoreUnavailable    = "store_unavailable"
	AuditUnavailable    = "audit_unavailable"
	CustodyUnavailable  = "custody_unavailable"
	Timeout             = "timeout"
	MethodNotAllowed    = "method_not_allowed"
)

// Code is one row of the table.
type Code struct {
	Name string
	HTTP int
	GRPC codes.Code
}

// Table is every code keyd answers with.
var Table = []Code{
	{BadJSON, http.StatusBadRequest, codes.InvalidArgument},
	{BadRequest, http.StatusBadRequest, codes.InvalidArgument},
	{InvalidKey, http.StatusBadRequest, codes.InvalidArgument},
	{InvalidToken, http.StatusBadRequest, codes.InvalidArgument},
	{Unauthorized, http.StatusUnauthorized, codes.Unauthenticated},
	{Forbidden, http.StatusForbidden, codes.PermissionDenied},
	{NotFound, http.StatusNotFound, codes.NotFound},
	{KeySetNotFound, http.StatusNotFound, codes.NotFound},
	{KeyNotFound, http.StatusNotFound, codes.NotFound},
	{CertificateNotFound, http.StatusNotFound, codes.NotFound},
	{RefreshNotEnabled, http.StatusNotFound, codes.FailedPrecondition},
	{RequestTimeout, http.StatusRequestTimeout, codes.DeadlineExceeded},
	{Conflict, http.StatusConflict, codes.FailedPrecondition},
	{KeyExists, http.StatusConflict, codes.AlreadyExists},
	{RevocationLimit, http.StatusConflict, codes.ResourceExhausted},
	{RotationTooEarly, http.StatusConflict, codes.FailedPrecondition},
	{TooLarge, http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	{BodyTooLarge, http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	{ReloadRefused, http.StatusUnprocessableEntity, codes.FailedPrecondition},
	{TooManyAuthFailures, http.StatusTooManyRequests, codes.ResourceExhausted},
	{RefreshTokenReused, http.StatusUnauthorized, codes.Unauthenticated},
	{RefreshTokenExpired, http.StatusUnauthorized, codes.Unauthenticated},
	{RefreshTokenRevoked, http.StatusUnauthorized, codes.Unauthenticated},
	{RefreshTokenInvalid, http.StatusUnauthorized, codes.Unauthenticated},
	{Internal, http.StatusInternalServerError, codes.Internal},
	{NotReady, http.StatusServiceUnavailable, codes.Unavailable},
	{StoreUnavailable, http.StatusServiceUnavailable, codes.Unavailable},
	{AuditUnavailable, http.StatusServiceUnavailable, codes.Unavailable},
	{CustodyUnavailable, http.StatusServiceUnavailable, codes.Unavailable},
	{Timeout, http.StatusServiceUnavailable, codes.Unavailable},
	{MethodNotAllowed, http.StatusMethodNotAllowed, codes.Unimplemented},
}

var byName = func() map[string]Code {
	m := make(map[string]Code, len(Table))
	for _, c := range Table {
		m[c.Name] = c
	}
	return m
}()

// Lookup returns the row of code name.
func Lookup(name string) (Code, bool) {
	c, ok := byName[name]
	return c, ok
}

// HTTP is the HTTP status of code name: 500 for a name not in the table.
func HTTP(name string) int {
	if c, ok := byName[name]; ok {
		return c.HTTP
	}
	return http.StatusInternalServerError
}

// GRPC is the gRPC code of code name: Internal for a name not in the table.
func GRPC(name string) codes.Code {
	if c, ok := byName[name]; ok {
		return c.GRPC
	}
	return codes.Internal
}
