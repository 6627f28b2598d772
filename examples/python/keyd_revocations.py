"""keyd's revocation list for services that verify tokens locally with PyJWT.

    jwks = jwt.PyJWKClient("https://keys.example.com/.well-known/jwks.json")
    revocations = RevocationList("https://keys.example.com", "default", jwks, "ES256")
    claims = jwt.decode(token, jwks.get_signing_key_from_jwt(token).key, algorithms=["ES256"], audience="billing")
    if revocations.is_revoked(claims): reject(401)

The whole list is fetched once; after that, every max-age, only the changes
since the list held (?since=its iat), added to it. Tokens are named by the
first 12 bytes of the SHA-256 of their jti, subjects by an HMAC under the
list's sub_key (a new key, after keyd rotates: the whole list again).
"""
import base64, hashlib, hmac, re, time, urllib.request
import jwt


def _b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class RevocationList:
    def __init__(self, keyd_url, keyset, jwks_client, algorithm, leeway=60):
        self.url = f"{keyd_url}/v1/keysets/{keyset}/revocations.jwt"
        self.jwks, self.alg, self.leeway = jwks_client, algorithm, leeway
        self.jtis, self.subs, self.key, self.iat, self.exp, self.fresh_until = {}, {}, b"", 0, 0, 0.0
        self.fetched = self.deltas = 0

    def refresh(self):
        lst, max_age = self._fetch(f"{self.url}?since={self.iat}" if self.iat else self.url)
        if lst.get("since") and _b64(lst["sub_key"]) != self.key:
            lst, max_age = self._fetch(self.url)  # keyd rotated its key: the whole list
        # Never go back: a list older than the one held (a proxy or a CDN
        # replaying an earlier answer), or a delta that leaves a gap, would
        # make revoked tokens valid again. The list held stays.
        if lst["iat"] < self.iat or lst.get("since", 0) > self.iat:
            raise ValueError(f"revocation list refused: issued at {lst['iat']} (since {lst.get('since', 0)}), the list held is of {self.iat}")
        if lst.get("since"):
            self.deltas += 1
            now = time.time() - self.leeway
            self.jtis = {d: e for d, e in self.jtis.items() if e >= now}  # expired tokens leave
        else:
            self.jtis, self.subs = {}, {}
        for batch in lst["revoked_jti"]:
            packed = _b64(batch["jti"])
            for i in range(0, len(packed), 12):
                self.jtis[packed[i:i + 12]] = batch["exp"]
        for r in lst["revoked_sub"]:
            self.subs[r["sub_hmac"]] = max(self.subs.get(r["sub_hmac"], 0), r["iat_before"])
        self.key, self.iat, self.exp = _b64(lst["sub_key"]), lst["iat"], lst["exp"]
        self.fresh_until = time.time() + max_age

    def _fetch(self, url):
        with urllib.request.urlopen(url, timeout=5) as resp:
            token, cc = resp.read().decode(), resp.headers.get("Cache-Control", "")
        key = self.jwks.get_signing_key_from_jwt(token).key  # the list is signed like the tokens
        lst = jwt.decode(token, key, algorithms=[self.alg], audience="keyd-revocations")
        if lst.get("v") != 2:
            raise ValueError(f"revocation list format {lst.get('v')}, this helper reads 2")
        self.fetched += 1
        return lst, int((re.search(r"max-age=(\d+)", cc) or [0, 60])[1])

    def is_revoked(self, claims):
        if time.time() >= self.fresh_until:  # the changes, once the copy is stale
            try:
                self.refresh()
            except Exception:
                if time.time() > self.exp:  # keep the list held until it expires
                    raise
                self.fresh_until = time.time() + 10  # and try again a little later
        digest = hashlib.sha256(str(claims.get("jti", "")).encode()).digest()[:12]
        mac = hmac.new(self.key, str(claims.get("sub")).encode(), hashlib.sha256).digest()
        cutoff = self.subs.get(base64.urlsafe_b64encode(mac).rstrip(b"=").decode())  # subjects: HMAC under the list's key
        return ("jti" in claims and digest in self.jtis) or (cutoff is not None and claims.get("iat", 0) <= cutoff)
