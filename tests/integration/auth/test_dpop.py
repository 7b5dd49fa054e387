"""DPoP at auth_service (RFC 9449) through the real app: bound tokens and sessions, the policy
(AUTH_DPOP and per client), server nonces, the challenges, and the security cases: every stolen
credential replayed without its key is refused, nothing is revoked that should not be, and no
answer is a 500. The issuer is http://auth.test, as a proxy in front would make it: every proof
names that URL, not the test server's."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from auth_service.domain.dpop import DpopPolicy
from realtime_gateway_protocol.events import RevocationEvent
from shared.dpop import ALGORITHMS
from tests.integration.auth.conftest import PASSWORD, AuthClient, MakeClient, login, register
from tests.integration.auth.test_app_backends import (
    assertion,
    basic,
    exchange_form,
    make_app,
    verified,
)
from tests.integration.auth.test_bad_input import assert_error
from tests.support.dpop import (
    PrivateKey,
    es256_key,
    jkt,
    make_proof,
    private_jwk,
    public_jwk,
    rs256_key,
)
from tests.support.logs import json_lines

ISSUER = "http://auth.test"
CREDENTIALS = {"username": "alice", "password": PASSWORD}


def dpop(key: PrivateKey, method: str, path: str, **options: Any) -> dict[str, str]:
    return {"DPoP": make_proof(key, method, ISSUER + path, **options)}


async def dpop_login(client: AuthClient, key: PrivateKey, **body: Any) -> dict[str, Any]:
    resp = await client.post(
        "/v1/login", json={**CREDENTIALS, **body}, headers=dpop(key, "POST", "/v1/login")
    )
    assert resp.status == 200, await resp.text()
    tokens: dict[str, Any] = await resp.json()
    return tokens


async def refresh_with(
    client: AuthClient, refresh_token: str, key: PrivateKey | None
) -> tuple[int, dict[str, Any]]:
    headers = dpop(key, "POST", "/v1/token") if key is not None else {}
    resp = await client.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers=headers,
    )
    return resp.status, await resp.json()


async def test_a_proven_login_binds_the_access_token_and_the_session(client: AuthClient) -> None:
    await register(client)
    key = es256_key()
    tokens = await dpop_login(client, key)
    assert tokens["token_type"] == "DPoP"
    claims = await verified(client, tokens["access_token"])
    assert claims["cnf"] == {"jkt": jkt(key)}
    status, renewed = await refresh_with(client, tokens["refresh_token"], key)
    assert (status, renewed["token_type"]) == (200, "DPoP")
    assert (await verified(client, renewed["access_token"]))["cnf"] == {"jkt": jkt(key)}


async def test_without_a_proof_tokens_stay_bearer_by_default(client: AuthClient) -> None:
    await register(client)
    tokens = await login(client)
    assert tokens["token_type"] == "Bearer"
    assert "cnf" not in await verified(client, tokens["access_token"])


async def test_rsa_keys_bind_too(client: AuthClient) -> None:
    await register(client)
    key = rs256_key()
    tokens = await dpop_login(client, key)
    assert (await verified(client, tokens["access_token"]))["cnf"] == {"jkt": jkt(key)}


async def test_the_metadata_lists_the_proof_algorithms(make_client: MakeClient) -> None:
    for policy, listed in ((DpopPolicy.OPTIONAL, list(ALGORITHMS)), (DpopPolicy.OFF, None)):
        client = await make_client(dpop=policy)
        meta = await (await client.get("/.well-known/oauth-authorization-server")).json()
        assert meta.get("dpop_signing_alg_values_supported") == listed
        assert "none" not in (listed or []) and not any(a.startswith("HS") for a in listed or [])


async def test_the_metadata_lists_the_algorithms_while_a_client_requires_dpop(
    make_client: MakeClient,
) -> None:
    """With AUTH_DPOP=off a client whose own policy requires DPoP still gets bound tokens: the
    metadata hid the algorithms its backend needs to find (RFC 9449 section 5.1)."""
    client = await make_client(dpop=DpopPolicy.OFF)
    url = "/.well-known/oauth-authorization-server"
    await make_app(client, "lax", dpop=DpopPolicy.OFF)
    assert "dpop_signing_alg_values_supported" not in await (await client.get(url)).json()
    await make_app(client, "strict", dpop=DpopPolicy.REQUIRED)
    meta = await (await client.get(url)).json()
    assert meta["dpop_signing_alg_values_supported"] == list(ALGORITHMS)


async def test_a_bound_refresh_token_from_another_machine_is_refused_and_revokes_nothing(
    client: AuthClient, events: list[RevocationEvent]
) -> None:
    await register(client)
    key = es256_key()
    tokens = await dpop_login(client, key)
    with json_lines() as logs:
        for thief in (None, es256_key()):
            status, body = await refresh_with(client, tokens["refresh_token"], thief)
            assert (status, body["error"]) == (400, "invalid_grant"), body
    refused = logs.logged("audit", "refresh_token_key_refused")
    assert [line["reason"] for line in refused] == ["no DPoP proof", "a proof of another key"]
    metrics = await (await client.get("/metrics")).text()
    assert 'auth_refreshes_total{outcome="dpop_key_refused"} 2.0' in metrics
    assert events == []
    status, body = await refresh_with(client, tokens["refresh_token"], key)
    assert status == 200, body


async def test_a_rotated_bound_token_replayed_without_its_key_revokes_nothing(
    client: AuthClient, events: list[RevocationEvent]
) -> None:
    """Reuse detection would end the family: without the key, the replay is refused first."""
    await register(client)
    key = es256_key()
    tokens = await dpop_login(client, key)
    status, current = await refresh_with(client, tokens["refresh_token"], key)
    assert status == 200
    status, body = await refresh_with(client, tokens["refresh_token"], es256_key())
    assert (status, body["error"]) == (400, "invalid_grant")
    assert events == []
    assert (await refresh_with(client, current["refresh_token"], key))[0] == 200


async def test_a_cookie_session_is_bound_too(client: AuthClient) -> None:
    await register(client)
    key = es256_key()
    origin = {"Origin": ISSUER}
    resp = await client.post(
        "/v1/login",
        json={**CREDENTIALS, "session": "cookie"},
        headers={**origin, **dpop(key, "POST", "/v1/login")},
    )
    body = await resp.json()
    assert body["token_type"] == "DPoP" and "refresh_token" not in body
    csrf = {**origin, "X-CSRF-Token": body["csrf_token"]}
    form = {"grant_type": "refresh_token"}
    stolen = await client.post("/v1/token", data=form, headers=csrf)
    await assert_error(stolen, 400, "invalid_grant")
    other = await client.post(
        "/v1/token", data=form, headers={**csrf, **dpop(es256_key(), "POST", "/v1/token")}
    )
    await assert_error(other, 400, "invalid_grant")
    ticket = await client.post("/v1/ws-ticket", headers=csrf)
    await assert_error(ticket, 400, "invalid_grant")
    ok = await client.post(
        "/v1/token", data=form, headers={**csrf, **dpop(key, "POST", "/v1/token")}
    )
    assert ok.status == 200 and (await ok.json())["token_type"] == "DPoP"
    ticket = await client.post(
        "/v1/ws-ticket", headers={**csrf, **dpop(key, "POST", "/v1/ws-ticket")}
    )
    assert ticket.status == 200
    payload = jwt.decode((await ticket.json())["ticket"], options={"verify_signature": False})
    assert payload["cnf"] == {"jkt": jkt(key)}


def dpop_auth(token: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}"}


async def test_a_token_refused_under_the_dpop_scheme_gets_the_dpop_challenge(
    client: AuthClient,
) -> None:
    """RFC 9449 section 7.1: whatever is wrong with a token sent as ``Authorization: DPoP`` (not
    ours, tampered, its session logged out), the 401 challenges ``DPoP`` with its algorithms; it
    read ``Bearer`` for these."""
    await register(client)
    key = es256_key()
    token = (await dpop_login(client, key))["access_token"]
    expected = f'DPoP error="invalid_token", algs="{" ".join(ALGORITHMS)}"'
    for path in ("/v1/ws-ticket", "/v1/logout"):
        for presented in ("not-a-jwt", token[:-4] + "AAAA"):
            proof = dpop(key, "POST", path, access_token=presented)
            resp = await client.post(path, headers={**dpop_auth(presented), **proof})
            await assert_error(resp, 401, "invalid_token")
            assert resp.headers["WWW-Authenticate"] == expected, (path, presented[:10])
    logout = dpop(key, "POST", "/v1/logout", access_token=token)
    assert (await client.post("/v1/logout", headers={**dpop_auth(token), **logout})).status == 200
    for path in ("/v1/ws-ticket", "/v1/logout"):
        proof = dpop(key, "POST", path, access_token=token)
        resp = await client.post(path, headers={**dpop_auth(token), **proof})
        await assert_error(resp, 401, "invalid_token")
        assert resp.headers["WWW-Authenticate"] == expected, path


async def test_a_bound_access_token_without_its_key_gets_no_ticket(client: AuthClient) -> None:
    await register(client)
    key = es256_key()
    token = (await dpop_login(client, key))["access_token"]
    as_bearer = await client.post("/v1/ws-ticket", headers={"Authorization": f"Bearer {token}"})
    await assert_error(as_bearer, 401, "invalid_token")
    assert as_bearer.headers["WWW-Authenticate"] == (
        f'DPoP error="invalid_token", algs="{" ".join(ALGORITHMS)}"'
    )
    attempts = {
        "no proof": {},
        "another key": dpop(es256_key(), "POST", "/v1/ws-ticket", access_token=token),
        "no ath": dpop(key, "POST", "/v1/ws-ticket"),
        "ath of another token": dpop(key, "POST", "/v1/ws-ticket", access_token=token + "x"),
        "wrong htm": dpop(key, "GET", "/v1/ws-ticket", access_token=token),
        "wrong htu": dpop(key, "POST", "/v1/logout", access_token=token),
    }
    for why, proof in attempts.items():
        resp = await client.post("/v1/ws-ticket", headers={**dpop_auth(token), **proof})
        await assert_error(resp, 401, "invalid_dpop_proof")
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith('DPoP error="invalid_dpop_proof", algs="ES256'), why
    good = dpop(key, "POST", "/v1/ws-ticket", access_token=token)
    resp = await client.post("/v1/ws-ticket", headers={**dpop_auth(token), **good})
    assert resp.status == 200, await resp.text()
    payload = jwt.decode((await resp.json())["ticket"], options={"verify_signature": False})
    assert payload["cnf"] == {"jkt": jkt(key)}
    replayed = await client.post("/v1/ws-ticket", headers={**dpop_auth(token), **good})
    await assert_error(replayed, 401, "invalid_dpop_proof")


async def test_an_unbound_token_is_not_presented_as_dpop(client: AuthClient) -> None:
    await register(client)
    token = (await login(client))["access_token"]
    key = es256_key()
    proof = dpop(key, "POST", "/v1/ws-ticket", access_token=token)
    resp = await client.post("/v1/ws-ticket", headers={**dpop_auth(token), **proof})
    await assert_error(resp, 401, "invalid_token")
    resp = await client.post("/v1/ws-ticket", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200


async def test_a_bound_access_token_without_its_key_logs_nothing_out(
    client: AuthClient, events: list[RevocationEvent]
) -> None:
    await register(client)
    key = es256_key()
    tokens = await dpop_login(client, key)
    token = tokens["access_token"]
    for headers in (
        {"Authorization": f"Bearer {token}"},
        dpop_auth(token),
        {**dpop_auth(token), **dpop(es256_key(), "POST", "/v1/logout", access_token=token)},
    ):
        resp = await client.post("/v1/logout", headers=headers)
        assert resp.status == 401, await resp.text()
    resp = await client.post(
        "/v1/logout",
        json={"refresh_token": tokens["refresh_token"]},
        headers=dpop(es256_key(), "POST", "/v1/logout"),
    )
    await assert_error(resp, 400, "invalid_grant")
    assert events == []
    resp = await client.post(
        "/v1/logout",
        headers={**dpop_auth(token), **dpop(key, "POST", "/v1/logout", access_token=token)},
    )
    assert resp.status == 200, await resp.text()
    assert len(events) == 1


async def test_revoking_a_bound_token_needs_its_key(
    client: AuthClient, events: list[RevocationEvent]
) -> None:
    await register(client)
    key = es256_key()
    tokens = await dpop_login(client, key)
    for token in (tokens["refresh_token"], tokens["access_token"]):
        for thief in ({}, dpop(es256_key(), "POST", "/v1/revoke")):
            resp = await client.post("/v1/revoke", data={"token": token}, headers=thief)
            assert (resp.status, await resp.json()) == (200, {})
    assert events == []
    resp = await client.post(
        "/v1/revoke",
        data={"token": tokens["refresh_token"]},
        headers=dpop(key, "POST", "/v1/revoke"),
    )
    assert resp.status == 200 and len(events) == 1


@pytest.mark.parametrize(
    "breakage",
    [
        "replayed",
        "wrong htu",
        "wrong htm",
        "too old",
        "from the future",
        "alg none",
        "HS256",
        "private jwk",
        "two headers",
        "garbage",
        "kty a list",
        "typ an object",
    ],
)
async def test_broken_proofs_are_invalid_dpop_proof_never_a_500(
    client: AuthClient, breakage: str
) -> None:
    await register(client)
    key = es256_key()
    url = ISSUER + "/v1/login"
    proofs = {
        "wrong htu": make_proof(key, "POST", "http://evil.test/v1/login"),
        "wrong htm": make_proof(key, "GET", url),
        "too old": make_proof(key, "POST", url, iat=time.time() - 61),
        "from the future": make_proof(key, "POST", url, iat=time.time() + 30),
        "alg none": jwt.encode(
            {"htm": "POST", "htu": url, "iat": int(time.time()), "jti": "n"},
            None,
            "none",
            headers={"typ": "dpop+jwt"},
        ),
        "HS256": make_proof(key, "POST", url, alg="HS256", signing_key=b"s" * 32),
        "private jwk": make_proof(key, "POST", url, jwk=private_jwk(key)),
        "garbage": "not a jwt",
        # Both raised TypeError (hashed for a table, a cache): a 500 before any password check.
        "kty a list": make_proof(key, "POST", url, jwk={**public_jwk(key), "kty": ["EC"]}),
        "typ an object": make_proof(key, "POST", url, typ={"dpop+jwt": 1}),
    }
    headers: list[tuple[str, str]]
    if breakage == "replayed":
        proof = make_proof(key, "POST", url)
        assert (
            await client.post("/v1/login", json=CREDENTIALS, headers={"DPoP": proof})
        ).status == 200
        headers = [("DPoP", proof)]
    elif breakage == "two headers":
        headers = [("DPoP", make_proof(key, "POST", url)), ("DPoP", make_proof(key, "POST", url))]
    else:
        headers = [("DPoP", proofs[breakage])]
    resp = await client.post("/v1/login", json=CREDENTIALS, headers=headers)
    await assert_error(resp, 400, "invalid_dpop_proof")


async def test_a_thief_who_binds_a_stolen_bearer_token_is_still_caught_by_reuse(
    make_client: MakeClient, events: list[RevocationEvent]
) -> None:
    """The first refresh that proves a key binds an unbound session: a thief refreshing with a
    stolen bearer token and a key of his own bound the session to his key, and the victim's
    replay of the token the thief rotated was then judged against that key (refused, the family
    kept) instead of as the reuse it is. A token issued before the binding is a bearer token:
    its reuse revokes the family, whoever bound it since."""
    client = await make_client(refresh_reuse_grace=0)
    await register(client)
    victim = await login(client)
    thief = es256_key()
    status, stolen = await refresh_with(client, victim["refresh_token"], thief)
    assert (status, stolen["token_type"]) == (200, "DPoP")
    status, body = await refresh_with(client, victim["refresh_token"], None)
    assert (status, body["error"]) == (400, "invalid_grant"), body
    assert "the session is revoked" in body["error_description"]
    assert [type(event).__name__ for event in events] == ["SessionRevoked"]
    status, body = await refresh_with(client, stolen["refresh_token"], thief)
    assert (status, body["error"]) == (400, "invalid_grant"), "the thief's family is ended"


async def test_a_token_issued_after_the_binding_is_still_judged_by_its_key_first(
    make_client: MakeClient, events: list[RevocationEvent]
) -> None:
    """The other side of the rule above: once bound by a refresh, a replay of a token issued
    after that without the key revokes nothing, as for a session bound at login."""
    client = await make_client(refresh_reuse_grace=0)
    await register(client)
    tokens = await login(client)
    key = es256_key()
    status, bound = await refresh_with(client, tokens["refresh_token"], key)
    status, current = await refresh_with(client, bound["refresh_token"], key)
    assert status == 200
    status, body = await refresh_with(client, bound["refresh_token"], es256_key())
    assert (status, body["error"]) == (400, "invalid_grant")
    assert "DPoP-bound" in body["error_description"] and events == []
    assert (await refresh_with(client, current["refresh_token"], key))[0] == 200


@pytest.mark.parametrize("grace", [0, 10])
async def test_a_bound_familys_lost_rotation_is_superseded_by_its_key_holder(
    make_client: MakeClient, database_url: str, events: list[RevocationEvent], grace: int
) -> None:
    """A tab closed while its refresh was out (an outside probe, behind 150 ms of latency): the
    token was rotated but the answer, and its cookie, never arrived, so the browser presents the
    rotated token again. Proven with the session's key, which only its holder has, that is the
    holder's client, not a thief: it gets a new token in place of the lost one. It was refused
    within the grace and revoked the session after it (every tab logged out, a theft alarm)."""
    client = await make_client(database_url=database_url, refresh_reuse_grace=grace)
    await register(client)
    key = es256_key()
    first = (await dpop_login(client, key))["refresh_token"]
    status, lost = await refresh_with(client, first, key)
    assert status == 200
    status, again = await refresh_with(client, first, key)
    assert (status, again["token_type"]) == (200, "DPoP"), again
    assert again["refresh_token"] != lost["refresh_token"] and events == []
    status, body = await refresh_with(client, first, es256_key())
    assert (status, body["error"]) == (400, "invalid_grant"), "another key is still refused"
    assert "DPoP-bound" in body["error_description"]
    status, body = await refresh_with(client, first, None)
    assert (status, body["error"]) == (400, "invalid_grant") and events == []
    status, later = await refresh_with(client, again["refresh_token"], key)
    assert status == 200 and events == []
    racing = await asyncio.gather(
        *(refresh_with(client, later["refresh_token"], key) for _ in range(3))
    )
    assert [status for status, _ in racing] == [200] * 3, racing
    assert events == [], "two tabs refreshing at once without locks log no one out"
    # The cookie may hold the lost token when the user logs out: with the key, that still counts.
    stale = {"refresh_token": first}
    resp = await client.post(
        "/v1/logout", json=stale, headers=dpop(es256_key(), "POST", "/v1/logout")
    )
    assert resp.status == 400 and events == [], "not with another key"
    resp = await client.post("/v1/logout", json=stale, headers=dpop(key, "POST", "/v1/logout"))
    assert resp.status == 200, await resp.text()
    assert [type(event).__name__ for event in events] == ["SessionRevoked"]


async def test_required_refuses_bearer_logins_and_binds_old_sessions(
    make_client: MakeClient,
) -> None:
    optional = await make_client()
    await register(optional)
    old = await login(optional)
    required = await make_client(dpop=DpopPolicy.REQUIRED)
    resp = await required.post("/v1/login", json=CREDENTIALS)
    await assert_error(resp, 400, "invalid_dpop_proof")
    assert (await refresh_with(required, old["refresh_token"], None))[1][
        "error"
    ] == "invalid_dpop_proof"
    key = es256_key()
    status, bound = await refresh_with(required, old["refresh_token"], key)
    assert (status, bound["token_type"]) == (200, "DPoP")
    status, body = await refresh_with(optional, bound["refresh_token"], None)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_off_ignores_proofs_but_never_a_binding(make_client: MakeClient) -> None:
    optional = await make_client()
    await register(optional)
    key = es256_key()
    bound = await dpop_login(optional, key)
    off = await make_client(dpop=DpopPolicy.OFF)
    resp = await off.post("/v1/login", json=CREDENTIALS, headers={"DPoP": "garbage"})
    assert (await resp.json())["token_type"] == "Bearer"
    assert (await refresh_with(off, bound["refresh_token"], None))[1]["error"] == "invalid_grant"
    status, body = await refresh_with(off, bound["refresh_token"], key)
    assert (status, body["token_type"]) == (200, "DPoP")


async def test_server_nonces(make_client: MakeClient) -> None:
    client = await make_client(dpop_nonce=True)
    await register(client)
    key = es256_key()
    resp = await client.post("/v1/login", json=CREDENTIALS, headers=dpop(key, "POST", "/v1/login"))
    await assert_error(resp, 400, "use_dpop_nonce")
    nonce = resp.headers["DPoP-Nonce"]
    resp = await client.post(
        "/v1/login", json=CREDENTIALS, headers=dpop(key, "POST", "/v1/login", nonce=nonce)
    )
    assert resp.status == 200, await resp.text()
    nonce = resp.headers["DPoP-Nonce"]
    token = (await resp.json())["access_token"]
    resp = await client.post(
        "/v1/ws-ticket",
        headers={**dpop_auth(token), **dpop(key, "POST", "/v1/ws-ticket", access_token=token)},
    )
    await assert_error(resp, 401, "use_dpop_nonce")
    assert resp.headers["WWW-Authenticate"].startswith('DPoP error="use_dpop_nonce"')
    proof = dpop(key, "POST", "/v1/ws-ticket", access_token=token, nonce=resp.headers["DPoP-Nonce"])
    assert (await client.post("/v1/ws-ticket", headers={**dpop_auth(token), **proof})).status == 200
    assert "DPoP-Nonce" not in (await client.get("/healthz")).headers
    assert nonce


async def test_a_proxy_prefix_is_part_of_htu(make_client: MakeClient) -> None:
    client = await make_client(issuer="http://auth.test/auth")
    await register(client)
    key = es256_key()
    direct = make_proof(key, "POST", "http://auth.test/v1/login")
    await assert_error(
        await client.post("/v1/login", json=CREDENTIALS, headers={"DPoP": direct}),
        400,
        "invalid_dpop_proof",
    )
    public = make_proof(key, "POST", "http://auth.test/auth/v1/login?x=1")
    resp = await client.post("/v1/login", json=CREDENTIALS, headers={"DPoP": public})
    assert (await resp.json())["token_type"] == "DPoP"


async def test_a_client_policy_overrides_auth_dpop(client: AuthClient) -> None:
    strict = await make_app(client, "strict", dpop=DpopPolicy.REQUIRED)
    lax = await make_app(client, "lax", dpop=DpopPolicy.OFF)
    resp = await client.post(
        "/v1/token",
        data=exchange_form(assertion(strict.secret, iss="strict")),
        headers=basic("strict", strict.secret),
    )
    await assert_error(resp, 400, "invalid_dpop_proof")
    key = es256_key()
    subject = assertion(strict.secret, iss="strict")
    for expected in ("use it", "again"):
        resp = await client.post(
            "/v1/token",
            data=exchange_form(subject),
            headers={**basic("strict", strict.secret), **dpop(key, "POST", "/v1/token")},
        )
        if expected == "use it":
            tokens = await resp.json()
            assert tokens["token_type"] == "DPoP", tokens
        else:
            await assert_error(resp, 400, "invalid_request")  # the assertion works once
    assert (await refresh_with(client, tokens["refresh_token"], None))[1][
        "error"
    ] == "invalid_grant"
    assert (await refresh_with(client, tokens["refresh_token"], key))[0] == 200
    resp = await client.post(
        "/v1/token",
        data=exchange_form(assertion(lax.secret, iss="lax")),
        headers={**basic("lax", lax.secret), **dpop(key, "POST", "/v1/token")},
    )
    assert (await resp.json())["token_type"] == "Bearer"


@pytest.mark.redis
async def test_a_proof_works_once_across_replicas(make_client: MakeClient, redis_url: str) -> None:
    first = await make_client(redis_url=redis_url)
    second = await make_client(redis_url=redis_url)
    await register(first)
    proof = dpop(es256_key(), "POST", "/v1/login")
    assert (await first.post("/v1/login", json=CREDENTIALS, headers=proof)).status == 200
    await assert_error(
        await second.post("/v1/login", json=CREDENTIALS, headers=proof), 400, "invalid_dpop_proof"
    )
