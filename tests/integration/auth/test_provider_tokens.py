"""A client that trusts an identity provider (``--trust-issuer ISSUER --jwks-uri URL``) exchanges
that provider's ID and access tokens for its users' tokens, through the real app on SQLite and
PostgreSQL. The providers are real JWKS endpoints on loopback (an ES256 and an RS256 key each);
the attacks are the ones a second issuer opens: algorithm confusion, another issuer's tokens and
keys, another audience, a replayed jti, a provider that is down, and garbage, never a 500."""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from auth_service.appkeys import PROVIDER_KEYS, SERVICE
from auth_service.domain.clients import TOKEN_EXCHANGE, IssuedSecret
from auth_service.domain.federation import ALGORITHMS, SENDER_CONSTRAINED, trusted_issuer
from auth_service.domain.models import TrustedIssuer
from auth_service.provider_keys import ProviderKeys
from shared.http import jwks
from tests.integration.auth.conftest import AuthClient, MakeClient
from tests.integration.auth.test_app_backends import assertion, basic, exchange_form, verified
from tests.integration.auth.test_bad_input import assert_error
from tests.integration.ws.harness import b64
from tests.support.poll import poll

ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"
IDP = "https://idp.example.com/"
OTHER_IDP = "https://other-idp.example.com/"


@functools.cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@dataclass
class Provider:
    """An identity provider: its issuer, its keys (an ES256 and an RS256 one), its JWKS endpoint
    on loopback (which counts fetches and can be made to fail), and the tokens it signs."""

    issuer: str
    prefix: str
    keys: dict[str, Any] = field(default_factory=dict)
    fetches: int = 0
    fail: bool = False
    url: str = ""

    def __post_init__(self) -> None:
        self.keys = {
            f"{self.prefix}-es": ec.generate_private_key(ec.SECP256R1()),
            f"{self.prefix}-rs": rsa_key(len(self.prefix)),
        }

    async def serve(self, aiohttp_server: Any) -> Provider:
        app = web.Application()
        app.router.add_get("/jwks", self.handle)
        server: TestServer = await aiohttp_server(app)
        self.url = str(server.make_url("/jwks"))
        return self

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.fail:
            return web.json_response({"error": "down"}, status=503)
        jwks = []
        for kid, key in self.keys.items():
            public = key.public_key()
            algorithm = (
                ECAlgorithm if isinstance(public, ec.EllipticCurvePublicKey) else RSAAlgorithm
            )
            jwks.append({**json.loads(algorithm.to_jwk(public)), "kid": kid, "use": "sig"})
        return web.json_response({"keys": jwks}, headers={"Cache-Control": "max-age=300"})

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": "acme",
            "iat": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
            "preferred_username": "Alice",
            **overrides,
        }
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kind: str = "es", kid: str | None = None, **overrides: Any) -> str:
        name = f"{self.prefix}-{kind}"
        return jwt.encode(
            self.claims(**overrides),
            self.keys[name],
            algorithm="ES256" if kind == "es" else "RS256",
            headers={"kid": kid or name},
        )

    def trusted(self, audience: str = "acme", *algorithms: str) -> TrustedIssuer:
        return trusted_issuer(self.issuer, self.url, audience, algorithms or ("ES256", "RS256"))


@pytest.fixture
async def idp(aiohttp_server: Any) -> Provider:
    return await Provider(IDP, "idp").serve(aiohttp_server)


@pytest.fixture
async def other_idp(aiohttp_server: Any) -> Provider:
    return await Provider(OTHER_IDP, "other").serve(aiohttp_server)


async def trusting(
    client: AuthClient, provider: Provider, name: str = "acme", **options: Any
) -> IssuedSecret:
    trusted = options.pop("trusted", None) or provider.trusted(name)
    return await client.server.app[SERVICE].clients.create(
        name, grant_types=[TOKEN_EXCHANGE], trusted=trusted, **options
    )


