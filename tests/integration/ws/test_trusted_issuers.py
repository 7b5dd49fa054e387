"""Bring your own identity provider: ``WS_TRUSTED_ISSUERS`` beside auth_service, each with its own
key set served by a real JWKS endpoint (an ES256 key here), tokens minted by stock libraries
(pyjwt, joserfc), and the attacks a second issuer opens: a kid of one issuer presented under
another, algorithm confusion (HS256 keyed with the public key, ``none``, a key of another type)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey
from jwt.algorithms import ECAlgorithm

from tests.integration.ws.conftest import KID, MakeGateway
from tests.integration.ws.harness import (
    Harness,
    auth,
    b64,
    expect_close,
    expect_open,
    long_ago,
    recv,
    send,
    wait_until,
)
from ws_service.appkeys import TRUSTED_KEYS
from ws_service.handlers import readiness
from ws_service.settings import TrustedIssuer

IDP = "https://idp.example.com/"
AUDIENCE = "realtime-api"


@dataclass
class Idp:
    """An identity provider's JWKS endpoint with EC P-256 keys; counts fetches."""

    keys: dict[str, ec.EllipticCurvePrivateKey] = field(
        default_factory=lambda: {"idp-1": ec.generate_private_key(ec.SECP256R1())}
    )
    fetches: int = 0
    fail: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.fail:
            return web.json_response({"error": "down"}, status=503)
        jwks = [
            {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": kid, "use": "sig"}
            for kid, key in self.keys.items()
        ]
        return web.json_response({"keys": jwks}, headers={"Cache-Control": "max-age=300"})

    def claims(self, sub: str = "idp|alice", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": IDP,
            "sub": sub,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "email": "alice@example.com",
            "scope": "chat:read chat:write",
            **overrides,
        }
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str = "idp-1", typ: str = "application/at+jwt", **overrides: Any) -> str:
        return jwt.encode(
            self.claims(**overrides),
            self.keys.get(kid) or self.keys["idp-1"],
            algorithm="ES256",
            headers={"kid": kid, "typ": typ},
        )


@pytest.fixture
async def idp_gw(aiohttp_server: Any, make_gateway: MakeGateway) -> tuple[Idp, Harness]:
    idp = Idp()
    app = web.Application()
    app.router.add_get("/jwks", idp.handle)
    server = await aiohttp_server(app)
    trusted = TrustedIssuer(
        issuer=IDP,
        jwks_url=str(server.make_url("/jwks")),
        audience=AUDIENCE,
        algorithms=("ES256",),
        username_claim="email",
    )
    gw = await make_gateway(trusted_issuers=(trusted,))
    await wait_until(lambda: gw.app[TRUSTED_KEYS][IDP].ready)
    return idp, gw


async def refused(gw: Harness, token: str) -> str:
    ws = await gw.open()
    reply = await auth(ws, token)
    assert (reply["type"], reply["code"]) == ("auth_error", "invalid_token"), reply
    await expect_close(ws, 4401, "invalid_token")
    return str(reply["message"])


async def test_an_es256_token_without_sid_is_accepted(idp_gw: tuple[Idp, Harness]) -> None:
    idp, gw = idp_gw
    ws = await gw.open()
    reply = await auth(ws, idp.token())
    assert reply["type"] == "auth_success", reply
    assert reply["user"] == {"id": "idp|alice", "username": "alice@example.com"}
    assert reply["session"] is None
    await send(ws, {"type": "subscribe", "channel": "chat:general", "id": 1})
    assert (await recv(ws))["type"] == "subscribed", "scope works as for auth_service's tokens"
    response = await gw.client.get(
        "/v1/connections",
        params={"user": "idp|alice"},
        headers={"Authorization": "Bearer test-api-key-0123456789"},
    )
    body = await response.json()
    assert body["sessions"] == [{"session": None, "connections": 1}], "null, as auth_success"


async def test_a_token_minted_by_joserfc_is_accepted(idp_gw: tuple[Idp, Harness]) -> None:
    idp, gw = idp_gw
    pem = idp.keys["idp-1"].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token = jose_jwt.encode(
        {"alg": "ES256", "kid": "idp-1", "typ": "at+jwt"},
        idp.claims(
            authorization_details=[
                {"type": "realtime_channels", "channels": ["doc:*"], "actions": ["subscribe"]}
            ]
        ),
        ECKey.import_key(pem),
    )
    ws = await gw.open()
    assert (await auth(ws, token))["type"] == "auth_success"
    await send(ws, {"type": "subscribe", "channel": "doc:9", "id": 1})
    assert await recv(ws) == {"type": "subscribed", "channel": "doc:9", "id": 1}


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "idp|\ud800"},
        {"email": "\udcff@example.com"},
        {"sid": "\ud800"},
        {"exp": 10**400},
        {"scope": "chat:read", "extra": float("nan")},
    ],
    ids=["sub", "username", "sid", "exp beyond a double", "nan"],
)
async def test_a_providers_claims_are_held_to_the_wire_json_rules(
    idp_gw: tuple[Idp, Harness], claims: dict[str, Any]
) -> None:
    """The provider signs whatever JSON its library writes, and pyjwt's parser takes a lone
    surrogate, NaN or a number past a double: each would fail later, in a frame, a Redis key or a
    timer. The token is refused at the handshake, as JSON, and the gateway keeps serving."""
    idp, gw = idp_gw
    assert "not valid JSON" in await refused(gw, idp.token(**claims))
    ws = await gw.open()
    assert (await auth(ws, idp.token()))["type"] == "auth_success"


