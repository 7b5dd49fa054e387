"""The auth domain on the in-memory store with an injected clock (tests/unit/auth/conftest.py):
milliseconds, no I/O."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from typing import Any

import jwt
import pytest

from auth_service.domain.errors import (
    InvalidClientToken,
    InvalidCredentials,
    InvalidGrant,
    KeyRingError,
    RefreshReuse,
    StoreUnavailable,
    Throttled,
)
from auth_service.domain.models import StoredKey
from auth_service.domain.throttle import counted_as
from realtime_gateway_protocol.events import SessionRevoked, UserRevoked
from tests.unit.auth.conftest import GRACE, PASSWORD, POLICY, World


async def test_login_issues_tokens_only_for_the_right_password(world: World) -> None:
    pair = await world.register_and_login()
    claims = world.service._tokens.verify(pair.access_token)
    assert claims["preferred_username"] == "alice" and claims["iat"] == int(world.now)
    for username, password in (("alice", "wrong password!"), ("nobody", PASSWORD)):
        with pytest.raises(InvalidCredentials):
            await world.service.login(username, password, address="10.0.0.1")


async def test_throttle_blocks_after_ten_then_doubles_and_a_success_clears(world: World) -> None:
    await world.service.register("alice", PASSWORD)

    async def attempt(password: str = "wrong password!") -> Any:
        return await world.service.login("alice", password, address="10.0.0.1")

    for _ in range(10):
        with pytest.raises(InvalidCredentials):
            await attempt()
    with pytest.raises(Throttled) as blocked:
        await attempt(PASSWORD)
    assert blocked.value.retry_after == 30
    world.now += 30
    with pytest.raises(InvalidCredentials):
        await attempt()
    with pytest.raises(Throttled) as doubled:
        await attempt(PASSWORD)
    assert doubled.value.retry_after == 60
    world.now += 60
    await attempt(PASSWORD)
    with pytest.raises(InvalidCredentials):
        await attempt()
    assert world.store.throttle["pair:alice|10.0.0.1"].failures == 1


async def test_an_ipv6_slash_64_is_one_source_of_guesses(world: World) -> None:
    """An outside probe: behind a trusted proxy, 70 guesses at one account from 7 addresses of
    one /64 met only each address's own limit, and a login from an eighth then succeeded: a /64
    (one host's or subscriber's block) held 2^64 budgets. It is counted as one source now; the
    next /64 is another, and an IPv4-mapped address is its IPv4 address."""
    await world.service.register("alice", PASSWORD)
    for n in range(10):
        with pytest.raises(InvalidCredentials):
            await world.service.login("alice", "wrong password!", address=f"2001:db8:1:2::{n:x}")
    with pytest.raises(Throttled):
        await world.service.login("alice", PASSWORD, address="2001:db8:1:2:ffff::1")
    await world.service.login("alice", PASSWORD, address="2001:db8:1:3::1")
    assert counted_as("::ffff:10.0.0.1") == "10.0.0.1"
    assert counted_as("2001:DB8:1:2:a:b:c:d") == "2001:db8:1:2::/64"
    assert counted_as("10.0.0.1") == "10.0.0.1"
    assert counted_as("unknown") == "unknown"


async def test_refresh_rotates_and_expires(world: World) -> None:
    first = await world.register_and_login()
    world.now += 5
    second = await world.service.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    world.now += 3600
    with pytest.raises(InvalidGrant, match="expired"):
        await world.service.refresh(second.refresh_token)


async def test_reuse_inside_the_grace_is_refused_without_revoking(world: World) -> None:
    first = await world.register_and_login()
    second = await world.service.refresh(first.refresh_token)
    world.now += GRACE
    with pytest.raises(RefreshReuse) as reuse:
        await world.service.refresh(first.refresh_token)
    assert reuse.value.family_revoked is False and world.events == []
    await world.service.refresh(second.refresh_token)


async def test_reuse_after_the_grace_revokes_the_family(world: World) -> None:
    first = await world.register_and_login()
    second = await world.service.refresh(first.refresh_token)
    world.now += GRACE + 1
    with pytest.raises(RefreshReuse) as reuse:
        await world.service.refresh(first.refresh_token)
    assert reuse.value.family_revoked is True
    assert [type(e) for e in world.events] == [SessionRevoked]
    with pytest.raises(InvalidGrant, match="revoked"):
        await world.service.refresh(second.refresh_token)


async def test_a_strict_grace_revokes_the_family_on_a_concurrent_reuse(world: World) -> None:
    """``AUTH_REFRESH_REUSE_GRACE=0`` is strict: every reuse revokes. A reuse racing the rotation
    (on another replica) read its clock before the winner wrote ``rotated_at``, so the time since
    the rotation was negative, at most the grace, and the family was kept: a thief racing its
    victim was never caught (found by a probe of two replicas, 4 races in 30)."""
    world.service.policy = replace(world.service.policy, refresh_reuse_grace=0)
    first = await world.register_and_login()
    second = await world.service.refresh(first.refresh_token)
    world.now -= 0.004
    with pytest.raises(RefreshReuse) as reuse:
        await world.service.refresh(first.refresh_token)
    assert reuse.value.family_revoked is True
    with pytest.raises(InvalidGrant, match="revoked"):
        await world.service.refresh(second.refresh_token)


async def test_a_bearer_refresh_is_one_store_call_and_a_refusal_is_looked_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await world.register_and_login()
    calls: list[str] = []
    for name in ("find_refresh_token", "rotate_refresh_token", "rotate_live_refresh_token"):
        method = getattr(world.store, name)

        async def counted(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
            calls.append(_name)
            return await _method(*args, **kw)

        monkeypatch.setattr(world.store, name, counted)
    second = await world.service.refresh(first.refresh_token)
    assert calls == ["rotate_live_refresh_token"]
    claims = world.service._tokens.verify(second.access_token)
    first_claims = world.service._tokens.verify(first.access_token)
    assert (claims["sid"], claims["sub"], claims["scope"], claims["iat"]) == (
        first_claims["sid"],
        first_claims["sub"],
        "chat:read",
        int(world.now),
    )
    assert (second.refresh_expires_in, second.token_type) == (3600, "Bearer")
    calls.clear()
    world.now += GRACE + 1
    with pytest.raises(RefreshReuse):
        await world.service.refresh(first.refresh_token)
    assert calls == ["rotate_live_refresh_token", "find_refresh_token"]


async def test_a_refresh_without_a_signing_key_rotates_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await world.register_and_login()
    monkeypatch.setattr(world.ring, "signing_key", lambda now: None)
    with pytest.raises(StoreUnavailable, match="no signing key"):
        await world.service.refresh(first.refresh_token)
    (token,) = world.store.tokens.values()
    assert token.rotated_at is None


async def test_logout_everywhere_revokes_every_session_and_the_user(world: World) -> None:
    first = await world.register_and_login()
    other = await world.service.login("alice", PASSWORD, address="10.0.0.2")
    await world.service.logout_with_access_token(first.access_token, everywhere=True)
    assert sorted(type(e).__name__ for e in world.events) == [
        "SessionRevoked",
        "SessionRevoked",
        "UserRevoked",
    ]
    assert isinstance(world.events[-1], UserRevoked) and world.events[-1].until == int(
        world.now + 50
    )
    for pair in (first, other):
        with pytest.raises(InvalidGrant, match="revoked"):
            await world.service.refresh(pair.refresh_token)


async def test_key_ring_publishes_ahead_signs_then_retires(world: World) -> None:
    ring, start = world.ring, world.now
    (first,) = ring.keys
    lead_time = start + POLICY.interval - POLICY.lead
    assert await ring.maintain(lead_time) is True
    second = ring.keys[-1]
    assert second.activate_at == start + POLICY.interval
    assert ring.signing_key(lead_time) == first, "published before it signs"
    assert ring.signing_key(second.activate_at) == second
    assert {k["kid"] for k in ring.jwks()["keys"]} == {first.kid, second.kid}
    await ring.maintain(second.activate_at + POLICY.retention)
    assert [k.kid for k in ring.keys] == [second.kid]


async def test_a_manual_rotation_that_loses_a_race_says_so(world: World) -> None:
    ring = world.ring
    competing = ring.keys[0]
    refuse = world.store.add_signing_key

    async def another_replica_first(key: StoredKey) -> bool:
        await refuse(replace(key, kid="another-replica"))
        return await refuse(key)

    world.store.add_signing_key = another_replica_first  # type: ignore[method-assign]
    with pytest.raises(KeyRingError, match="another replica rotated"):
        await ring.rotate(world.now)
    assert competing in ring.keys


async def test_a_rotated_refresh_token_cannot_log_out_anywhere(world: World) -> None:
    first = await world.register_and_login()
    other = await world.service.login("alice", PASSWORD, address="10.0.0.2")
    await world.service.refresh(first.refresh_token)
    for everywhere in (True, False):
        with pytest.raises(InvalidGrant, match="already used"):
            await world.service.logout_with_refresh_token(
                first.refresh_token, everywhere=everywhere
            )
    assert world.events == []
    await world.service.refresh(other.refresh_token)


async def test_the_access_token_of_a_logged_out_session_cannot_log_out_everywhere(
    world: World,
) -> None:
    first = await world.register_and_login()
    other = await world.service.login("alice", PASSWORD, address="10.0.0.2")
    await world.service.logout_with_access_token(first.access_token, everywhere=False)
    assert [type(e) for e in world.events] == [SessionRevoked]
    for everywhere in (True, False):
        with pytest.raises(InvalidClientToken, match="already logged out"):
            await world.service.logout_with_access_token(first.access_token, everywhere=everywhere)
    assert len(world.events) == 1
    await world.service.refresh(other.refresh_token)


async def test_a_logged_out_refresh_token_cannot_log_out_everywhere(world: World) -> None:
    first = await world.register_and_login()
    other = await world.service.login("alice", PASSWORD, address="10.0.0.2")
    await world.service.logout_with_refresh_token(first.refresh_token, everywhere=False)
    with pytest.raises(InvalidGrant, match="revoked"):
        await world.service.logout_with_refresh_token(first.refresh_token, everywhere=True)
    assert len(world.events) == 1
    await world.service.refresh(other.refresh_token)


async def test_revoke_ignores_an_expired_access_token(world: World) -> None:
    pair = await world.register_and_login()
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    key = world.ring.signing_key(world.now)
    assert key is not None
    expired = jwt.encode(
        {**claims, "iat": claims["iat"] - 1000, "exp": claims["iat"] - 900},
        key.private_key,
        algorithm="RS256",
        headers={"kid": key.kid, "typ": "at+jwt"},
    )
    await world.service.revoke(expired)
    assert world.events == []
    await world.service.refresh(pair.refresh_token)


async def test_revoke_ignores_a_rotated_refresh_token(world: World) -> None:
    first = await world.register_and_login()
    second = await world.service.refresh(first.refresh_token)
    await world.service.revoke(first.refresh_token)
    assert world.events == []
    await world.service.refresh(second.refresh_token)


async def test_revoke_is_idempotent_one_event_per_session(world: World) -> None:
    pair = await world.register_and_login()
    for token in (pair.refresh_token, pair.refresh_token, pair.access_token, pair.access_token):
        await world.service.revoke(token)
    assert [type(e) for e in world.events] == [SessionRevoked]
    with pytest.raises(InvalidGrant, match="revoked"):
        await world.service.refresh(pair.refresh_token)


async def test_failed_logins_never_log_what_was_typed_as_an_unknown_username(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await world.service.register("alice", PASSWORD)
    typed = "my secret password"
    with caplog.at_level(logging.INFO, logger="audit"), pytest.raises(InvalidCredentials):
        await world.service.login(typed, PASSWORD, address="10.0.0.1")
    with caplog.at_level(logging.INFO, logger="audit"), pytest.raises(InvalidCredentials):
        await world.service.login("alice", "wrong password!!", address="10.0.0.1")
    unknown, known = (r for r in caplog.records if r.msg == "login_failed")
    assert typed not in str(vars(unknown)) and "my secret" not in str(vars(unknown))
    assert vars(unknown)["username_hash"] == hashlib.sha256(typed.encode()).hexdigest()[:16]
    assert vars(known)["username"] == "alice" and vars(known)["reason"] == "wrong_password"
