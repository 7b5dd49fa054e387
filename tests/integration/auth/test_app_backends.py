"""App backends as confidential clients, through the real app on SQLite and PostgreSQL: client
authentication, the RFC 8693 token exchange (with a stock OAuth client, authlib, and assertions
signed by a stock JOSE library, joserfc), the tokens' authorization_details, and a client ending
its users' sessions."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from typing import Any

import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt as jose_jwt
from joserfc.jwk import OctKey

from auth_service.appkeys import KEYRING, SERVICE, STORE
from auth_service.domain.clients import TOKEN_EXCHANGE, IssuedSecret
from realtime_gateway_protocol.access_token import (
    MAX_AUTHORIZATION_DETAILS_BYTES,
    parse_authorization_details,
)
from realtime_gateway_protocol.events import RevocationEvent, SessionRevoked, UserRevoked
from tests.integration.auth.conftest import AuthClient, MakeClient, login, refresh, register
from tests.integration.auth.test_bad_input import assert_error

ISSUER = "http://auth.test"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
DETAILS = [
    {"type": "realtime_channels", "channels": ["doc:123", "team:7.*"], "actions": ["subscribe"]}
]
OVER_256 = [
    {
        "type": "realtime_channels",
        "channels": [f"doc:{i}-{j}" for j in range(8)],
        "actions": ["subscribe", "publish", "history", "presence"],
    }
    for i in range(16)
]


async def make_app(client: AuthClient, name: str = "acme", **options: Any) -> IssuedSecret:
    options.setdefault("grant_types", [TOKEN_EXCHANGE])
    return await client.server.app[SERVICE].clients.create(name, **options)


def assertion(secret: str, **overrides: Any) -> str:
    """What an app backend signs, with joserfc: HS256 under its client secret."""
    claims = {
        "iss": "acme",
        "aud": ISSUER,
        "sub": "42",
        "exp": int(time.time()) + 60,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    return jose_jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret))


def escaped_assertion(secret: str, **overrides: Any) -> str:
    """:func:`assertion` signed by pyjwt, whose JSON writes a lone surrogate as an escape (and
    NaN as ``NaN``), which joserfc refuses to: what a careless or hostile backend may sign."""
    claims = {"iss": "acme", "aud": ISSUER, "sub": "42", "exp": int(time.time()) + 60,
              "jti": uuid.uuid4().hex, **overrides}  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def exchange_form(subject_token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": JWT_TYPE,
        **extra,
    }


async def verified(client: AuthClient, access_token: str) -> dict[str, Any]:
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(access_token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        access_token, key, algorithms=["RS256"], audience="ws", issuer=ISSUER
    )
    return claims


async def test_a_stock_client_exchanges_refreshes_and_revokes(
    make_client: MakeClient, database_url: str, events: list[RevocationEvent]
) -> None:
    client = await make_client(database_url=database_url)
    acme = await make_app(client)
    session = OAuth2Session("acme", acme.secret, token_endpoint_auth_method="client_secret_basic")

    def fetch() -> dict[str, Any]:
        token: dict[str, Any] = session.fetch_token(
            str(client.make_url("/v1/token")),
            grant_type=TOKEN_EXCHANGE,
            subject_token=assertion(acme.secret, preferred_username="Bob"),
            subject_token_type=JWT_TYPE,
            scope="chat:read",
            authorization_details=json.dumps(DETAILS),
        )
        return token

    tokens = await asyncio.to_thread(fetch)
    assert tokens["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert tokens["authorization_details"] == DETAILS and tokens["scope"] == "chat:read"
    claims = await verified(client, tokens["access_token"])
    assert (claims["sub"], claims["client_id"], claims["preferred_username"]) == (
        "acme:42",
        "acme",
        "Bob",
    )
    assert parse_authorization_details(claims["authorization_details"])[0].allows(
        "subscribe", "team:7.general"
    )
    status, renewed = await refresh(client, tokens["refresh_token"])
    assert status == 200, "the browser refreshes without the client's credentials"
    assert renewed["authorization_details"] == DETAILS
    assert (await verified(client, renewed["access_token"]))["authorization_details"] == DETAILS

    def revoke() -> int:
        response = session.revoke_token(
            str(client.make_url("/v1/revoke")), renewed["refresh_token"]
        )
        return int(response.status_code)

    assert await asyncio.to_thread(revoke) == 200
    assert events == [SessionRevoked(claims["sid"], "acme:42", events[0].until)]
    status, body = await refresh(client, renewed["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_client_secret_post_and_the_answers_to_a_wrong_secret(
    make_client: MakeClient, database_url: str
) -> None:
    client = await make_client(database_url=database_url)
    acme = await make_app(client)
    form = exchange_form(assertion(acme.secret), client_id="acme", client_secret=acme.secret)
    resp = await client.post("/v1/token", data=form)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    wrong = [
        ({**form, "subject_token": assertion(acme.secret), "client_secret": "wrong"}, {}),
        (exchange_form(assertion(acme.secret)), basic("acme", "wrong")),
    ]
    for data, headers in wrong * 5:
        resp = await client.post("/v1/token", data=data, headers=headers)
        await assert_error(resp, 401, "invalid_client")
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="auth_service"'
    resp = await client.post("/v1/token", data={**form, "subject_token": assertion(acme.secret)})
    await assert_error(resp, 429, "too_many_attempts")
    assert int(resp.headers["Retry-After"]) > 0


async def test_wrong_client_secrets_count_against_the_address_like_logins(
    client: AuthClient,
) -> None:
    await register(client)
    address = {"X-Forwarded-For": "10.9.9.9"}
    for n in range(100):
        resp = await client.post(
            "/v1/revoke", data={"token": "x"}, headers={**address, **basic(f"ghost{n}", "guess")}
        )
        assert resp.status == 401
    resp = await client.post(
        "/v1/login", json={"username": "alice", "password": "wrong password!"}, headers=address
    )
    await assert_error(resp, 429, "too_many_attempts")
    await login(client, address="10.0.0.1")


async def test_a_replayed_assertion_and_a_client_without_the_grant(client: AuthClient) -> None:
    acme = await make_app(client)
    plain = await make_app(client, "plain", grant_types=[])
    token = assertion(acme.secret)
    first = await client.post(
        "/v1/token", data=exchange_form(token), headers=basic("acme", acme.secret)
    )
    assert first.status == 200
    again = await client.post(
        "/v1/token", data=exchange_form(token), headers=basic("acme", acme.secret)
    )
    await assert_error(again, 400, "invalid_request")
    resp = await client.post(
        "/v1/token",
        data=exchange_form(assertion(plain.secret, iss="plain")),
        headers=basic("plain", plain.secret),
    )
    await assert_error(resp, 400, "unauthorized_client")
    resp = await client.post("/v1/token", data=exchange_form(assertion(acme.secret)))
    await assert_error(resp, 401, "invalid_client")


async def test_a_refresh_may_repeat_the_sessions_authorization_details_but_not_change_them(
    client: AuthClient,
) -> None:
    """RFC 9396 section 6: the details of a token request are checked against the grant. They
    were ignored on a refresh, so a client asking for fewer rights got the session's whole grant
    (an outside probe). Asking for other details is refused, and the token is not spent."""
    acme = await make_app(client)
    resp = await client.post(
        "/v1/token",
        data=exchange_form(assertion(acme.secret), authorization_details=json.dumps(DETAILS)),
        headers=basic("acme", acme.secret),
    )
    assert resp.status == 200, await resp.text()
    refresh_token = (await resp.json())["refresh_token"]
    fewer = [{**DETAILS[0], "channels": ["doc:123"]}]
    for asked in (fewer, [], [*DETAILS, *fewer], "{not json"):
        text = asked if isinstance(asked, str) else json.dumps(asked)
        status, body = await refresh(client, refresh_token, authorization_details=text)
        assert (status, body["error"]) == (400, "invalid_authorization_details")
    same = json.dumps([dict(reversed(DETAILS[0].items()))], indent=1)  # other order, spacing
    resp = await client.post(
        "/v1/token",
        json={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "authorization_details": json.loads(same),
        },
    )
    assert resp.status == 200, await resp.text()
    renewed = await resp.json()
    assert renewed["authorization_details"] == DETAILS
    status, body = await refresh(client, renewed["refresh_token"], authorization_details=same)
    assert status == 200, body
    await register(client)
    plain = await login(client)
    status, body = await refresh(
        client, plain["refresh_token"], authorization_details=json.dumps(DETAILS)
    )
    assert (status, body["error"]) == (400, "invalid_authorization_details")


def rs256_assertion() -> str:
    key = rsa.generate_private_key(65537, 2048)
    claims = {"iss": "acme", "aud": ISSUER, "sub": "42", "exp": int(time.time()) + 60, "jti": "j"}
    return jwt.encode(claims, key, "RS256")


def none_assertion() -> str:
    claims = {"iss": "acme", "aud": ISSUER, "sub": "42", "exp": int(time.time()) + 60, "jti": "j"}
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}."


def deep_json(levels: int) -> str:
    return "[" * levels + "]" * levels


HOSTILE: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("huge assertion", lambda s: {"subject_token": "a" * 5000}, {}, 400, "invalid_request"),
    (
        "garbage assertion",
        lambda s: {"subject_token": "\x00\x01garbage"},
        {},
        400,
        "invalid_request",
    ),
    ("alg none", lambda s: {"subject_token": none_assertion()}, {}, 400, "invalid_request"),
    ("alg RS256", lambda s: {"subject_token": rs256_assertion()}, {}, 400, "invalid_request"),
    (
        "another client's secret",
        lambda s: {"subject_token": assertion("zeta's secret, long enough for HS256 use")},
        {},
        400,
        "invalid_request",
    ),
    ("expired", lambda s: {"subject_token": assertion(s, exp=1)}, {}, 400, "invalid_request"),
    (
        "wrongly addressed",
        lambda s: {"subject_token": assertion(s, aud="http://elsewhere")},
        {},
        400,
        "invalid_request",
    ),
    ("no subject_token", lambda s: {"subject_token": ""}, {}, 400, "invalid_request"),
    *(
        (
            f"{claim} {label} in the assertion",
            lambda s, claim=claim, value=value: {
                "subject_token": escaped_assertion(s, **{claim: value})
            },
            {},
            400,
            "invalid_request",
        )
        for claim in ("jti", "sub", "preferred_username", "aud")
        for label, value in (("a lone surrogate", "\ud800"), ("NaN", float("nan")))
    ),
    (
        "an infinite exp in the assertion",
        lambda s: {"subject_token": assertion(s, exp=float("inf"))},
        {},
        400,
        "invalid_request",
    ),
    (
        "another subject_token_type",
        lambda s: {"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
        {},
        400,
        "invalid_request",
    ),
    (
        "a refresh token asked for",
        lambda s: {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
        {},
        400,
        "invalid_request",
    ),
    ("delegation", lambda s: {"actor_token": "x"}, {}, 400, "invalid_request"),
    (
        "an actor_token_type alone",
        lambda s: {"actor_token_type": "urn:ietf:params:oauth:token-type:jwt"},
        {},
        400,
        "invalid_request",
    ),
    ("another audience", lambda s: {"audience": "elsewhere"}, {}, 400, "invalid_target"),
    ("a resource", lambda s: {"resource": "https://x"}, {}, 400, "invalid_target"),
    (
        "details not JSON",
        lambda s: {"authorization_details": "{not json"},
        {},
        400,
        "invalid_authorization_details",
    ),
    (
        "details deeply nested",
        lambda s: {"authorization_details": deep_json(5000)},
        {},
        400,
        "invalid_authorization_details",
    ),
    (
        # 512 pairs the gateway refuses in every token (it counts at most 256): the issuer
        # granted them, and the session could never open a socket (an outside probe).
        "details granting more than 256 channel actions",
        lambda s: {"authorization_details": json.dumps(OVER_256)},
        {},
        400,
        "invalid_authorization_details",
    ),
    (
        "details of another type",
        lambda s: {"authorization_details": json.dumps([{**DETAILS[0], "type": "payment"}])},
        {},
        400,
        "invalid_authorization_details",
    ),
    ("Basic not base64", lambda s: {}, {"Authorization": "Basic !!!"}, 401, "invalid_client"),
    (
        "Basic without a colon",
        lambda s: {},
        {"Authorization": "Basic " + base64.b64encode(b"acme").decode()},
        401,
        "invalid_client",
    ),
    (
        "Basic not UTF-8",
        lambda s: {},
        {"Authorization": "Basic " + base64.b64encode(b"acme:%ff%fe").decode()},
        401,
        "invalid_client",
    ),
    ("Bearer", lambda s: {}, {"Authorization": "Bearer x"}, 401, "invalid_client"),
    ("two methods", lambda s: {"client_secret": s}, "basic", 400, "invalid_request"),
    ("a client assertion", lambda s: {"client_assertion": "x.y.z"}, {}, 401, "invalid_client"),
]


@pytest.mark.parametrize(
    ("form", "headers", "status", "code"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
async def test_hostile_exchanges_get_a_json_error(
    client: AuthClient, form: Any, headers: Any, status: int, code: str
) -> None:
    acme = await make_app(client)
    sent_headers = basic("acme", acme.secret) if headers in ({}, "basic") else headers
    data = {**exchange_form(assertion(acme.secret)), **form(acme.secret)}
    await assert_error(
        await client.post("/v1/token", data=data, headers=sent_headers), status, code
    )


async def test_details_as_a_json_array_in_a_json_body(client: AuthClient) -> None:
    acme = await make_app(client, namespaces=["doc", "team"])
    body = {**exchange_form(assertion(acme.secret)), "authorization_details": DETAILS}
    resp = await client.post("/v1/token", json=body, headers=basic("acme", acme.secret))
    assert (await resp.json())["authorization_details"] == DETAILS
    outside = [{**DETAILS[0], "channels": ["chat:1"]}]
    body = {**exchange_form(assertion(acme.secret)), "authorization_details": outside}
    resp = await client.post("/v1/token", json=body, headers=basic("acme", acme.secret))
    await assert_error(resp, 400, "invalid_authorization_details")


async def test_the_largest_details_still_fit_every_use_of_the_token(client: AuthClient) -> None:
    """At the byte limit the access token still passes in an ``Authorization`` header (aiohttp
    allows 8190 bytes a line), so it can mint a ticket and log out; and in a revocation's body
    (RFC 7009), by its user or its client, where every field was cut at 4,096 characters and
    such a token, about 6,500, was 400 "'token' is too long": its session lived on."""
    acme = await make_app(client)
    channels = [f"d:{n:0118d}" for n in range(64)]
    details = [{"type": "realtime_channels", "channels": channels[:1], "actions": ["subscribe"]}]
    while len(json.dumps(details, separators=(",", ":"))) + 123 <= MAX_AUTHORIZATION_DETAILS_BYTES:
        details[0]["channels"] = channels[: len(details[0]["channels"]) + 1]

    async def largest() -> dict[str, str]:
        form = exchange_form(assertion(acme.secret), authorization_details=json.dumps(details))
        resp = await client.post("/v1/token", data=form, headers=basic("acme", acme.secret))
        tokens: dict[str, str] = await resp.json()
        assert resp.status == 200, tokens
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    bearer = await largest()
    assert (await client.post("/v1/ws-ticket", headers=bearer)).status == 200
    assert (await client.post("/v1/logout", headers=bearer)).status == 200
    for credentials in ({}, basic("acme", acme.secret)):
        bearer = await largest()
        token = bearer["Authorization"].removeprefix("Bearer ")
        assert len(token) > 6000
        resp = await client.post("/v1/revoke", data={"token": token}, headers=credentials)
        assert resp.status == 200, await resp.text()
        await assert_error(await client.post("/v1/ws-ticket", headers=bearer), 401, "invalid_token")


async def test_a_client_ends_its_users_sessions(
    make_client: MakeClient, database_url: str, events: list[RevocationEvent]
) -> None:
    client = await make_client(database_url=database_url)
    acme, zeta = await make_app(client), await make_app(client, "zeta")
    sids = []
    for _ in range(2):
        form = exchange_form(assertion(acme.secret))
        resp = await client.post("/v1/token", data=form, headers=basic("acme", acme.secret))
        sids.append((await verified(client, (await resp.json())["access_token"]))["sid"])
    creds = basic("acme", acme.secret)
    resp = await client.post("/v1/sessions/revoke", json={"sub": "acme:42"}, headers=creds)
    assert resp.status == 200 and await resp.json() == {"revoked_sessions": 2}
    assert {type(e) for e in events} == {SessionRevoked, UserRevoked}
    assert sorted(e.sid for e in events if isinstance(e, SessionRevoked)) == sorted(sids)
    resp = await client.post("/v1/sessions/revoke", data={"sub": "acme:7"}, headers=creds)
    assert await resp.json() == {"revoked_sessions": 0}
    other = basic("zeta", zeta.secret)
    resp = await client.post("/v1/sessions/revoke", json={"sub": "acme:42"}, headers=other)
    await assert_error(resp, 403, "access_denied")
    resp = await client.post("/v1/sessions/revoke", json={"sub": "acme:42"})
    await assert_error(resp, 401, "invalid_client")
    await assert_error(
        await client.post("/v1/sessions/revoke", json={}, headers=creds), 400, "invalid_request"
    )
    for impossible in ("acme:a\u0000b", "acme:", "acme:" + "x" * 81, "acme:a b"):
        # No such user can exist: 0 would tell the app its call had done its work.
        resp = await client.post("/v1/sessions/revoke", json={"sub": impossible}, headers=creds)
        body = await assert_error(resp, 400, "invalid_request")
        why = "U+0000" if "\u0000" in impossible else "1-80 characters"  # NUL: refused on reading
        assert why in body["error_description"], impossible


async def test_metadata_lists_what_is_supported(
    client: AuthClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    body = await (await client.get("/.well-known/oauth-authorization-server")).json()
    AuthorizationServerMetadata(body).validate()
    assert body["grant_types_supported"] == ["refresh_token", TOKEN_EXCHANGE]
    methods = ["client_secret_basic", "client_secret_post", "none"]
    assert body["token_endpoint_auth_methods_supported"] == methods
    assert body["revocation_endpoint_auth_methods_supported"] == methods
    assert body["authorization_details_types_supported"] == ["realtime_channels"]


@pytest.mark.parametrize("step", ["ensure_user", "create_session"])
async def test_an_exchange_meeting_its_clients_deletion_is_invalid_client(
    make_client: MakeClient,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    step: str,
) -> None:
    """``clients delete`` committing while an exchange of the client is under way (after it
    authenticated, before its user's or session's row is written) left rows naming a client or
    user that is gone, which the database refuses: a 503 "try again" and an error line
    "database unavailable" (an outside probe saw them in a live run on both stores). The client
    no longer exists: 401 ``invalid_client``, as the next request gets."""
    client = await make_client(database_url=database_url)
    acme = await make_app(client)
    store = client.server.app[STORE]
    original = getattr(store, step)

    async def deleted_meanwhile(*args: Any) -> Any:
        await client.server.app[SERVICE].delete_client("acme")
        return await original(*args)

    if step == "create_session":  # the user exists: the exchange's own ensure_user adds nothing
        form = exchange_form(assertion(acme.secret))
        resp = await client.post("/v1/token", data=form, headers=basic("acme", acme.secret))
        assert resp.status == 200, await resp.text()
    monkeypatch.setattr(store, step, deleted_meanwhile)
    form = exchange_form(assertion(acme.secret))
    with caplog.at_level(logging.ERROR):
        resp = await client.post("/v1/token", data=form, headers=basic("acme", acme.secret))
    await assert_error(resp, 401, "invalid_client")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_503_for_want_of_a_signing_key_leaves_the_assertion_unspent(
    make_client: MakeClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that cannot sign (its key-encryption secrets open no current key; /readyz says
    so) spent the assertion's jti, then answered 503 "try again": the retry on a healthy replica
    was refused as a replay, and a provider's token cannot be made again by the backend (an
    outside probe, on two live replicas)."""
    client = await make_client(database_url=database_url)
    acme = await make_app(client)
    ring = client.server.app[KEYRING]
    monkeypatch.setattr(ring, "signing_key", lambda now: None)
    form = exchange_form(assertion(acme.secret))
    resp = await client.post("/v1/token", data=form, headers=basic("acme", acme.secret))
    await assert_error(resp, 503, "temporarily_unavailable")
    monkeypatch.undo()
    resp = await client.post("/v1/token", data=form, headers=basic("acme", acme.secret))
    assert resp.status == 200, await resp.text()