async def test_auth_services_tokens_may_say_application_at_jwt_too(gw: Harness) -> None:
    token = gw.tokens.make("alice", headers={"typ": "application/at+jwt"})
    await gw.login("alice", token=token)


async def test_auth_services_tokens_still_need_a_sid(idp_gw: tuple[Idp, Harness]) -> None:
    _, gw = idp_gw
    assert await refused(gw, gw.tokens.make("alice", sid=None))


async def test_an_unknown_issuer_is_refused_without_a_fetch(idp_gw: tuple[Idp, Harness]) -> None:
    idp, gw = idp_gw
    fetches = (idp.fetches, gw.keyset.fetches)
    message = await refused(gw, idp.token(iss="https://evil.example.com/"))
    assert message == "the token's issuer is not trusted"
    assert (idp.fetches, gw.keyset.fetches) == fetches


async def test_an_unknown_kid_is_fetched_from_its_own_issuer_only(
    idp_gw: tuple[Idp, Harness],
) -> None:
    """auth_service's kid presented by the provider (and the provider's by auth_service's token)
    refetches the named issuer's key set, never the other's, and is refused."""
    idp, gw = idp_gw
    idp_fetches, auth_fetches = idp.fetches, gw.keyset.fetches
    assert await refused(gw, idp.token(kid=KID, iat=long_ago())) == "unknown signing key"
    assert (idp.fetches, gw.keyset.fetches) == (idp_fetches + 1, auth_fetches)
    await refused(gw, gw.tokens.make("alice", headers={"kid": "idp-1"}, iat=long_ago()))
    assert (idp.fetches, gw.keyset.fetches) == (idp_fetches + 1, auth_fetches + 1)


async def test_auth_services_key_does_not_sign_for_the_provider(
    idp_gw: tuple[Idp, Harness], rsa_key: RSAPrivateKey
) -> None:
    idp, gw = idp_gw
    claims = idp.claims()
    forged = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": KID, "typ": "at+jwt"})
    assert await refused(gw, forged) == "the token must be signed with ES256"


async def test_hs256_keyed_with_the_public_key_and_none_are_refused(
    idp_gw: tuple[Idp, Harness],
) -> None:
    idp, gw = idp_gw
    public = (
        idp.keys["idp-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = b64(json.dumps(idp.claims()).encode())
    for alg in ("HS256", "none", "RS256"):
        head = b64(json.dumps({"alg": alg, "kid": "idp-1", "typ": "at+jwt"}).encode())
        signature = jwt.api_jws.get_algorithm_by_name("HS256").sign(
            f"{head}.{claims}".encode(), public
        )
        token = f"{head}.{claims}.{b64(signature) if alg != 'none' else ''}"
        assert await refused(gw, token) == "the token must be signed with ES256"


async def test_a_key_verifies_only_its_own_type_of_algorithm(
    aiohttp_server: Any, make_gateway: MakeGateway, rsa_key: RSAPrivateKey
) -> None:
    """An issuer pinned to ES256 and RS256: a token that says RS256 under the EC key's kid is
    refused before any signature is checked."""
    idp = Idp()
    app = web.Application()
    app.router.add_get("/jwks", idp.handle)
    server = await aiohttp_server(app)
    trusted = TrustedIssuer(IDP, str(server.make_url("/jwks")), AUDIENCE, ("ES256", "RS256"))
    gw = await make_gateway(trusted_issuers=(trusted,))
    await wait_until(lambda: gw.app[TRUSTED_KEYS][IDP].ready)
    forged = jwt.encode(
        idp.claims(), rsa_key, algorithm="RS256", headers={"kid": "idp-1", "typ": "at+jwt"}
    )
    assert await refused(gw, forged) == "the token's algorithm is not its signing key's"
    ws = await gw.open()
    assert (await auth(ws, idp.token()))["type"] == "auth_success"


async def test_the_providers_audience_is_its_own(idp_gw: tuple[Idp, Harness]) -> None:
    idp, gw = idp_gw
    await refused(gw, idp.token(aud="ws"))


async def test_a_key_leaving_the_providers_set_concerns_its_sockets_only(
    idp_gw: tuple[Idp, Harness],
) -> None:
    """Both issuers have a key named key-1: the provider dropping its key-1 makes its sockets
    renew, and leaves auth_service's key-1 sockets alone."""
    idp, gw = idp_gw
    idp.keys[KID] = ec.generate_private_key(ec.SECP256R1())
    await gw.app[TRUSTED_KEYS][IDP].refresh()
    theirs = await gw.open()
    assert (await auth(theirs, idp.token(kid=KID)))["type"] == "auth_success"
    ours = await gw.login("alice")
    del idp.keys[KID]
    await gw.app[TRUSTED_KEYS][IDP].refresh()
    assert (await recv(theirs))["type"] == "token_expiring"
    await expect_open(ours)


async def test_a_provider_outage_degrades_but_keeps_the_replica_ready(
    idp_gw: tuple[Idp, Harness],
) -> None:
    idp, gw = idp_gw
    idp.fail = True
    with pytest.raises(Exception):  # noqa: B017 (the cache's KeysUnavailable)
        await gw.app[TRUSTED_KEYS][IDP].refresh()
    state = readiness(gw.app)
    assert state.ready
    assert state.degraded[f"trusted_issuer {IDP}"].startswith("unreachable since")
    ws = await gw.open()
    assert (await auth(ws, idp.token()))["type"] == "auth_success", "cached keys still verify"
