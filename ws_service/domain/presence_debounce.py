"""Debounced ``join``/``leave`` frames: what one replica shows its watchers of a channel.

The presence backends announce every move of a user between zero and one connection in a channel,
on ``pres:{<channel>}``, in one order that every replica receives. A user whose only tab reconnects,
or who toggles, would send each watcher a ``leave`` and a ``join`` per toggle. So each replica
passes the announcements through this filter, per (channel, user), before its watchers see them:

- a ``leave`` is held for the window: a ``join`` within it cancels both (nothing is shown);
- after a frame is shown, the next one for that user waits until the window has passed since;
- when a wait ends, the frame shown is the user's state at that moment, if it differs from the
  state last shown (a burst of moves shows at most its net effect).

So a user costs each watcher at most one frame per window, and watchers see the real state at most
one window after the last move (a ``join`` after a long absence is shown at once). The filter keeps
state only for users that moved within the last window or two. Every replica filters
the same announcements, so replicas with watchers agree, to within their clocks' scheduling.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ws_service.domain.clock import Clock, Timer

__all__ = ["PresenceDebounce"]

log = logging.getLogger(__name__)

JOIN, LEAVE = "join", "leave"


@dataclass(slots=True)
class _User:
    shown: str
    """The kind watchers last saw (before anything is shown: the opposite of the first move)."""
    actual: str
    payload: str
    """The frame of the last move, shown as it is."""
    quiet_until: float
    timer: Timer | None = None


class PresenceDebounce:
    def __init__(
        self,
        window: float,
        show: Callable[[str, str], None],
        clock: Clock,
    ) -> None:
        """``show(channel, frame)`` delivers to the channel's watchers."""
        self._window = window
        self._show = show
        self._clock = clock
        self._users: dict[str, dict[str, _User]] = {}

    def announce(self, channel: str, payload: str) -> None:
        """One ``join`` or ``leave`` frame from the bus."""
        if self._window <= 0:
            self._show(channel, payload)
            return
        try:
            event = json.loads(payload)
            kind, uid = event["type"], str(event["user"]["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("presence frame shown undebounced", extra={"channel": channel})
            self._show(channel, payload)
            return
        now = self._clock.monotonic()
        users = self._users.setdefault(channel, {})
        user = users.get(uid)
        if user is None:
            shown = LEAVE if kind == JOIN else JOIN
            user = users[uid] = _User(shown, kind, payload, quiet_until=now)
        user.actual, user.payload = kind, payload
        if kind == LEAVE:
            self._wake(channel, uid, user, max(user.quiet_until, now + self._window))
        elif user.shown != JOIN and now >= user.quiet_until:
            self._display(channel, uid, user, now)
        else:
            self._wake(channel, uid, user, max(user.quiet_until, now))

    def forget(self, channel: str) -> None:
        """The channel has no watcher left on this replica."""
        for user in self._users.pop(channel, {}).values():
            if user.timer is not None:
                user.timer.cancel()

    def close(self) -> None:
        for channel in list(self._users):
            self.forget(channel)

    def _display(self, channel: str, uid: str, user: _User, now: float) -> None:
        user.shown = user.actual
        user.quiet_until = now + self._window
        self._show(channel, user.payload)
        self._wake(channel, uid, user, user.quiet_until)

    def _wake(self, channel: str, uid: str, user: _User, at: float) -> None:
        if user.timer is not None:
            user.timer.cancel()
        user.timer = self._clock.call_at(at, lambda: self._due(channel, uid))

    def _due(self, channel: str, uid: str) -> None:
        users = self._users.get(channel, {})
        user = users.get(uid)
        if user is None:
            return
        user.timer = None
        if user.actual != user.shown:
            self._display(channel, uid, user, self._clock.monotonic())
            return
        del users[uid]
        if not users:
            del self._users[channel]
