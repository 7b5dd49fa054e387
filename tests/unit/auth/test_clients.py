"""Confidential clients and the token exchange, on the in-memory store with the injected clock."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.domain.clients import TOKEN_EXCHANGE, IssuedSecret
from auth_service.domain.errors import (
    AccessDenied,
    InvalidAuthorizationDetails,
    InvalidClient,
    InvalidCredentials,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidSubjectToken,
    KeyRingError,
    RefreshReuse,
    Throttled,
    UnauthorizedClient,
)
from auth_service.domain.models import Client
from auth_service.domain.service import TokenPair
from auth_service.domain.throttle import ThrottlePolicy
from realtime_gateway_protocol.events import SessionRevoked, UserRevoked
from tests.unit.auth.conftest import GRACE, PASSWORD, World

ISSUER = "http://auth.test"
DETAILS = [{"type": "realtime_channels", "channels": ["doc:1"], "actions": ["subscribe"]}]


async def make(world: World, name: str = "acme", **options: Any) -> IssuedSecret:
    options.setdefault("grant_types", [TOKEN_EXCHANGE])
    return await world.service.clients.create(name, **options)


def sign(world: World, secret: str, **overrides: Any) -> str:
    claims = {
        "iss": "acme",
        "aud": ISSUER,
        "sub": "42",
        "exp": int(world.now) + 60,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, "HS256")


async def exchange(world: World, issued: IssuedSecret, **options: Any) -> TokenPair:
    token = options.pop("token", None) or sign(world, issued.secret)
    return await world.service.exchange(issued.client, token, **options)


def claims_of(pair: TokenPair) -> dict[str, Any]:
    """The claims (the signature is the key ring's, tested elsewhere; the clock here runs ahead)."""
    claims: dict[str, Any] = jwt.decode(pair.access_token, options={"verify_signature": False})
    return claims


async def test_a_secret_is_sealed_bound_to_its_client_and_shown_once(world: World) -> None:
    acme, zeta = await make(world), await make(world, "zeta")
    stored = world.store.clients["acme"]
    assert acme.secret.encode() not in stored.secret_encrypted
    assert acme.secret not in repr(acme), "the secret never prints with its record"
    assert world.service.clients.secrets(stored, world.now) == [acme.secret]
    moved = replace(world.store.clients["zeta"], secret_encrypted=stored.secret_encrypted)
    with pytest.raises(KeyRingError):
        world.service.clients.secrets(moved, world.now)
    assert zeta.secret != acme.secret


@pytest.mark.parametrize(
    ("name", "why"),
    [("ac", "3-32"), ("Acme", "3-32"), ("a" * 33, "3-32"), ("ac:me", "3-32"), ("test", "public")],
)
async def test_client_names_are_checked(world: World, name: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        await make(world, name, reserved=["test"])
    await make(world)
    with pytest.raises(InvalidRequest, match="exists"):
        await make(world)
    with pytest.raises(InvalidRequest, match="namespace"):
        await make(world, "other", namespaces=["doc:1"])


async def test_authentication_counts_failures_like_logins(world: World) -> None:
    acme = await make(world)
    clients = world.service.clients
    assert await clients.authenticate("acme", acme.secret, address="10.0.0.9") == acme.client
    for wrong in ("nope", acme.secret[:-1], "", "é\udcff"):
        with pytest.raises(InvalidClient):
            await clients.authenticate("acme", wrong, address="10.0.0.1")
    with pytest.raises(InvalidClient):
        await clients.authenticate("ghost", acme.secret, address="10.0.0.1")
    for _ in range(6):
        with pytest.raises(InvalidClient):
            await clients.authenticate("acme", "nope", address="10.0.0.1")
    with pytest.raises(Throttled):
        await clients.authenticate("acme", acme.secret, address="10.0.0.1")
    assert world.store.throttle["pair:client:acme|10.0.0.1"].failures == 10
    assert world.store.throttle["addr:10.0.0.1"].failures == 11, "the unknown client counted too"
    assert await clients.authenticate("acme", acme.secret, address="10.0.0.2") == acme.client


async def test_a_client_authenticating_many_requests_at_once_is_never_throttled(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend sends many requests together; none of them failed, so none is refused. (When
    attempts were reserved before the check, the tenth in flight set a block.)"""
    acme = await make(world)
    lookup = world.store.get_client

    async def slow_lookup(client_id: str) -> Client | None:
        await asyncio.sleep(0)  # every request is in flight before any is checked
        return await lookup(client_id)

    monkeypatch.setattr(world.store, "get_client", slow_lookup)
    clients = world.service.clients
    limit = ThrottlePolicy().pair_limit
    results = await asyncio.gather(
        *(clients.authenticate("acme", acme.secret, address="10.0.0.1") for _ in range(3 * limit))
    )
    assert results == [acme.client] * (3 * limit)


async def test_a_rotated_secret_works_through_its_grace_only(world: World) -> None:
    old = await make(world)
    clients = world.service.clients
    new = await clients.rotate_secret("acme", grace=100)
    assert new.secret != old.secret
    for secret in (old.secret, new.secret):
        await clients.authenticate("acme", secret, address="10.0.0.1")
        await exchange(world, replace(new, secret=secret))
    world.now += 100
    with pytest.raises(InvalidClient):
        await clients.authenticate("acme", old.secret, address="10.0.0.1")
    with pytest.raises(InvalidSubjectToken, match="signature"):
        await exchange(world, replace(new, client=world.store.clients["acme"], secret=old.secret))
    leaked = await clients.rotate_secret("acme", grace=0)
    with pytest.raises(InvalidClient):
        await clients.authenticate("acme", new.secret, address="10.0.0.1")
    await clients.authenticate("acme", leaked.secret, address="10.0.0.1")
    with pytest.raises(InvalidRequest):
        await clients.rotate_secret("ghost")


async def test_an_exchange_is_a_session_of_the_app_user_in_its_clients_namespace(
    world: World,
) -> None:
    acme = await make(world)
    pair = await exchange(
        world,
        acme,
        token=sign(world, acme.secret, preferred_username="Bob"),
        authorization_details=json.dumps(DETAILS),
    )
    claims = claims_of(pair)
    assert (claims["sub"], claims["client_id"], claims["preferred_username"]) == (
        "acme:42",
        "acme",
        "Bob",
    )
    assert claims["scope"] == "chat:read" == pair.scope, "the server's default"
    assert claims["authorization_details"] == DETAILS == pair.authorization_details
    world.now += 5
    again = await world.service.refresh(pair.refresh_token)
    assert {k: v for k, v in claims_of(again).items() if k not in ("jti", "iat", "exp")} == {
        k: v for k, v in claims.items() if k not in ("jti", "iat", "exp")
    }, "a refresh, without client credentials, carries the same details, username and client"
    world.now += 5
    with pytest.raises(InvalidGrant, match="not issued to this client"):
        await world.service.refresh(again.refresh_token, client=(await make(world, "zeta")).client)
    third = await world.service.refresh(again.refresh_token, client=acme.client)
    world.now += GRACE + 1
    with pytest.raises(RefreshReuse):
        await world.service.refresh(again.refresh_token)
    assert world.events == [SessionRevoked(claims["sid"], "acme:42", int(world.now) + 50)]
    with pytest.raises(InvalidGrant, match="revoked"):
        await world.service.refresh(third.refresh_token)


async def test_app_users_have_no_password_and_cannot_be_registered(world: World) -> None:
    acme = await make(world)
    await exchange(world, acme)
    for password in ("", PASSWORD):
        with pytest.raises(InvalidCredentials):
            await world.service.login("acme:42", password, address="10.0.0.1")
    with pytest.raises(InvalidRequest):
        await world.service.register("acme:43", PASSWORD)


async def test_each_clients_users_are_its_own(world: World) -> None:
    acme, zeta = await make(world), await make(world, "zeta")
    await world.service.register("alice", PASSWORD)
    local = await world.service.login("alice", PASSWORD, address="10.0.0.1")
    ours = await exchange(world, acme)
    theirs = await exchange(world, zeta, token=sign(world, zeta.secret, iss="zeta"))
    subs = {claims_of(pair)["sub"] for pair in (local, ours, theirs)}
    assert len(subs) == 3 and {"acme:42", "zeta:42"} < subs
    assert claims_of(local)["client_id"] == "test"


async def test_scope_stays_within_the_clients(world: World) -> None:
    acme = await make(world, scope="chat:read doc:read")
    assert (await exchange(world, acme)).scope == "chat:read doc:read"
    assert (await exchange(world, acme, scope="doc:read")).scope == "doc:read"
    with pytest.raises(InvalidScope, match="chat:write"):
        await exchange(world, acme, scope="doc:read chat:write")
    free = await make(world, "free")
    token = sign(world, free.secret, iss="free")
    assert (await exchange(world, free, token=token, scope="any:thing")).scope == "any:thing"
    with pytest.raises(InvalidScope):
        await exchange(world, free, token=sign(world, free.secret, iss="free"), scope='quote"d')


@pytest.mark.parametrize("separator", ["\u00a0", "\t", "\n", "\u3000", "\u2028"])
async def test_a_scope_is_separated_by_spaces_alone(world: World, separator: str) -> None:
    """RFC 6749 section 3.3: ``str.split()`` also split on tabs, line breaks and Unicode spaces,
    so ``chat:read<U+00A0>doc:read`` was granted as two scopes."""
    acme = await make(world, scope="chat:read doc:read")
    with pytest.raises(InvalidScope, match="space-separated"):
        await exchange(world, acme, scope=f"chat:read{separator}doc:read")
    pair = await exchange(world, acme, scope="  chat:read   doc:read ")
    assert pair.scope == "chat:read doc:read"
    with pytest.raises(InvalidScope):
        await world.service.refresh(pair.refresh_token, scope=f"chat:read{separator}doc:read")
    assert (await world.service.refresh(pair.refresh_token, scope="doc:read")).scope == "doc:read"


async def test_details_stay_within_the_clients_namespaces_and_scope(world: World) -> None:
    fenced = await make(world, namespaces=["doc", "team"])
    await exchange(world, fenced, authorization_details=DETAILS)
    outside = [{**DETAILS[0], "channels": ["doc:1", "chat:*"]}]
    with pytest.raises(InvalidAuthorizationDetails, match="'chat'"):
        await exchange(world, fenced, authorization_details=outside)
    scoped = await make(world, "scoped", scope="doc:read")
    publish = [{**DETAILS[0], "actions": ["subscribe", "publish"]}]
    with pytest.raises(InvalidAuthorizationDetails, match="doc:write"):
        await exchange(
            world,
            scoped,
            token=sign(world, scoped.secret, iss="scoped"),
            authorization_details=publish,
        )


@pytest.mark.parametrize(
    "details",
    [
        "",
        "not json",
        "[",
        '{"type": "realtime_channels"}',
        "[" * 50 + "]" * 50,
        "x" * 20_000,
        7,
        '[{"type": "realtime_channels", "channels": ["doc:1"], "actions": ["subscribe"], '
        '"actions": ["publish"]}]',
    ],
)
async def test_malformed_details_are_invalid_authorization_details(
    world: World, details: object
) -> None:
    acme = await make(world)
    with pytest.raises(InvalidAuthorizationDetails):
        await exchange(world, acme, authorization_details=details)


async def test_a_refused_request_does_not_spend_the_assertion(world: World) -> None:
    acme = await make(world, scope="chat:read")
    token = sign(world, acme.secret)
    with pytest.raises(InvalidScope):
        await exchange(world, acme, token=token, scope="chat:write")
    await exchange(world, acme, token=token)
    with pytest.raises(InvalidSubjectToken, match="used before"):
        await exchange(world, acme, token=token)


async def test_a_client_without_the_grant_is_unauthorized(world: World) -> None:
    plain = await make(world, grant_types=[])
    with pytest.raises(UnauthorizedClient):
        await exchange(world, plain)


def rs256(world: World) -> str:
    key = rsa.generate_private_key(65537, 2048)
    claims = {"iss": "acme", "aud": ISSUER, "sub": "42", "exp": int(world.now) + 60, "jti": "j"}
    return jwt.encode(claims, key, "RS256")


def unsigned(world: World) -> str:
    claims = {"iss": "acme", "aud": ISSUER, "sub": "42", "exp": int(world.now) + 60, "jti": "j"}
    return jwt.encode(claims, None, "none")


@pytest.mark.parametrize(
    ("forge", "why"),
    [
        (lambda w, s: sign(w, s, exp=int(w.now) - 31), "expired"),
        (lambda w, s: sign(w, s, exp=int(w.now) + 331), "300 s ahead"),
        (lambda w, s: sign(w, s, exp="soon"), "not a number"),
        (lambda w, s: sign(w, s, exp=True), "not a number"),
        (lambda w, s: sign(w, s, exp=float("nan")), "numbers must be finite"),
        (lambda w, s: sign(w, s, iat=float("nan")), "numbers must be finite"),
        (lambda w, s: sign(w, s, iat=int(w.now) + 60), "iat"),
        (lambda w, s: sign(w, s, nbf=int(w.now) + 60), "nbf"),
        (lambda w, s: sign(w, s, iss="zeta"), "iss"),
        (lambda w, s: sign(w, s, aud="http://elsewhere"), "aud"),
        (lambda w, s: sign(w, s, aud=None), "aud"),
        (lambda w, s: sign(w, s, jti=None), "jti"),
        (lambda w, s: sign(w, s, jti=""), "jti"),
        (lambda w, s: sign(w, s, jti=7), "jti"),
        (lambda w, s: sign(w, s, sub="a b"), "sub"),
        (lambda w, s: sign(w, s, sub="x" * 81), "sub"),
        (lambda w, s: sign(w, s, sub=42), "sub"),
        (lambda w, s: sign(w, s, preferred_username="\n"), "preferred_username"),
        (lambda w, s: sign(w, s, preferred_username=["Bob"]), "preferred_username"),
        (lambda w, s: sign(w, "another client's secret, long enough for HS256"), "signature"),
        (lambda w, s: sign(w, s)[:-3], "signature"),
        (lambda w, s: unsigned(w), "HS256"),
        (lambda w, s: rs256(w), "HS256"),
        (lambda w, s: "garbage", "well-formed"),
        (lambda w, s: "a.b.c", "well-formed"),
    ],
)
async def test_a_bad_assertion_is_an_invalid_subject_token(
    world: World, forge: Any, why: str
) -> None:
    acme = await make(world)
    with pytest.raises(InvalidSubjectToken, match=why):
        await exchange(world, acme, token=forge(world, acme.secret))


async def test_the_leeway_allows_a_little_clock_skew(world: World) -> None:
    acme = await make(world)
    token = sign(world, acme.secret, iat=int(world.now) + 20, exp=int(world.now) + 320)
    await exchange(world, acme, token=token)
    world.now += 340
    with pytest.raises(InvalidSubjectToken, match="used before"):
        await exchange(world, acme, token=token)
    world.now += 10
    with pytest.raises(InvalidSubjectToken, match="expired"):
        await exchange(world, acme, token=token)


async def test_a_client_ends_its_users_sessions_only(world: World) -> None:
    acme, zeta = await make(world), await make(world, "zeta")
    first, second = await exchange(world, acme), await exchange(world, acme)
    await exchange(world, acme, token=sign(world, acme.secret, sub="43"))
    assert await world.service.revoke_app_user(acme.client, "acme:42") == 2
    until = int(world.now) + 50
    sids = sorted(claims_of(pair)["sid"] for pair in (first, second))
    assert world.events == [
        *(SessionRevoked(sid, "acme:42", until) for sid in sids),
        UserRevoked("acme:42", int(world.now), until),
    ]
    with pytest.raises(InvalidGrant, match="revoked"):
        await world.service.refresh(first.refresh_token)
    assert await world.service.revoke_app_user(acme.client, "acme:nobody") == 0
    for sub in ("zeta:42", "42", "acme", "alice-uuid"):
        with pytest.raises(AccessDenied):
            await world.service.revoke_app_user(zeta.client if sub == "acme" else acme.client, sub)


async def test_a_confidential_client_revokes_its_own_tokens_only(world: World) -> None:
    acme, zeta = await make(world), await make(world, "zeta")
    pair = await exchange(world, acme)
    for token in (pair.refresh_token, pair.access_token):
        await world.service.revoke(token, client=zeta.client)
    assert world.events == []
    await world.service.revoke(pair.access_token, client=acme.client)
    assert [type(e) for e in world.events] == [SessionRevoked]


async def test_an_exchanged_session_logs_out_like_a_login(world: World) -> None:
    acme = await make(world)
    pair = await exchange(world, acme)
    await world.service.logout_with_refresh_token(pair.refresh_token, everywhere=True)
    assert [type(e) for e in world.events] == [SessionRevoked, UserRevoked]
    assert world.events[1] == UserRevoked("acme:42", int(world.now), int(world.now) + 50)


async def test_deleting_a_client_ends_its_users_sessions(world: World) -> None:
    acme = await make(world)
    pair = await exchange(world, acme)
    await world.service.register("alice", PASSWORD)
    local = await world.service.login("alice", PASSWORD, address="10.0.0.1")
    assert await world.service.delete_client("acme") == 1
    assert world.events == [SessionRevoked(claims_of(pair)["sid"], "acme:42", int(world.now) + 50)]
    with pytest.raises(InvalidGrant, match="unknown"):
        await world.service.refresh(pair.refresh_token)
    await world.service.refresh(local.refresh_token)
    assert "acme" not in world.store.clients and "acme:42" not in world.store.users
    with pytest.raises(InvalidRequest):
        await world.service.delete_client("acme")
