// A Node service that takes keyd's tokens, verified with jose: the JWKS
// through createRemoteJWKSet (cached), the algorithm pinned, aud and iss
// checked, and keyd's signed revocation list honoured.
//   KEYD_URL=http://127.0.0.1:8080 node server.mjs [PORT]   (default 3000)
import http from "node:http";
import { createHmac } from "node:crypto";
import { createRemoteJWKSet, jwtVerify, errors } from "jose";

const KEYD = process.env.KEYD_URL ?? "http://127.0.0.1:8080";
const KEYSET = process.env.KEYD_KEYSET ?? "app";
const ALG = process.env.KEYD_ALG ?? "ES256";
const AUDIENCE = process.env.APP_AUDIENCE ?? "billing";
const ISSUER = process.env.APP_ISSUER ?? "https://keyd.example";

const jwks = createRemoteJWKSet(new URL(`${KEYD}/v1/keysets/${KEYSET}/jwks.json`), { cacheMaxAge: 60_000 });

// keyd's revocation list: fetched again once its max-age has passed,
// verified through the same JWKS before it is believed.
let revoked = { jtis: new Set(), subs: new Map(), subKey: Buffer.alloc(0), until: 0 };
async function isRevoked(claims) {
  if (Date.now() >= revoked.until) {
    const resp = await fetch(`${KEYD}/v1/keysets/${KEYSET}/revocations.jwt`);
    const maxAge = Number(/max-age=(\d+)/.exec(resp.headers.get("cache-control") ?? "")?.[1] ?? 60);
    const { payload } = await jwtVerify(await resp.text(), jwks, { algorithms: [ALG], audience: "keyd-revocations" });
    revoked = {
      jtis: new Set(payload.revoked_jti.map((r) => r.jti)),
      subs: new Map(payload.revoked_sub.map((r) => [r.sub_hmac, r.iat_before])),
      subKey: Buffer.from(payload.sub_key, "base64url"), // subjects: HMAC-SHA256 under the list's key
      until: Date.now() + maxAge * 1000,
    };
  }
  const cutoff = revoked.subs.get(createHmac("sha256", revoked.subKey).update(String(claims.sub)).digest("base64url"));
  return revoked.jtis.has(claims.jti) || (cutoff !== undefined && (claims.iat ?? 0) <= cutoff);
}

// jose's errors as keyd's verify codes.
function codeOf(e) {
  if (e instanceof errors.JWTExpired) return "token_expired";
  if (e instanceof errors.JWTClaimValidationFailed) {
    return { aud: "invalid_audience", iss: "invalid_issuer", nbf: "token_not_yet_valid", iat: "issued_in_future" }[e.claim] ?? "missing_claim";
  }
  if (e instanceof errors.JOSEAlgNotAllowed) return "algorithm_not_allowed";
  if (e instanceof errors.JWSSignatureVerificationFailed) return "invalid_signature";
  if (e instanceof errors.JWKSNoMatchingKey) return "unknown_key";
  return "malformed_token";
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  if (req.method !== "GET" || req.url !== "/api/me") return send(res, 404, { error: { code: "not_found" } });
  const [scheme, token] = (req.headers.authorization ?? "").split(" ");
  if (scheme?.toLowerCase() !== "bearer" || !token) {
    return send(res, 401, { error: { code: "missing_token", message: "an Authorization: Bearer token is required" } });
  }
  try {
    const { payload } = await jwtVerify(token, jwks, { algorithms: [ALG], audience: AUDIENCE, issuer: ISSUER, requiredClaims: ["exp", "iat", "sub"] });
    if (await isRevoked(payload)) {
      return send(res, 401, { error: { code: "token_revoked", message: "the token has been revoked" } });
    }
    send(res, 200, { user: payload.sub });
  } catch (e) {
    const code = codeOf(e);
    send(res, 401, { error: { code, message: e.message } }, { "www-authenticate": `Bearer error="invalid_token", error_description="${code}"` });
  }
});
server.listen(Number(process.argv[2] ?? 3000), "127.0.0.1", () => console.log("listening"));
