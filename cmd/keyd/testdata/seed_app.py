"""What a seed Flask/FastAPI app does with PyJWT, and what its clients do.

  seed_app.py mint SECRET_KEY PEM_PATH   prints three tokens, one a line:
      HS256 with no kid and no exp, HS256 with no kid and an exp,
      RS256 from the PEM with kid key-2024 and an exp, RS256 with no kid
      and no exp (aud billing, iss https://keyd.example)
  seed_app.py verify JWKS_URL ALG        verifies each token on stdin with
      PyJWKClient (keyd's JWKS) and prints "valid SUB" or the error class
"""
import sys
import time

import jwt

if sys.argv[1] == "mint":
    secret, pem_path = sys.argv[2], sys.argv[3]
    now = int(time.time())
    print(jwt.encode({"sub": "alice"}, secret, algorithm="HS256"))
    print(jwt.encode({"sub": "bob", "exp": now + 600}, secret, algorithm="HS256"))
    with open(pem_path) as f:
        pem = f.read()
    print(jwt.encode({"sub": "carol", "exp": now + 600}, pem, algorithm="RS256", headers={"kid": "key-2024"}))
    # As a service of the old signer that wrote no kid, with aud and iss.
    print(jwt.encode({"sub": "erin", "aud": "billing", "iss": "https://keyd.example", "iat": now}, pem, algorithm="RS256"))
elif sys.argv[1] == "verify":
    client = jwt.PyJWKClient(sys.argv[2])
    for token in sys.stdin.read().split():
        try:
            key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=[sys.argv[3]])
            print("valid", claims["sub"])
        except Exception as e:  # the class names the failure
            print(type(e).__name__)
