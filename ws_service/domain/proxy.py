"""The app in the loop: subscribe and publish proxies.

A namespace may name a backend URL per action (``Namespace.subscribe_proxy``/``publish_proxy``).
Once the namespace rule allows a subscribe or a publish there, the application is asked too, and
both must allow. The transport is an :class:`AppProxy` (``ws_service/proxy.py`` signs, times out
and bounds the HTTP call); this module decides what to ask and what to remember:

- identical subscribe questions in flight (the same user and channel) share one call, and the
  answers are kept a short while (allows for ``allow_ttl``, denials for at most ``DENY_TTL``), so a
  reconnect storm of re-subscribes reaches the app once per user and channel;
- a publish is always asked (each carries its own data, which the app may replace);
- the app's backend taking a user out of a channel (``POST /v1/unsubscribe``) or closing the
  user's sockets (``POST /v1/disconnect``) forgets what was remembered for them, an answer still
  in flight included: the user's next subscribe asks the app again;
- no answer (unreachable, slow, an error, a malformed or oversized answer) is ``proxy_unavailable``:
  fail closed, never an allow, and never remembered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from realtime_gateway_protocol.access_token import Claims
from ws_service.domain.clock import Clock
from ws_service.domain.errors import Forbidden

__all__ = ["DENY_TTL", "MAX_REMEMBERED", "AppProxy", "ProxyCall", "ProxyGate", "Verdict"]

DENY_TTL = 1.0
"""Seconds at most a denial is remembered: a grant the app has just made shows up this soon."""
MAX_REMEMBERED = 65_536
"""Subscribe answers kept per replica, the oldest forgotten first (about 200 bytes each)."""


@dataclass(frozen=True, slots=True)
class ProxyCall:
    """One question to the application."""

    url: str
    action: Literal["subscribe", "publish"]
    claims: Claims
    channel: str
    data: Any = None
    """The payload of a publish (absent from a subscribe question)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The application's answer. ``replaces`` says whether ``data`` replaces a publish's
    payload (``"data"`` was in the answer, ``null`` included)."""

    allow: bool
    reason: str | None = None
    replaces: bool = False
    data: Any = None


class AppProxy(Protocol):
    async def ask(self, call: ProxyCall) -> Verdict:
        """The application's answer; raises ``ProxyUnavailable`` when there is none."""
        ...


class ProxyGate:
    """What connections ask: single-flight and short memory for subscribes, publishes as is."""

    def __init__(self, proxy: AppProxy, clock: Clock, *, allow_ttl: float) -> None:
        self._proxy = proxy
        self._clock = clock
        self._allow_ttl = allow_ttl
        self._deny_ttl = min(DENY_TTL, allow_ttl)
        self._remembered: dict[tuple[str, str], tuple[float, Verdict]] = {}
        self._in_flight: dict[tuple[str, str], asyncio.Task[Verdict]] = {}

    async def subscribe(self, url: str, claims: Claims, channel: str) -> None:
        """Raise ``Forbidden`` (the app's reason) or ``ProxyUnavailable`` unless the app allows
        ``claims`` to subscribe to ``channel``."""
        key = (claims.sub, channel)
        remembered = self._remembered.get(key)
        if remembered is not None and remembered[0] > self._clock.monotonic():
            _enforce(remembered[1])
            return
        task = self._in_flight.get(key)
        if task is None:
            call = ProxyCall(url, "subscribe", claims, channel)
            task = asyncio.get_running_loop().create_task(self._ask_once(key, call))
            task.add_done_callback(_retrieved)
            self._in_flight[key] = task
        _enforce(await asyncio.shield(task))

    def forget(self, sub: str, channel: str | None = None) -> None:
        """Drop what is remembered for ``sub`` (in ``channel``, or in every channel): its next
        subscribe asks the app. A call in flight still answers its waiters, but no later
        subscribe shares it and its answer is not remembered."""
        if channel is not None:
            keys = [(sub, channel)]
        else:
            keys = [key for key in (*self._remembered, *self._in_flight) if key[0] == sub]
        for key in keys:
            self._remembered.pop(key, None)
            self._in_flight.pop(key, None)

    async def publish(self, url: str, claims: Claims, channel: str, data: Any) -> Any:
        """What to publish: ``data``, or the app's replacement; raises as ``subscribe``."""
        verdict = await self._proxy.ask(ProxyCall(url, "publish", claims, channel, data))
        _enforce(verdict)
        return verdict.data if verdict.replaces else data

    async def close(self) -> None:
        """Cancel the calls still in flight."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _ask_once(self, key: tuple[str, str], call: ProxyCall) -> Verdict:
        this = asyncio.current_task()
        try:
            verdict = await self._proxy.ask(call)
        finally:
            current = self._in_flight.get(key) is this
            if current:
                del self._in_flight[key]
        if not current:  # forgotten meanwhile: the answer was asked before the app's change
            return verdict
        ttl = self._allow_ttl if verdict.allow else self._deny_ttl
        if ttl > 0:
            self._remember(key, verdict, ttl)
        return verdict

    def _remember(self, key: tuple[str, str], verdict: Verdict, ttl: float) -> None:
        self._remembered.pop(key, None)
        while len(self._remembered) >= MAX_REMEMBERED:
            del self._remembered[next(iter(self._remembered))]
        self._remembered[key] = (self._clock.monotonic() + ttl, verdict)


def _retrieved(task: asyncio.Task[Verdict]) -> None:
    """A shared call whose every waiter has gone still ends quietly."""
    if not task.cancelled():
        task.exception()


def _enforce(verdict: Verdict) -> None:
    if not verdict.allow:
        raise Forbidden(verdict.reason or "the application refused")
