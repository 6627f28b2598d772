# Verifies each token on stdin (one per line) as a service would with PyJWT
# and keyd's documented revocation helper; prints one verdict per line:
# "valid", "revoked", or the PyJWT exception's class name. A line REFRESH
# makes the helper fetch the list's changes now and prints "fetched=N
# deltas=M" (lists fetched, of which deltas).
import sys
sys.path.insert(0, sys.argv[4])  # examples/python
import jwt
from keyd_revocations import RevocationList

url, keyset, alg = sys.argv[1], sys.argv[2], sys.argv[3]
jwks = jwt.PyJWKClient(f"{url}/v1/keysets/{keyset}/jwks.json")
revocations = RevocationList(url, keyset, jwks, alg)
for line in sys.stdin:
    token = line.strip()
    if not token:
        continue
    if token == "REFRESH":
        revocations.refresh()
        print(f"fetched={revocations.fetched} deltas={revocations.deltas}", flush=True)
        continue
    try:
        claims = jwt.decode(token, jwks.get_signing_key_from_jwt(token).key, algorithms=[alg])
        print("revoked" if revocations.is_revoked(claims) else "valid", flush=True)
    except Exception as e:  # the verdict is the exception's name
        print(type(e).__name__, flush=True)
