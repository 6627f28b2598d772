"""Verifying keyd's tokens in a Python service with PyJWT: the JWKS through
PyJWKClient (cached), the algorithm pinned, aud and iss checked, keyd's
revocation list honoured, and PyJWT's exceptions mapped to keyd's verify
codes for the 401 answer. Shared by flask_app.py and fastapi_app.py.

An HMAC key set (KEYD_ALG=HS256, HS384, HS512: a team moving its Flask or
FastAPI SECRET_KEY tokens to keyd) publishes no keys: its secret never
leaves keyd, so every token is verified through keyd's verify endpoint
(KEYD_TOKEN needs verify:<keyset>), tokens without a kid signed with the
old SECRET_KEY included (the key set's legacy setting), revocations too.
That is one call to keyd per request; a new asymmetric key set beside the
HS256 one lets services verify locally again (see docs/importing.md)."""
import datetime, json, os, urllib.request
import jwt
from keyd_revocations import RevocationList

KEYD = os.environ.get("KEYD_URL", "http://127.0.0.1:8080")
KEYSET = os.environ.get("KEYD_KEYSET", "app")
ALG = os.environ.get("KEYD_ALG", "ES256")
AUDIENCE = os.environ.get("APP_AUDIENCE", "billing")
ISSUER = os.environ.get("APP_ISSUER", "https://keyd.example")
SERVICE_TOKEN = os.environ.get("KEYD_TOKEN", "")  # sign:<keyset>, for login and refresh
# The key set's legacy setting, mirrored: a token without a kid verifies
# with that imported key alone, until then (RFC 3339), and, with
# KEYD_LEGACY_ALLOW_MISSING_EXP=1, also without exp.
LEGACY_KID = os.environ.get("KEYD_LEGACY_KID", "")
LEGACY_UNTIL = os.environ.get("KEYD_LEGACY_UNTIL", "")
LEGACY_ALLOW_MISSING_EXP = os.environ.get("KEYD_LEGACY_ALLOW_MISSING_EXP", "") == "1"

HMAC = ALG.startswith("HS")  # verified through keyd: its secret never leaves keyd

jwks = None if HMAC else jwt.PyJWKClient(f"{KEYD}/v1/keysets/{KEYSET}/jwks.json", cache_jwk_set=True, lifespan=60)
revocations = None if HMAC else RevocationList(KEYD, KEYSET, jwks, ALG)

# PyJWT's exceptions, most specific first, as keyd's verify codes.
CODES = [
    (jwt.ExpiredSignatureError, "token_expired"),
    (jwt.ImmatureSignatureError, "token_not_yet_valid"),
    (jwt.InvalidAudienceError, "invalid_audience"),
    (jwt.InvalidIssuerError, "invalid_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt.InvalidSignatureError, "invalid_signature"),
    (jwt.PyJWKClientError, "unknown_key"),
    (jwt.DecodeError, "malformed_token"),
    (jwt.InvalidTokenError, "invalid_token"),
]


class Unauthorized(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Unavailable(Exception):
    """keyd could not be asked (HMAC key sets verify through it): answer 503, not 401."""


def verify(authorization):
    """Returns the claims of the bearer token in an Authorization header, or raises Unauthorized."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing_token", "an Authorization: Bearer token is required")
    if HMAC:
        return verify_through_keyd(token)
    try:
        required = ["exp", "iat", "sub"]
        if not jwt.get_unverified_header(token).get("kid") and legacy_in_force():
            key = jwks.get_signing_key(LEGACY_KID).key  # the legacy key alone, never another
            if LEGACY_ALLOW_MISSING_EXP:
                required.remove("exp")
        else:
            key = jwks.get_signing_key_from_jwt(token).key
        claims = jwt.decode(token, key, algorithms=[ALG], audience=AUDIENCE, issuer=ISSUER,
                            options={"require": required})
    except Exception as e:
        for exc, code in CODES:
            if isinstance(e, exc):
                raise Unauthorized(code, str(e))
        raise
    if revocations.is_revoked(claims):
        raise Unauthorized("token_revoked", "the token has been revoked")
    return claims


def verify_through_keyd(token):
    """An HMAC key set's token, verified by keyd (signature, lifetime, aud, iss, revocations)."""
    try:
        status, body = keyd_call(f"/v1/keysets/{KEYSET}/verify",
                                 {"token": token, "audience": [AUDIENCE], "issuer": ISSUER, "required_claims": ["iat", "sub"]})
    except (OSError, ValueError) as e:  # refused, timed out, not JSON
        raise Unavailable(f"keyd cannot be reached to verify the token: {e}") from None
    if status != 200:
        raise Unavailable(f"keyd answered {status} to a verification: {body.get('error', {}).get('code', 'error')}")
    if not body.get("valid"):
        raise Unauthorized(body.get("code", "invalid_token"), body.get("message", "invalid token"))
    return body["claims"]


def legacy_in_force():
    if not LEGACY_KID or not LEGACY_UNTIL:
        return False
    until = datetime.datetime.fromisoformat(LEGACY_UNTIL.replace("Z", "+00:00"))
    return datetime.datetime.now(datetime.timezone.utc) < until


def keyd_call(path, body):
    """POSTs to keyd with the service's token; returns (status, JSON answer)."""
    req = urllib.request.Request(f"{KEYD}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def login(user):
    """Asks keyd for a token pair for user (the password check is the service's business)."""
    return keyd_call(f"/v1/keysets/{KEYSET}/token-pair", {"claims": {"sub": user, "aud": AUDIENCE}})


def refresh(refresh_token):
    return keyd_call(f"/v1/keysets/{KEYSET}/refresh", {"refresh_token": refresh_token})
