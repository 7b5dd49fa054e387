// Independent implementations against the gateway: panva's `dpop` makes DPoP proofs, `jose`
// verifies auth_service's access tokens. Driven by tests/interop/test_dpop_interop.py: one JSON
// request on stdin, one JSON answer on stdout.
//
//   {"op": "key", "alg": "ES256"}                  -> {"key": <private JWK>, "jkt": <thumbprint>}
//   {"op": "proof", "key", "alg", "htm", "htu", "accessToken"?, "nonce"?}  -> {"proof": <JWT>}
//   {"op": "verify", "token", "jwks", "issuer", "audience"}  -> {"header", "payload"}
import * as dpop from "dpop";
import * as jose from "jose";

const PARAMS = {
  ES256: { name: "ECDSA", namedCurve: "P-256" },
  PS256: { name: "RSA-PSS", hash: "SHA-256" },
  RS256: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
};

async function keyPair(jwk, alg) {
  const { d, p, q, dp, dq, qi, key_ops, ext, ...pub } = jwk;
  return {
    privateKey: await crypto.subtle.importKey("jwk", jwk, PARAMS[alg], false, ["sign"]),
    publicKey: await crypto.subtle.importKey("jwk", pub, PARAMS[alg], true, ["verify"]),
  };
}

const ops = {
  async key({ alg }) {
    const pair = await dpop.generateKeyPair(alg, { extractable: true });
    return {
      key: await crypto.subtle.exportKey("jwk", pair.privateKey),
      jkt: await dpop.calculateThumbprint(pair.publicKey),
    };
  },
  async proof({ key, alg, htm, htu, accessToken, nonce }) {
    return { proof: await dpop.generateProof(await keyPair(key, alg), htu, htm, nonce, accessToken) };
  },
  async verify({ token, jwks, issuer, audience }) {
    const { payload, protectedHeader } = await jose.jwtVerify(token, jose.createLocalJWKSet(jwks), {
      issuer,
      audience,
      typ: "at+jwt",
      algorithms: ["RS256"],
    });
    return { header: protectedHeader, payload };
  },
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const request = JSON.parse(input);
process.stdout.write(JSON.stringify(await ops[request.op](request)));
