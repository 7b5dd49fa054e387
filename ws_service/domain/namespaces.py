"""Channels and the one home of every per-namespace rule.

A channel is ``namespace:name``. Each namespace resolves once to a :class:`Namespace` that says who
may read and write it and what it keeps (history, presence); the hub, the connection and the
settings parser all read that object, and nothing re-derives a rule from a channel name anywhere
else. Adding a namespace option is a field here, its parsing in the settings, and its tests.

Webhooks report publishes only from the namespaces that ask (``webhook_publish``).

The rules today: ``ns:read`` subscribes (and reads history and presence), ``ns:write`` publishes,
and the ``user`` namespace is each user's own inbox: ``user:<sub>`` is readable by that user
alone and written only by the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from realtime_gateway_protocol.access_token import Claims
from ws_service.domain.errors import Forbidden, InvalidChannel
from ws_service.domain.history import HistoryPolicy

__all__ = ["USER_NAMESPACE", "Namespace", "Namespaces", "namespace_of", "validate_channel"]

USER_NAMESPACE = "user"
_NAME = re.compile(r"[A-Za-z0-9_.@-]+:[A-Za-z0-9_.:@-]+")
_MAX_LEN = 128


def validate_channel(channel: object) -> str:
    """Return the channel name, or raise ``InvalidChannel``; the namespace is before the first ':'."""
    if not isinstance(channel, str) or len(channel) > _MAX_LEN or not _NAME.fullmatch(channel):
        raise InvalidChannel()
    return channel


def namespace_of(channel: str) -> str:
    return channel.partition(":")[0]


@dataclass(frozen=True, slots=True)
class Namespace:
    """Everything the gateway decides per namespace."""

    name: str
    history: HistoryPolicy | None = None
    """What is kept for recovery; None keeps nothing."""
    presence: bool = False
    """Whether subscribers are counted and ``join``/``leave`` announced."""
    webhook_publish: bool = False
    """Whether each message published here is reported to the app as a ``publish`` webhook."""

    @property
    def private(self) -> bool:
        """The ``user`` namespace: one inbox per user, written by the server only."""
        return self.name == USER_NAMESPACE

    def check_read(self, channel: str, claims: Claims) -> None:
        """May ``claims`` subscribe to ``channel`` (and read its history and presence)?"""
        if self.private:
            if channel != f"{USER_NAMESPACE}:{claims.sub}":
                raise Forbidden("only your own user channel can be subscribed")
        elif f"{self.name}:read" not in claims.scopes:
            raise Forbidden(f"subscribing needs the scope {self.name}:read")

    def check_write(self, channel: str, claims: Claims) -> None:
        """May ``claims`` publish to ``channel``? (The server's own publishes are not asked.)"""
        if self.private:
            raise Forbidden("only the server publishes to user channels")
        if f"{self.name}:write" not in claims.scopes:
            raise Forbidden(f"publishing needs the scope {self.name}:write")


class Namespaces:
    """The configured namespaces; any other namespace gets the defaults (no history, no
    presence, scopes as above). ``of`` is a dict lookup: it runs for every message."""

    __slots__ = ("_configured", "_resolved")

    def __init__(self, configured: Iterable[Namespace] = ()) -> None:
        self._configured = {ns.name: ns for ns in configured}
        if USER_NAMESPACE in self._configured:
            raise ValueError(f"the private {USER_NAMESPACE} namespace cannot be configured")
        self._resolved: dict[str, Namespace] = dict(self._configured)

    def of(self, channel: str) -> Namespace:
        name = namespace_of(channel)
        namespace = self._resolved.get(name)
        if namespace is None:
            namespace = Namespace(name)
            if len(self._resolved) < len(self._configured) + 1024:
                self._resolved[name] = namespace
        return namespace

    def configured(self) -> list[Namespace]:
        return sorted(self._configured.values(), key=lambda ns: ns.name)