async def exchange(
    client: AuthClient, app: IssuedSecret, token: str, token_type: str = ID_TOKEN, **extra: str
) -> Any:
    form = {**exchange_form(token, **extra), "subject_token_type": token_type}
    return await client.post(
        "/v1/token", data=form, headers=basic(app.client.client_id, app.secret)
    )


async def test_an_es256_id_token_and_an_rs256_access_token_become_sessions(
    make_client: MakeClient, database_url: str, idp: Provider
) -> None:
    client = await make_client(database_url=database_url)
    acme = await trusting(client, idp)
    resp = await exchange(client, acme, idp.token("es"), scope="chat:read")
    tokens = await resp.json()
    assert resp.status == 200, tokens
    claims = await verified(client, tokens["access_token"])
    assert (claims["sub"], claims["client_id"], claims["preferred_username"]) == (
        "acme:alice",
        "acme",
        "Alice",
    )
    assert tokens["scope"] == "chat:read"
    api = await trusting(client, idp, "api", trusted=idp.trusted("realtime-api", "RS256"))
    resp = await exchange(client, api, idp.token("rs", aud="realtime-api"), ACCESS_TOKEN)
    assert resp.status == 200, await resp.text()
    assert (await verified(client, (await resp.json())["access_token"]))["sub"] == "api:alice"
    resp = await exchange(client, api, idp.token("rs", aud="realtime-api"), JWT)
    assert resp.status == 200, "a provider's token under ...:jwt, told apart by its iss"
    refreshed = await client.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status == 200, "the session refreshes like any exchanged one"
    assert idp.fetches == 1, "one key set per provider, whichever client trusts it"


async def test_a_provider_token_with_many_groups_is_exchanged(
    client: AuthClient, idp: Provider
) -> None:
    """An ID or access token carrying a user's groups or roles is often past 4,096 characters,
    where every field of the body was cut ("'subject_token' is too long", 400)."""
    acme = await trusting(client, idp)
    groups = [f"group-{n:04d}-{uuid.UUID(int=n).hex}" for n in range(120)]
    token = idp.token("rs", groups=groups)
    assert 4096 < len(token) < 16384
    resp = await exchange(client, acme, token)
    assert resp.status == 200, await resp.text()
    too_long = idp.token("rs", groups=groups * 3)
    assert len(too_long) > 16384
    resp = await exchange(client, acme, too_long)
    body = await assert_error(resp, 400, "invalid_request")
    assert "too long" in body["error_description"]


async def test_a_provider_user_and_an_assertion_user_of_one_id_are_one_user(
    client: AuthClient, idp: Provider
) -> None:
    """One namespace: the client's own assertion for ``alice`` and the provider's token for the
    same ``sub`` are sessions of ``acme:alice``, which one ``/v1/sessions/revoke`` ends."""
    acme = await trusting(client, idp)
    first = await exchange(client, acme, idp.token())
    second = await exchange(client, acme, assertion(acme.secret, sub="alice"), JWT)
    subs = {
        (await verified(client, (await r.json())["access_token"]))["sub"] for r in (first, second)
    }
    assert subs == {"acme:alice"}
    resp = await client.post(
        "/v1/sessions/revoke", data={"sub": "acme:alice"}, headers=basic("acme", acme.secret)
    )
    assert await resp.json() == {"revoked_sessions": 2}


def forged(provider: Provider, alg: str, kid: str, key: bytes) -> str:
    head = b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    body = b64(json.dumps(provider.claims()).encode())
    if alg == "none":
        return f"{head}.{body}."
    signature = jwt.api_jws.get_algorithm_by_name("HS256").sign(f"{head}.{body}".encode(), key)
    return f"{head}.{body}.{b64(signature)}"


