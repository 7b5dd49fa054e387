"""Channel names and who may use them: ``ns:read`` to subscribe, ``ns:write`` to publish, and the
``user`` namespace reserved for each user's own inbox, written only by the server."""

from __future__ import annotations

import re
from collections.abc import Set

from ws_service.domain.errors import Forbidden, InvalidChannel

__all__ = [
    "USER_NAMESPACE",
    "check_publish",
    "check_subscribe",
    "namespace_of",
    "validate_channel",
]

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


def check_subscribe(channel: str, sub: str, scopes: Set[str]) -> None:
    namespace = namespace_of(channel)
    if namespace == USER_NAMESPACE:
        if channel != f"{USER_NAMESPACE}:{sub}":
            raise Forbidden("only your own user channel can be subscribed")
    elif f"{namespace}:read" not in scopes:
        raise Forbidden(f"subscribing needs the scope {namespace}:read")


def check_publish(channel: str, scopes: Set[str]) -> None:
    namespace = namespace_of(channel)
    if namespace == USER_NAMESPACE:
        raise Forbidden("only the server publishes to user channels")
    if f"{namespace}:write" not in scopes:
        raise Forbidden(f"publishing needs the scope {namespace}:write")
