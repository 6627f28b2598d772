// A Node service that takes keyd's tokens, verified with jose: the JWKS
// through createRemoteJWKSet (cached), the algorithm pinned, aud and iss
// checked, and keyd's signed revocation list honoured.
//   KEYD_URL=http://127.0.0.1:8080 node server.mjs [PORT]   (default 3000)
import http from "node:http";
import { createHash, createHmac } from "node:crypto";
import { createRemoteJWKSet, jwtVerify, errors } from "jose";

const KEYD = process.env.KEYD_URL ?? "http://127.0.0.1:8080";
const KEYSET = process.env.KEYD_KEYSET ?? "app";
const ALG = process.env.KEYD_ALG ?? "ES256";
const AUDIENCE = process.env.APP_AUDIENCE ?? "billing";
const ISSUER = process.env.APP_ISSUER ?? "https://keyd.example";

const jwks = createRemoteJWKSet(new URL(`${KEYD}/v1/keysets/${KEYSET}/jwks.json`), { cacheMaxAge: 60_000 });

// keyd's revocation list: the whole list once, then every max-age only the
// changes since the list held (?since=its iat), each verified through the
// same JWKS before it is believed. Tokens are named by the first 12 bytes
// of the SHA-256 of their jti; subjects by an HMAC under the list's key
// (a new key after keyd rotates: the whole list again).
let revoked = { jtis: new Map(), subs: new Map(), subKey: "", iat: 0, exp: 0, until: 0 };
async function fetchList(since) {
  const resp = await fetch(`${KEYD}/v1/keysets/${KEYSET}/revocations.jwt${since ? `?since=${since}` : ""}`);
  const maxAge = Number(/max-age=(\d+)/.exec(resp.headers.get("cache-control") ?? "")?.[1] ?? 60);
  const { payload } = await jwtVerify(await resp.text(), jwks, { algorithms: [ALG], audience: "keyd-revocations", typ: "revocations+jwt" });
  if (payload.v !== 2) throw new Error(`revocation list format ${payload.v}, this service reads 2`);
  return { payload, maxAge };
}
async function refreshList() {
  let { payload, maxAge } = await fetchList(revoked.iat);
  if (payload.since && payload.sub_key !== revoked.subKey) ({ payload, maxAge } = await fetchList(0));
  // Never go back: an older list (a proxy or a CDN replaying an earlier
  // answer) or a delta with a gap would make revoked tokens valid again.
  if (payload.iat < revoked.iat || (payload.since ?? 0) > revoked.iat) throw new Error(`revocation list refused: issued at ${payload.iat}, the list held is of ${revoked.iat}`);
  const next = payload.since ? revoked : { jtis: new Map(), subs: new Map() };
  if (payload.since) for (const [d, exp] of next.jtis) if (exp * 1000 < Date.now() - 60_000) next.jtis.delete(d);
  for (const batch of payload.revoked_jti) {
    const packed = Buffer.from(batch.jti, "base64url");
    for (let i = 0; i < packed.length; i += 12) next.jtis.set(packed.subarray(i, i + 12).toString("hex"), batch.exp);
  }
  for (const r of payload.revoked_sub) next.subs.set(r.sub_hmac, Math.max(next.subs.get(r.sub_hmac) ?? 0, r.iat_before));
  revoked = { jtis: next.jtis, subs: next.subs, subKey: payload.sub_key, iat: payload.iat, exp: payload.exp, until: Date.now() + maxAge * 1000 };
}
async function isRevoked(claims) {
  if (Date.now() >= revoked.until) {
    try {
      await refreshList();
    } catch (e) {
      if (Date.now() >= revoked.exp * 1000) throw e; // keep the list held until it expires
      revoked.until = Date.now() + 10_000;
    }
  }
  const digest = createHash("sha256").update(String(claims.jti ?? "")).digest().subarray(0, 12).toString("hex");
  const cutoff = revoked.subs.get(createHmac("sha256", Buffer.from(revoked.subKey, "base64url")).update(String(claims.sub)).digest("base64url"));
  return (claims.jti !== undefined && revoked.jtis.has(digest)) || (cutoff !== undefined && (claims.iat ?? 0) <= cutoff);
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
const port = Number(process.argv[2] ?? 3000);
server.listen(port, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${port}`));
