"""A ticket's one legitimate use survives redis-py re-sending the burn after a timeout."""

from __future__ import annotations

import asyncio
import time
import uuid

from shared.redis.once import RedisUsedOnce
from tests.support.delaying_proxy import DelayingProxy


async def test_a_burn_whose_reply_was_lost_is_still_the_first_use(proxy: DelayingProxy) -> None:
    """The SET ran, its reply was held past the timeout, redis-py sent it again: the retry reads
    its own value back and the use stands (before: "already used", a 401 for the rightful user)."""
    tickets = RedisUsedOnce(proxy.url, timeout=0.3)
    jti, until = uuid.uuid4().hex, time.time() + 30
    try:
        assert await tickets.burn(uuid.uuid4().hex, until)  # a connection, warmed up
        proxy.hold_replies(1)
        burning = asyncio.create_task(tickets.burn(jti, until))
        await proxy.wait_holding()
        assert await burning is True
        assert await tickets.burn(jti, until) is False, "a replay is still refused"
    finally:
        await tickets.close()