async def test_algorithm_confusion_is_refused(client: AuthClient, idp: Provider) -> None:
    acme = await trusting(client, idp)
    public = (
        idp.keys["idp-rs"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for alg in ("HS256", "none"):
        resp = await exchange(client, acme, forged(idp, alg, "idp-rs", public))
        body = await assert_error(resp, 400, "invalid_request")
        assert body["error_description"] == "the subject token must be signed ES256 or RS256"
    rs_under_ec_kid = idp.token("rs", kid="idp-es")
    body = await assert_error(await exchange(client, acme, rs_under_ec_kid), 400, "invalid_request")
    assert (
        body["error_description"] == "the subject token's algorithm is not one its key may verify"
    )
    es_only = await trusting(client, idp, "esonly", trusted=idp.trusted("esonly", "ES256"))
    resp = await exchange(client, es_only, idp.token("rs", aud="esonly"))
    body = await assert_error(resp, 400, "invalid_request")
    assert body["error_description"] == "the subject token must be signed ES256"
    ours = jwt.encode(idp.claims(), rsa_key(9), algorithm="RS256", headers={"kid": "idp-rs"})
    body = await assert_error(await exchange(client, acme, ours), 400, "invalid_request")
    assert body["error_description"] == "the subject token's signature does not verify"


async def test_another_issuer_is_refused_before_any_fetch(
    client: AuthClient, idp: Provider, other_idp: Provider
) -> None:
    acme = await trusting(client, idp)
    for token in (other_idp.token(aud="acme"), idp.token(iss="https://idp.example.com")):
        body = await assert_error(await exchange(client, acme, token), 400, "invalid_request")
        assert body["error_description"] == f"the subject token's iss must be {IDP}"
    assert (idp.fetches, other_idp.fetches) == (0, 0)


async def test_an_unknown_kid_is_fetched_from_its_clients_provider_only(
    client: AuthClient, idp: Provider, other_idp: Provider
) -> None:
    """Each client trusts its own provider; a token of one naming the other's kid makes its own
    provider's key set be fetched (once: refetches are rate-limited), never the other's."""
    acme = await trusting(client, idp)
    zeta = await trusting(client, other_idp, "zeta")
    for app, token in (
        (acme, idp.token(kid="other-es")),
        (zeta, other_idp.token(kid="idp-es", aud="zeta")),
    ):
        for _ in range(3):
            resp = await exchange(client, app, token)
            body = await assert_error(resp, 400, "invalid_request")
            assert body["error_description"] == (
                "the subject token's kid is not in its issuer's key set"
            )
    assert (idp.fetches, other_idp.fetches) == (1, 1)
    assert (await exchange(client, acme, idp.token())).status == 200, "its own kid verifies"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aud": "someone-else"}, "the subject token's aud must be acme"),
        ({"aud": None}, "the subject token has no aud claim"),
        ({"exp": None}, "the subject token has no exp claim"),
        ({"exp": int(time.time()) - 3600}, "the subject token has expired"),
        ({"iat": int(time.time()) + 3600}, "the subject token's iat is not a time in the past"),
        (
            {"sub": "auth0|alice"},
            "the subject token's sub must be 1-80 characters of A-Z a-z 0-9 _ . : @ -",
        ),
        ({"jti": 7}, "the subject token is not a valid JWT of its issuer"),
        ({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}, SENDER_CONSTRAINED),
        ({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}, SENDER_CONSTRAINED),
    ],
    ids=[
        "audience",
        "no aud",
        "no exp",
        "expired",
        "iat ahead",
        "sub alphabet",
        "jti a number",
        "DPoP-bound",
        "certificate-bound",
    ],
)
async def test_claims_that_do_not_hold_are_refused(
    client: AuthClient, idp: Provider, overrides: dict[str, Any], message: str
) -> None:
    acme = await trusting(client, idp)
    body = await assert_error(
        await exchange(client, acme, idp.token(**overrides)), 400, "invalid_request"
    )
    assert body["error_description"] == message


