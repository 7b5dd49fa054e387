"""The events the gateway reports to the app's backend (webhooks), made here, delivered elsewhere.

The domain says what happened through :class:`Events`; an :class:`EventSink` takes each event
without waiting (the adapter in ``ws_service.webhooks`` queues it and POSTs batches, signed and
retried, at least once). A socket never waits for a webhook, and a sink that cannot take an event
counts and logs it: nothing here can slow or fail a socket.

Every event is ``{"id", "type", "ts", "user", "session", ...}``: ``id`` is unique (the app drops
duplicates by it, since delivery is at least once), ``ts`` is milliseconds since the epoch. Presence
events are once per user (the presence backend decides the transition on one replica), so their
``session`` is null.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from realtime_gateway_protocol.access_token import Claims
from ws_service.domain.clock import Clock, LoopClock
from ws_service.domain.presence import Member

__all__ = ["EventSink", "Events", "NoEvents"]


class EventSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None:
        """Take one event for delivery; return at once and never raise."""


class NoEvents:
    """No ``WS_WEBHOOK_URL``: nothing is reported."""

    def emit(self, event: dict[str, Any]) -> None:
        return


class Events:
    __slots__ = ("_clock", "_new_id", "_sink", "enabled")

    def __init__(
        self,
        sink: EventSink | None = None,
        *,
        clock: Clock | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._sink: EventSink = sink or NoEvents()
        self.enabled = sink is not None
        """False without a sink: callers may skip building an event's fields."""
        self._clock: Clock = clock or LoopClock()
        self._new_id = new_id

    def _emit(self, kind: str, user: str | None, session: str | None, **fields: Any) -> None:
        if not self.enabled:
            return
        self._sink.emit(
            {
                "id": self._new_id(),
                "type": kind,
                "ts": int(self._clock.time() * 1000),
                "user": user,
                "session": session or None,  # a trusted IdP's token may carry no sid
                **fields,
            }
        )

    def connect(self, claims: Claims) -> None:
        self._emit("connect", claims.sub, claims.sid)

    def disconnect(self, claims: Claims, code: int | None, reason: str) -> None:
        """``code`` and ``reason`` of the server's close; ``None`` and ``connection_closed`` when
        the client left (or the connection dropped)."""
        self._emit("disconnect", claims.sub, claims.sid, code=code, reason=reason)

    def session_changed(self, before: Claims, after: Claims) -> None:
        """A socket renewed in-band with a token of another session of its user (a new token
        exchange, for new grants): its ``connect`` named the old session and its ``disconnect``
        will name the new one, so an app that keeps sockets by session hears the move."""
        self._emit("session_changed", after.sub, after.sid, previous_session=before.sid or None)

    def subscribe(self, claims: Claims, channel: str, reason: str) -> None:
        """``reason``: ``client`` (a ``subscribe`` frame) or ``server`` (``POST /v1/subscribe``)."""
        self._emit("subscribe", claims.sub, claims.sid, channel=channel, reason=reason)

    def unsubscribe(self, claims: Claims, channel: str, reason: str) -> None:
        """``reason``: ``client``, ``server``, ``permission_revoked`` (a renewed token cannot
        read the channel, as the socket's ``unsubscribed`` frame says) or ``disconnect`` (the
        socket closed)."""
        self._emit("unsubscribe", claims.sub, claims.sid, channel=channel, reason=reason)

    def presence(self, kind: str, channel: str, member: Member) -> None:
        """A presence backend saw ``member`` join (first socket) or leave (last socket)."""
        self._emit(f"presence_{kind}", member.id, None, channel=channel, username=member.username)

    def publish(self, channel: str, data: Any, sender: Claims | None) -> None:
        """A message published to a channel whose namespace asks for these (``WS_WEBHOOK_PUBLISH``);
        ``user`` is null for the server's own publishes."""
        self._emit(
            "publish",
            sender.sub if sender is not None else None,
            sender.sid if sender is not None else None,
            channel=channel,
            data=data,
        )
