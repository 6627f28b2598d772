# For each case on stdin (JSON lines), decodes the token with PyJWT as a
# service would, with the same expectations keyd's verify got, and prints
# "valid" or the exception's class name, one per line.
import json, sys
import jwt

for line in sys.stdin:
    c = json.loads(line)
    try:
        jwt.decode(c["token"], c["key"], algorithms=[c["alg"]], audience=c.get("audience"), issuer=c.get("issuer"),
                   leeway=c["leeway"], options={"require": ["exp"] + (c.get("required") or [])})
        print("valid")
    except Exception as e:
        print(type(e).__name__)
