"""The gateway's domain services in one object: verification, revocations, channels, the index of
authenticated connections by user. One per app; aiohttp stays in the handlers."""

from __future__ import annotations

import logging

from shared.events import SessionRevoked, UserRevoked, decode_event
from ws_service.connection import Connection, Peer
from ws_service.errors import TooManyConnections
from ws_service.hub import Hub
from ws_service.metrics import Metrics
from ws_service.revocations import RevocationRegistry
from ws_service.settings import Settings
from ws_service.verify import Claims, TokenVerifier

__all__ = ["Gateway"]

log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        verifier: TokenVerifier,
        revocations: RevocationRegistry,
        hub: Hub,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self.revocations = revocations
        self.hub = hub
        self.metrics = metrics
        self._users: dict[str, set[Connection]] = {}

    def connect(self, peer: Peer, remote: str | None) -> Connection:
        """A new socket after the upgrade; its auth deadline starts now."""
        self.metrics.awaiting_auth.inc()
        return Connection(self, peer, remote)

    def admit(self, conn: Connection, claims: Claims) -> None:
        """Index a freshly authenticated connection under its user, within the per-user limit."""
        conns = self._users.setdefault(claims.sub, set())
        if len(conns) >= self.settings.max_connections_per_user:
            raise TooManyConnections()
        conns.add(conn)
        self.metrics.awaiting_auth.dec()
        self.metrics.authenticated.inc()

    def forget(self, conn: Connection) -> None:
        if conn.claims is None:
            self.metrics.awaiting_auth.dec()
            return
        self.metrics.authenticated.dec()
        conns = self._users.get(conn.claims.sub)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._users[conn.claims.sub]

    def user_connections(self, sub: str) -> int:
        return len(self._users.get(sub, ()))

    def on_revocation(self, topic: str, payload: str) -> None:
        """Bus handler: remember the revocation and close every socket it covers."""
        try:
            event = decode_event(payload)
        except ValueError:
            log.warning("ignoring malformed revocation event", extra={"topic": topic})
            return
        self.revocations.apply(event)
        for conn in tuple(self._users.get(event.sub, ())):
            claims = conn.claims
            if claims is None or conn.closing:
                continue
            if (isinstance(event, SessionRevoked) and claims.sid == event.sid) or (
                isinstance(event, UserRevoked) and claims.iat < event.issued_before
            ):
                conn.revoke(event.type)
