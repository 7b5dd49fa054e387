"""The numbers the gateway's domain enforces, as one value the settings build.

The domain reads nothing else of the configuration: a test builds ``Limits(...)`` with the one
figure it is about and the defaults for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    auth_timeout: float = 10.0
    """Seconds a socket has to authenticate after the upgrade."""
    expiry_warning: float = 60.0
    """Seconds before ``exp`` that ``token_expiring`` is sent (see ``warning_delay``)."""
    leeway: int = 5
    """Seconds past ``exp`` that a token is still accepted, and a socket still open."""
    key_withdrawal_grace: int = 10
    """Seconds a socket of a withdrawn signing key has to renew."""
    max_auth_attempts: int = 3
    """Failed ``auth`` messages before the socket is closed."""
    max_connections_per_user: int = 20
    max_message_bytes: int = 65536
    """Bytes of one message a client may send (larger closes 1009): advertised so that clients
    refuse such a message themselves instead of being closed for it."""
    max_unauthenticated_per_address: int = 32
    """In this process (the settings divide the machine's cap among workers)."""
    max_subscriptions: int = 100
    max_violations: int = 5
    """``bad_request`` errors before the socket is closed."""
    rate_per_second: float = 20.0
    rate_burst: int = 40
    rate_strikes: int = 20
    """Frames refused by the rate limit before the socket is closed."""
    sync_timeout: float = 2.0
    """Seconds a subscribe waits for the bus to confirm it."""
    reply_bytes: int = 262_144
    """Bytes of ``publications`` one ``history`` or recovering ``subscribed`` carries: a quarter
    of the outbox, so a few replies and live messages fit in it together (a channel keeps up to
    its size times ``WS_MAX_MESSAGE_BYTES``, 6.4 MB by default: more than any outbox)."""

    def advertised(self) -> dict[str, float | int]:
        """What ``auth_success`` tells a client of its budget (``limits``)."""
        return {
            "rate_per_second": self.rate_per_second,
            "rate_burst": self.rate_burst,
            "max_subscriptions": self.max_subscriptions,
            "max_message_bytes": self.max_message_bytes,
        }
