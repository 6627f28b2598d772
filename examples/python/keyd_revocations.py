"""keyd's revocation list for services that verify tokens locally with PyJWT.

    jwks = jwt.PyJWKClient("https://keys.example.com/.well-known/jwks.json")
    revocations = RevocationList("https://keys.example.com", "default", jwks, "ES256")
    claims = jwt.decode(token, jwks.get_signing_key_from_jwt(token).key, algorithms=["ES256"], audience="billing")
    if revocations.is_revoked(claims): reject(401)
"""
import base64, hashlib, hmac, re, time, urllib.request
import jwt


class RevocationList:
    def __init__(self, keyd_url, keyset, jwks_client, algorithm):
        self.url = f"{keyd_url}/v1/keysets/{keyset}/revocations.jwt"
        self.jwks, self.alg, self.jtis, self.subs, self.key, self.expires = jwks_client, algorithm, set(), {}, b"", 0.0

    def is_revoked(self, claims):
        if time.time() >= self.expires:  # fetch again once the cached copy is stale
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                token, cc = resp.read().decode(), resp.headers.get("Cache-Control", "")
            key = self.jwks.get_signing_key_from_jwt(token).key  # the list is signed like the tokens
            lst = jwt.decode(token, key, algorithms=[self.alg], audience="keyd-revocations")
            self.jtis = {r["jti"] for r in lst["revoked_jti"]}
            self.subs = {r["sub_hmac"]: r["iat_before"] for r in lst["revoked_sub"]}
            self.key = base64.urlsafe_b64decode(lst["sub_key"] + "=" * (-len(lst["sub_key"]) % 4))
            self.expires = time.time() + int((re.search(r"max-age=(\d+)", cc) or [0, 60])[1])
        mac = hmac.new(self.key, str(claims.get("sub")).encode(), hashlib.sha256).digest()
        cutoff = self.subs.get(base64.urlsafe_b64encode(mac).rstrip(b"=").decode())  # subjects: HMAC under the list's key
        return claims.get("jti") in self.jtis or (cutoff is not None and claims.get("iat", 0) <= cutoff)
