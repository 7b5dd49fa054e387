"""Channels and the one home of every per-namespace rule.

A channel is ``namespace:name``. Each namespace resolves once to a :class:`Namespace` that says who
may do what in it and what it keeps (history, presence); the hub, the connection and the settings
parser all read that object, and nothing re-derives a rule from a channel name anywhere else. Adding
a namespace option is a field here, its parsing in the settings, and its tests.

The rules (docs/protocol.md, "Permissions"): an action on a channel is allowed when a scope allows
it (``ns:read`` subscribes and reads history and presence, ``ns:write`` publishes) or when the
token's ``authorization_details`` grant it (RFC 9396: :func:`parse_grants`). The ``user`` namespace
is each user's own inbox: ``user:<sub>`` is readable by that user alone and written only by the
server, whatever the token says. Proxies (``WS_PROXY``) let the app decide too; webhooks report
publishes only from the namespaces that ask (``webhook_publish``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

from realtime_gateway_protocol.access_token import (
    AUTHORIZATION_DETAILS_TYPE,
    MAX_CHANNEL_ACTIONS,
    Claims,
    parse_channel_actions,
)
from ws_service.domain.errors import Forbidden, InvalidChannel
from ws_service.domain.history import HistoryPolicy

__all__ = [
    "ACTIONS",
    "MAX_GRANTS",
    "USER_NAMESPACE",
    "Action",
    "Grants",
    "Namespace",
    "Namespaces",
    "granted",
    "namespace_of",
    "parse_grants",
    "validate_channel",
]

USER_NAMESPACE = "user"
_NAME = re.compile(r"[A-Za-z0-9_.@-]+:[A-Za-z0-9_.:@-]+")
_MAX_LEN = 128

Action = Literal["subscribe", "publish", "history", "presence"]
ACTIONS: frozenset[str] = frozenset(get_args(Action))
_SCOPE_SUFFIX: Mapping[str, str] = {
    "subscribe": ":read",
    "history": ":read",
    "presence": ":read",
    "publish": ":write",
}
_DOING: Mapping[str, str] = {
    "subscribe": "subscribing",
    "history": "reading history",
    "presence": "reading presence",
    "publish": "publishing",
}

Grants = frozenset[tuple[str, str]]
"""``(action, channel)`` pairs; a channel ending in ``*`` is a prefix (``Claims.grants``)."""
MAX_GRANTS = MAX_CHANNEL_ACTIONS
"""Pairs one token may grant (the shared parser refuses more): a check may scan them all, and
every socket keeps them."""


def validate_channel(channel: object) -> str:
    """Return the channel name, or raise ``InvalidChannel``; the namespace is before the first ':'."""
    if not isinstance(channel, str) or len(channel) > _MAX_LEN or not _NAME.fullmatch(channel):
        raise InvalidChannel()
    return channel


def namespace_of(channel: str) -> str:
    return channel.partition(":")[0]


def parse_grants(details: object) -> Grants:
    """The grants of an ``authorization_details`` claim (``None`` when absent).

    Entries of another ``type`` are for other resource servers (RFC 9396 section 2: a token from a
    trusted identity provider may carry them) and are passed over; the ``realtime_channels``
    entries are validated by the one parser the issuer uses too
    (``realtime_gateway_protocol.access_token.parse_channel_actions``), so a grant is never
    read wider or narrower than it was written. Anything malformed raises ``ValueError`` (the token
    is invalid). One set is shared by every token of the same grants.
    """
    if details is None:
        return frozenset()
    if not isinstance(details, list):
        raise ValueError("authorization_details must be a list")
    ours = [entry for entry in details if not _other_type(entry)]
    if not ours:
        return frozenset()
    return _shared(parse_channel_actions(ours))


def _other_type(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("type"), str)
        and entry["type"] != AUTHORIZATION_DETAILS_TYPE
    )


@lru_cache(maxsize=1024)
def _shared(grants: Grants) -> Grants:
    """The first equal set parsed: every socket of the same grants points at one object."""
    return grants


def granted(grants: Grants, action: str, channel: str) -> bool:
    """Whether ``grants`` allow ``action`` on ``channel``, exactly or by a prefix."""
    if not grants:
        return False
    if (action, channel) in grants:
        return True
    return any(
        pattern[-1] == "*" and granted_action == action and channel.startswith(pattern[:-1])
        for granted_action, pattern in grants
    )


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
    subscribe_proxy: str | None = None
    """The application's URL asked about every subscribe the rules allow (``WS_PROXY``)."""
    publish_proxy: str | None = None
    """The application's URL asked about every publish the rules allow; it may replace the data."""

    @property
    def private(self) -> bool:
        """The ``user`` namespace: one inbox per user, written by the server only."""
        return self.name == USER_NAMESPACE

    def check(self, action: Action, channel: str, claims: Claims) -> None:
        """Raise ``Forbidden`` unless ``claims`` may do ``action`` on ``channel`` (a channel of
        this namespace). The server's own publishes are not asked."""
        if self.private:
            if action == "publish":
                raise Forbidden("only the server publishes to user channels")
            if channel != f"{USER_NAMESPACE}:{claims.sub}":
                raise Forbidden("only your own user channel can be subscribed")
            return
        scope = self.name + _SCOPE_SUFFIX[action]
        if scope not in claims.scopes and not granted(claims.grants, action, channel):
            raise Forbidden(f"{_DOING[action]} needs the scope {scope}")

    def server_may_subscribe(self, user: str, channel: str) -> bool:
        """What the server API may not do either: put ``user`` on another user's inbox
        (``user:<sub>`` is readable by that user alone, whoever asks; a backend passing on a
        channel its user chose would otherwise leak every user's private messages)."""
        return not self.private or channel == f"{USER_NAMESPACE}:{user}"


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