async def test_a_jti_works_once_and_a_token_without_one_until_it_expires(
    client: AuthClient, idp: Provider
) -> None:
    acme = await trusting(client, idp)
    token = idp.token()
    assert (await exchange(client, acme, token)).status == 200
    body = await assert_error(await exchange(client, acme, token), 400, "invalid_request")
    assert body["error_description"] == "the subject token was used before (its jti works once)"
    same_jti_as_an_assertion = assertion(acme.secret, jti="shared")
    assert (await exchange(client, acme, idp.token(jti="shared"))).status == 200
    assert (await exchange(client, acme, same_jti_as_an_assertion, JWT)).status == 200, (
        "the app's jtis and the provider's are apart"
    )
    no_jti = idp.token(jti=None)
    for _ in range(2):
        assert (await exchange(client, acme, no_jti)).status == 200


async def test_a_provider_that_is_down_is_a_503_never_a_500(
    client: AuthClient, idp: Provider
) -> None:
    acme = await trusting(client, idp)
    idp.fail = True
    resp = await exchange(client, acme, idp.token())
    await assert_error(resp, 503, "temporarily_unavailable")
    assert int(resp.headers["Retry-After"]) > 0
    idp.fail = False
    assert client.server.app[PROVIDER_KEYS].providers == [(IDP, idp.url)]

    async def back() -> bool:
        """The cache's refresh task retries a failed fetch within a second."""
        return (await exchange(client, acme, idp.token())).status == 200

    await poll(back, within=5, interval=0.2)


GARBAGE = [
    "",
    "x",
    "a.b.c",
    "\x00\x01.\x02.\x03",
    b64(b'{"alg":"ES256","kid":7}') + ".e30.",
    b64(b'{"alg":["ES256"],"kid":"idp-es"}') + ".e30.",
    b64(b'{"alg":"ES256","kid":"idp-es"}') + "." + b64(b"[1]") + ".",
    b64(b'{"alg":"ES256","kid":"idp-es"}') + "." + b64(b'{"iss":"' + IDP.encode() + b'"}') + ".!!",
    b64(b'{"alg":"ES256","kid":"idp-es","crit":["x"]}') + ".e30.",
]


@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("token_type", [ID_TOKEN, ACCESS_TOKEN, JWT])
async def test_garbage_gets_a_json_400(
    client: AuthClient, idp: Provider, token: str, token_type: str
) -> None:
    acme = await trusting(client, idp)
    resp = await exchange(client, acme, token, token_type)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] in ("invalid_grant", "invalid_request")


async def test_a_client_without_a_provider_and_a_changed_registration(
    client: AuthClient, idp: Provider
) -> None:
    clients = client.server.app[SERVICE].clients
    plain = await clients.create("plain", grant_types=[TOKEN_EXCHANGE])
    resp = await exchange(client, plain, idp.token(aud="plain"))
    body = await assert_error(resp, 400, "invalid_request")
    assert "trusts none" in body["error_description"]
    await clients.trust("plain", idp.trusted("plain"))
    assert (await exchange(client, plain, idp.token(aud="plain"))).status == 200
    await clients.trust("plain", None)
    await assert_error(
        await exchange(client, plain, idp.token(aud="plain")), 400, "invalid_request"
    )


async def test_the_provider_caches_are_made_on_first_use_and_bounded(
    aiohttp_server: Any,
) -> None:
    providers = [
        await Provider(f"https://idp{n}.example.com/", f"p{n}").serve(aiohttp_server)
        for n in range(3)
    ]
    async with aiohttp.ClientSession() as session:
        keys = ProviderKeys(session, max_providers=2)
        assert keys.providers == []
        for provider in (*providers, providers[0]):
            await keys.get_key(provider.trusted(), f"{provider.prefix}-es")
        assert keys.providers == [(p.issuer, p.url) for p in (providers[2], providers[0])]
        assert [p.fetches for p in providers] == [2, 1, 1], "the first was dropped, then remade"
        await keys.close()
        assert keys.providers == []


def test_the_domain_pins_the_algorithms_the_key_cache_serves() -> None:
    assert ALGORITHMS == jwks.ALGORITHMS
