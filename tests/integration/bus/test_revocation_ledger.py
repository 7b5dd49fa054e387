"""The Redis revocation ledger against the machine's real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from realtime_gateway_protocol.access_token import TokenRef
from realtime_gateway_protocol.events import SessionRevoked, UserRevoked
from shared.bus import BusOutcomeUnknown, BusUnavailable
from shared.redis.ledger import PREFIX, RedisRevocationLedger
from tests.services import free_port
from tests.support.delaying_proxy import DelayingProxy


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[RedisRevocationLedger]:
    opened = RedisRevocationLedger(redis_url)
    yield opened
    await opened.close()


def unique() -> str:
    return uuid.uuid4().hex


async def test_session_and_user_revocations_are_found_in_one_call(
    ledger: RedisRevocationLedger,
) -> None:
    now = int(time.time())
    sid, other_sid, sub, other_sub = unique(), unique(), unique(), unique()
    await ledger.record(SessionRevoked(sid=sid, sub=sub, until=now + 60))
    await ledger.record(UserRevoked(sub=other_sub, issued_before=now, until=now + 60))
    result = await ledger.revoked(
        [
            TokenRef(sid, sub, now),  # its session is revoked
            TokenRef(other_sid, sub, now),  # same user, live session
            TokenRef(unique(), other_sub, now - 1),  # issued before the user's cut-off
            TokenRef(unique(), other_sub, now),  # issued at/after the cut-off
        ]
    )
    assert result == [True, False, True, False]
    assert await ledger.revoked([]) == []


async def test_records_expire_with_the_tokens_they_cover(
    ledger: RedisRevocationLedger, redis_url: str
) -> None:
    sid = unique()
    now = time.time()
    await ledger.record(SessionRevoked(sid=sid, sub="u", until=int(now) + 30), now=now)
    client = Redis.from_url(redis_url)
    try:
        ttl = await client.ttl(f"{PREFIX}:sid:{sid}")
    finally:
        await client.aclose()
    assert 25 <= ttl <= 32


async def test_unreachable_redis_raises_bus_unavailable() -> None:
    ledger = RedisRevocationLedger(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(BusUnavailable):
            await ledger.record(SessionRevoked(sid="s", sub="u", until=int(time.time()) + 5))
        with pytest.raises(BusUnavailable):
            await ledger.revoked([TokenRef("s", "u", 0)])
    finally:
        await ledger.close()


async def test_a_retried_older_revocation_never_lowers_a_newer_cut_off(
    ledger: RedisRevocationLedger, redis_url: str, proxy: DelayingProxy
) -> None:
    sub, now = unique(), int(time.time())
    slow = RedisRevocationLedger(proxy.url, timeout=0.3)
    try:
        await slow.record(SessionRevoked(sid=unique(), sub=sub, until=now + 60))  # warm up
        proxy.hold_replies(1)
        older = asyncio.create_task(
            slow.record(UserRevoked(sub=sub, issued_before=now - 10, until=now + 50))
        )
        await proxy.wait_holding()  # the older cut-off is recorded; its reply is lost
        await ledger.record(UserRevoked(sub=sub, issued_before=now, until=now + 60))
        await older  # retried after its timeout: the retry must not win
    finally:
        await slow.close()
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.get(f"{PREFIX}:user:{sub}") == str(now)
        assert 55 <= await client.ttl(f"{PREFIX}:user:{sub}") <= 61
    finally:
        await client.aclose()
    assert await ledger.revoked([TokenRef(unique(), sub, now - 5)]) == [True]


async def test_a_revocation_redis_never_confirms_is_reported_as_such(
    proxy: DelayingProxy,
) -> None:
    slow = RedisRevocationLedger(proxy.url, timeout=0.3)
    try:
        await slow.revoked([])
        await slow.record(SessionRevoked(sid=unique(), sub="u", until=int(time.time()) + 60))
        proxy.hold_replies(100)
        with pytest.raises(BusOutcomeUnknown):
            await slow.record(SessionRevoked(sid=unique(), sub="u", until=int(time.time()) + 60))
    finally:
        await slow.close()


async def test_concurrent_checks_share_one_round_trip_and_see_earlier_revocations(
    redis_url: str,
) -> None:
    """A storm of handshakes: each asks about its own token at once; the ledger answers them all
    with one MGET, and a revocation recorded before the checks refuses its token."""
    sizes: list[int] = []
    ledger = RedisRevocationLedger(redis_url, on_batch=sizes.append)
    try:
        now = int(time.time())
        revoked_sid, cut_user = unique(), unique()
        await ledger.record(SessionRevoked(sid=revoked_sid, sub=unique(), until=now + 60))
        await ledger.record(UserRevoked(sub=cut_user, issued_before=now, until=now + 60))
        refs = [TokenRef(unique(), unique(), now) for _ in range(50)]
        refs[7] = TokenRef(revoked_sid, unique(), now)
        refs[20] = TokenRef(unique(), cut_user, now - 1)
        refs[21] = TokenRef(unique(), cut_user, now)
        answers = await asyncio.gather(*(ledger.revoked([ref]) for ref in refs))
        assert [answer for (answer,) in answers] == [i in (7, 20) for i in range(50)]
        assert sizes == [50]
    finally:
        await ledger.close()


async def test_an_unreachable_ledger_fails_every_waiting_check() -> None:
    ledger = RedisRevocationLedger(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        outcomes = await asyncio.gather(
            *(ledger.revoked([TokenRef(unique(), "u", 0)]) for _ in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, BusUnavailable) for outcome in outcomes), outcomes
    finally:
        await ledger.close()
