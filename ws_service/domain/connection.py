"""One socket's state machine, free of aiohttp: it reads text, and writes through a ``Peer``.

The state is one :class:`State`, and each state has at most one deadline in the gateway's coalesced
``Deadlines``: ``AWAITING_AUTH`` the auth timeout, ``AUTHENTICATED`` the expiry warning,
``EXPIRING`` (warned) the expiry itself; ``CLOSING`` none. docs/protocol.md has the transition
table, and tests/unit/ws/test_connection_states.py drives every row of it on a fake clock.

Everything a connection needs that is the same for every socket of a gateway (limits, metrics,
hub, admission, timers, clock) is one shared :class:`Context`: one reference per socket.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Final, Protocol, TypeVar

from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.close_codes import Disconnect
from realtime_gateway_protocol.frames import PREAUTH_MAX_BYTES
from shared.bus import BusUnavailable
from shared.jsonlog import REQUEST_ID, audit
from ws_service.domain import protocol
from ws_service.domain.clock import Clock
from ws_service.domain.deadlines import Deadlines
from ws_service.domain.errors import (
    AuthError,
    AuthTimeout,
    BadRequest,
    Forbidden,
    InvalidProof,
    InvalidToken,
    NotAuthenticated,
    NotEnabled,
    NotSubscribed,
    ProxyUnavailable,
    RateLimited,
    RequestError,
    SessionRevoked,
    SubjectMismatch,
    TokenExpired,
    TooManySubscriptions,
    Unavailable,
)
from ws_service.domain.history import MAX_EPOCH_LENGTH, MAX_OFFSET, HistoryPage, Position
from ws_service.domain.hub import Hub
from ws_service.domain.limits import Limits
from ws_service.domain.namespaces import Action, Namespaces, validate_channel
from ws_service.domain.presence import Member
from ws_service.domain.proxy import ProxyGate
from ws_service.domain.ratelimit import TokenBucket
from ws_service.domain.telemetry import GatewayMetrics
from ws_service.domain.webhooks import Events

__all__ = ["SERVER", "Admission", "Connection", "Context", "Peer", "State", "warning_delay"]

T = TypeVar("T")

SERVER = "server"
"""The ``reason`` of a ``subscribed`` or ``unsubscribed`` frame the app's backend caused."""


class State(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    """Upgraded, not authenticated: only ``auth`` is accepted, until the auth timeout."""
    CHECKING = "checking"
    """An ``auth`` (or a handshake credential) arrived in time and is being checked. The auth
    timeout no longer closes the socket: in a reconnect storm the server's own backlog, not the
    client, would be timed, and every client closed that way comes back to be checked again. The
    checks' own timeouts (key set fetch, Redis) bound this state; a refusal after the deadline
    passed is final."""
    AUTHENTICATED = "authenticated"
    """Until the expiry warning; a renewal keeps it here with the new token."""
    EXPIRING = "expiring"
    """``token_expiring`` was sent: a renewal goes back to ``AUTHENTICATED``, else it closes."""
    CLOSING = "closing"
    """A close was asked or the peer left; nothing more is read or scheduled."""


class Peer(Protocol):
    """The transport: both calls queue and return at once."""

    def send(self, text: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    @property
    def server_close(self) -> tuple[int, str] | None:
        """The close this side asked for, by whatever asked (a drain, a shutdown, a full
        outbox close the transport without the connection), or None."""


class Admission(Protocol):
    """Who may hold a socket: token checks (revocations included) and the per-user index."""

    async def authenticate(self, token: str, proof: str | None) -> Claims:
        """``proof``: the ``auth`` frame's DPoP proof, demanded when the token is bound."""
        ...

    async def admit(self, conn: Connection, claims: Claims) -> None:
        """Raise ``TooManyConnections`` when the user is at the limit; leave ``conn`` out if it
        started closing meanwhile."""
        ...

    def forget(self, conn: Connection) -> None: ...


@dataclass(frozen=True, slots=True, eq=False)
class Context:
    """What every connection of one gateway shares."""

    limits: Limits
    metrics: GatewayMetrics
    hub: Hub
    namespaces: Namespaces
    admission: Admission
    deadlines: Deadlines
    clock: Clock
    events: Events = field(default_factory=Events)
    proxies: ProxyGate | None = None
    """Asks the application where a namespace has a proxy (``None``: none is configured)."""
    random: Callable[[], float] = field(default=random.random)
    advertised_limits: dict[str, float | int] = field(init=False)
    """``limits.advertised()``, built once: every first ``auth_success`` carries it (read only)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "advertised_limits", self.limits.advertised())


def warning_delay(remaining: float, window: float, rand: float) -> float:
    """Seconds until ``token_expiring``: ``window`` before expiry, earlier by up to 10% of it
    (``rand`` in [0, 1)) so that tokens issued together are not refreshed together; at half the
    remaining life when that is shorter than two windows."""
    if remaining < 2 * window:
        return max(0.0, remaining / 2)
    return remaining - window - rand * 0.1 * window


NO_CHANNELS: Final[dict[str, Position | None]] = {}
"""The channels of every socket that never subscribed: one shared empty dict, never written (the
first subscribe gives the socket a dict of its own; the other writes only ever find a channel in
it), instead of an empty dict per idle socket (64 bytes)."""


class _Held:
    """A channel's live messages held back while joins of it await (most often one): each join
    that holds adds one to ``joins``, and the last to end delivers them."""

    __slots__ = ("frames", "joins")

    def __init__(self) -> None:
        self.frames: list[tuple[str, Position | None]] = []
        self.joins = 0


class Connection:
    __slots__ = (
        "_bucket",
        "_closed_by",
        "_ctx",
        "_deadline",
        "_granted",
        "_held",
        "_joining",
        "_opened",
        "_strikes",
        "_violations",
        "attempts",
        "channels",
        "claims",
        "peer",
        "remote",
        "request_id",
        "serial",
        "state",
    )

    def __init__(
        self,
        ctx: Context,
        peer: Peer,
        remote: str | None,
        serial: int,
        opened: float | None = None,
    ) -> None:
        """``opened``: when the upgrade request arrived, on the clock's monotonic timeline (now
        when not given); the handshake is timed from it."""
        self._ctx = ctx
        self._opened = ctx.clock.monotonic() if opened is None else opened
        self.peer = peer
        self.remote = remote
        self.serial = serial  # unique in its gateway: names its slot in the per-user cap
        self.state = State.AWAITING_AUTH
        self.claims: Claims | None = None
        self.attempts = 0
        # Subscribed channels, each with the position last delivered on it (None until one is, or
        # where the channel keeps no history). One dict, not a set and a dict: an idle socket's
        # state is what a gateway of many sockets pays for.
        self.channels: dict[str, Position | None] = NO_CHANNELS
        # Messages held back per channel while it is being recovered; made on first use.
        self._held: dict[str, _Held] | None = None
        # Channels the app's backend subscribed this socket to: they ask no scope, so a renewal
        # does not check them against the new token's. Made on first use.
        self._granted: set[str] | None = None
        # Channels whose subscribes are under way (the app asked, the join awaiting): how many,
        # and whether a server unsubscribe came meanwhile; made on first use. The channel is
        # then left once its subscribes are done, so the socket's frames and the app's events
        # stay in order and the unsubscribe is never lost.
        self._joining: dict[str, list[int]] | None = None
        self._bucket: TokenBucket | None = None
        self._strikes = 0
        self._violations = 0
        self._closed_by: Disconnect | None = None
        # Its request's id, taken in the socket's task: its deadlines run under it, whatever
        # task reschedules them (a withdrawn key sets the expiry from the task that heard of it).
        self.request_id = REQUEST_ID.get()
        self._deadline: int | None = ctx.deadlines.schedule(ctx.limits.auth_timeout, self)

    @property
    def closing(self) -> bool:
        return self.state is State.CLOSING

    # -- input -----------------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        state = self.state
        if state is State.CLOSING:
            return
        if state is State.AWAITING_AUTH or state is State.CHECKING:
            await self._on_text_unauthenticated(text)
            return
        self._ctx.metrics.messages_in.inc()
        clock = self._ctx.clock
        began = clock.monotonic()
        if not self._admit_rate(began):
            return
        request_id: protocol.RequestId = None
        try:
            request = protocol.parse(text)
            request_id = request.id
            await self._dispatch(request)
        except RequestError as err:
            if isinstance(err, BadRequest) and request_id is None:
                request_id = err.request_id
            self.send(protocol.error(err, request_id))
            if isinstance(err, BadRequest):
                self._violations += 1
                if self._violations >= self._ctx.limits.max_violations:
                    self.close(Disconnect.BAD_REQUEST)
        finally:
            # The frames behind this one waited for it: its awaits are not charged to them.
            assert self._bucket is not None
            self._bucket.stalled(began, clock.monotonic())

    def on_binary(self) -> None:
        """Binary frames are outside the protocol at every stage."""
        self.close(Disconnect.BAD_REQUEST)

    def deliver(self, channel: str, text: str, position: Position | None) -> None:
        """A channel broadcast; the hub counts these in bulk. Held back while the channel is
        being recovered, and dropped when its offset was already delivered."""
        held = self._held.get(channel) if self._held else None
        if held is not None:
            held.frames.append((text, position))
        elif position is None or self._advance(channel, position):
            self.peer.send(text)

    def _advance(self, channel: str, position: Position) -> bool:
        """Whether ``position`` comes after the last one delivered on ``channel`` (and note it).
        One past the next the socket expects means it missed messages (they reached Redis's
        history while this replica's subscription to the bus was cut, a failover): delivering it
        would leave a gap the client never sees, so the socket is closed to reconnect and
        recover them with ``since`` (as Centrifugo's "insufficient state" does). A new epoch is a
        new stream, whose first message is offset 1: one past that is the same gap (Redis came
        back empty and took messages before this replica's bus listened again), and the
        recovery then says ``recovered: false``, so the client knows to resynchronise."""
        last = self.channels.get(channel)
        if last is not None:
            if last.epoch == position.epoch:
                if position.offset <= last.offset:
                    return False
                expected = last.offset + 1
            else:
                expected = 1
            if position.offset > expected:
                self.close(Disconnect.MISSED_MESSAGES)
                return False
        if channel in self.channels:
            self.channels[channel] = position
        return True

    def revoke(self, reason: str) -> None:
        self._ctx.metrics.revocations.inc()
        self.send(protocol.reply("revoked", None, reason=reason))
        self.close(Disconnect.SESSION_REVOKED)

    @property
    def live(self) -> bool:
        """Authenticated and not closing: the sockets the server API acts on."""
        return self.state is State.AUTHENTICATED or self.state is State.EXPIRING

    def disconnect(self) -> bool:
        """The app's backend closes this socket (``POST /v1/disconnect``)."""
        if not self.live:
            return False
        self.close(Disconnect.DISCONNECTED)
        return True

    def unsubscribe_by_server(self, channel: str) -> bool:
        """The app's backend takes this socket out of ``channel`` (``POST /v1/unsubscribe``).
        A subscribe still under way (the app's proxy asked, the join awaiting) is let finish,
        answered, then undone: the app's unsubscribe is never lost to one in flight."""
        if not self.live:
            return False
        joining = self._joining
        if joining is not None and channel in joining:
            joining[channel][1] = 1
            return True
        if channel not in self.channels:
            return False
        self._leave(channel, SERVER)
        self.send(protocol.reply("unsubscribed", None, channel=channel, reason=SERVER))
        return True

    async def subscribe_by_server(self, channel: str) -> bool:
        """The app's backend subscribes this socket (``POST /v1/subscribe``): no scope is asked,
        the socket's own subscription limit still holds, and nothing is recovered."""
        if not self.live or channel in self.channels:
            return False
        # Granted before the join awaits: a renewal meanwhile must not ask it a scope (it left
        # the channel, permission_revoked, and the join then answered subscribed regardless).
        if self._granted is None:
            self._granted = set()
        self._granted.add(channel)
        self._start_joining(channel)
        try:
            await self._join(channel, None, False, None, SERVER)
            return not self.closing and channel in self.channels
        except RequestError:
            return False
        finally:
            if channel not in self.channels and self._granted is not None:
                self._granted.discard(channel)
            self._end_joining(channel)

    def disconnected(self) -> None:
        """The socket is gone: drop timers, channels and the user index entry."""
        self.state = State.CLOSING
        self._cancel_deadline()
        self._report_disconnect()
        hub = self._ctx.hub
        for channel in self.channels:
            hub.leave(channel, self)
        self.channels.clear()
        self._held = None
        self._ctx.admission.forget(self)

    def _report_disconnect(self) -> None:
        """The webhook events of an authenticated socket's end: it left each channel, then it
        disconnected, with the server's close or ``connection_closed`` when the client left."""
        events, claims = self._ctx.events, self.claims
        if claims is None or not events.enabled:
            return
        for channel in self.channels:
            events.unsubscribe(claims, channel, "disconnect")
        row = self._closed_by
        if row is not None:
            events.disconnect(claims, row.code, row.reason)
        elif (asked := self.peer.server_close) is not None:
            events.disconnect(claims, *asked)  # the drain's, a shutdown's: the server closed it
        else:
            events.disconnect(claims, None, "connection_closed")

    # -- output ----------------------------------------------------------------------------

    def send(self, text: str) -> None:
        self._ctx.metrics.messages_out.inc()
        self.peer.send(text)

    def close(self, disconnect: Disconnect) -> None:
        if self.state is not State.CLOSING:
            self.state = State.CLOSING
            self._closed_by = disconnect
            self._cancel_deadline()
            self.peer.close(disconnect.code, disconnect.reason)

    # -- authentication --------------------------------------------------------------------

    async def _on_text_unauthenticated(self, text: str) -> None:
        if len(text) > PREAUTH_MAX_BYTES or (
            len(text) * 4 > PREAUTH_MAX_BYTES
            and len(text.encode("utf-8", "surrogatepass")) > PREAUTH_MAX_BYTES
        ):
            self.close(Disconnect.BAD_REQUEST)
            return
        try:
            request = protocol.parse(text)
        except BadRequest:
            self.close(Disconnect.BAD_REQUEST)
            return
        if request.type != "auth":
            self._auth_failed(NotAuthenticated(), request.id, final=True)
            return
        self.state = State.CHECKING
        try:
            claims = await self._verify(request)
            if not self.closing:
                await self._ctx.admission.admit(self, claims)
        except AuthError as err:
            if not self.closing:
                self.attempts += 1
                final = (
                    not err.retry
                    or self.attempts >= self._ctx.limits.max_auth_attempts
                    or self._deadline is None  # the auth timeout passed during the check
                )
                self.state = State.AWAITING_AUTH
                self._auth_failed(err, request.id, final=final)
            return
        if self.closing:
            return
        self._start(claims, request.id)

    async def authenticated_at_handshake(self, claims: Claims) -> None:
        """The upgrade carried a verified bearer subprotocol or ticket: no ``auth`` message."""
        if self.state is State.AWAITING_AUTH:
            self.state = State.CHECKING
        try:
            await self._ctx.admission.admit(self, claims)
        except AuthError as err:
            if not self.closing:
                self._auth_failed(err, None, final=True)
            return
        if not self.closing:
            self._start(claims, None)

    def _start(self, claims: Claims, request_id: protocol.RequestId) -> None:
        limits = self._ctx.limits
        self._bucket = TokenBucket(
            limits.rate_per_second, limits.rate_burst, self._ctx.clock.monotonic()
        )
        self._accept(claims, request_id, renewed=False)
        self._ctx.events.connect(claims)

    async def _renew(self, request: protocol.Request) -> None:
        assert self.claims is not None
        try:
            claims = await self._verify(request)
            if claims.sub != self.claims.sub:
                raise SubjectMismatch()
            if self.claims.jkt is not None and claims.jkt != self.claims.jkt:
                raise SubjectMismatch("the new token is not bound to this socket's DPoP key")
        except AuthError as err:
            if not self.closing:
                final = isinstance(err, SubjectMismatch | SessionRevoked)
                self._auth_failed(err, request.id, final=final)
            return
        if self.closing:
            return
        self._ctx.metrics.renewals.inc()
        namespaces, hub = self._ctx.namespaces, self._ctx.hub
        granted = self._granted or ()
        for channel in sorted(self.channels):
            namespace = namespaces.of(channel)
            try:
                if channel not in granted:  # the app's backend subscribed it: no scope asked
                    namespace.check("subscribe", channel, claims)
                if hub.watching(channel, self):  # subscribed with presence_events
                    namespace.check("presence", channel, claims)
            except Forbidden:
                self._leave(channel, "permission_revoked")
                self.send(
                    protocol.reply(
                        "unsubscribed", None, channel=channel, reason="permission_revoked"
                    )
                )
        before = self.claims
        self._accept(claims, request.id, renewed=True)
        if claims.sid != before.sid:
            self._ctx.events.session_changed(before, claims)

    async def _verify(self, request: protocol.Request) -> Claims:
        token, proof = request.body.get("token"), request.body.get("proof")
        if not isinstance(token, str) or not token:
            raise InvalidToken("auth needs a token")
        if proof is not None and not isinstance(proof, str):
            raise InvalidProof("proof must be a DPoP proof (a JWT string)")
        return await self._ctx.admission.authenticate(token, proof)

    def _accept(self, claims: Claims, request_id: protocol.RequestId, *, renewed: bool) -> None:
        """``AWAITING_AUTH`` or (renewal) ``AUTHENTICATED``/``EXPIRING`` -> ``AUTHENTICATED``."""
        self.claims = claims
        self.state = State.AUTHENTICATED
        self._ctx.metrics.auth_ok.inc()
        if not renewed:
            self._ctx.metrics.handshake.observe(self._ctx.clock.monotonic() - self._opened)
            self._opened = 0.0  # its float (24 bytes) is not kept for the socket's life
        self._schedule_expiry(claims)
        self.send(
            protocol.auth_success(
                claims,
                self._ctx.clock.time(),
                request_id,
                renewed=renewed,
                limits=None if renewed else self._ctx.advertised_limits,
            )
        )

    def _auth_failed(self, err: AuthError, request_id: protocol.RequestId, *, final: bool) -> None:
        """Audited with the user's ``sub`` whenever it is known: the socket's (a renewal) or the
        refused token's, when it was valid (revoked, withdrawn key, the per-user cap)."""
        self._ctx.metrics.auth.labels(err.code).inc()
        audit(
            "ws_auth_failure",
            code=err.code,
            detail=err.message,
            sub=err.subject or (self.claims.sub if self.claims else None),
            remote=self.remote,
            renewal=self.claims is not None,
        )
        self.send(protocol.auth_error(err, request_id, retry=err.retry and not final))
        if final:
            self.close(protocol.disconnect_for(err))

    def _schedule_expiry(self, claims: Claims) -> None:
        """Warn before ``exp``; the warning schedules the close at ``exp`` plus leeway. A renewal
        reschedules both (one deadline at a time: the warning always comes first)."""
        self._cancel_deadline()
        ctx = self._ctx
        remaining = claims.exp - ctx.clock.time()
        warn_in = warning_delay(remaining, ctx.limits.expiry_warning, ctx.random())
        self._deadline = ctx.deadlines.schedule(warn_in, self)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._ctx.deadlines.cancel(self._deadline, self)
            self._deadline = None

    def on_deadline(self) -> None:
        """The one deadline of the current state has come (in ``CHECKING``, the auth timeout:
        ``_deadline`` left ``None`` records that it passed)."""
        self._deadline = None
        state = self.state
        if state is State.AWAITING_AUTH:
            self._auth_failed(AuthTimeout(), None, final=True)
        elif state is State.AUTHENTICATED:
            assert self.claims is not None
            self._on_warning(self.claims)
        elif state is State.EXPIRING:
            self._on_expiry()

    def _on_warning(self, claims: Claims) -> None:
        self._warn(claims.exp, claims.exp + self._ctx.limits.leeway)

    def key_withdrawn(self, grace: float) -> None:
        """The key that signed this socket's token was withdrawn: the token now expires ``grace``
        seconds from now (or at its own ``exp``, when sooner), announced as an expiry warning is,
        so that a client renews with a token of a good key or is closed ``token_expired``. Heard
        again (the refetched key set, each auth replica's announcement), it changes nothing."""
        if self.claims is None or self.closing:
            return
        deadlines = self._ctx.deadlines
        if (
            self.state is State.EXPIRING
            and self._deadline is not None
            and deadlines.due_in(self._deadline) <= grace + deadlines.tick
        ):
            return  # warned already, closing within the grace: the same withdrawal heard again
        close_at = self._ctx.clock.time() + grace
        if self.claims.exp + self._ctx.limits.leeway <= close_at:
            self._on_warning(self.claims)
        else:
            self._warn(int(close_at), close_at)

    def _warn(self, expires_at: int, close_at: float) -> None:
        """-> ``EXPIRING``: send ``token_expiring`` for ``expires_at`` and close at ``close_at``
        unless renewed."""
        if self.closing:
            return
        self._cancel_deadline()
        self.state = State.EXPIRING
        ctx = self._ctx
        now = ctx.clock.time()
        self._deadline = ctx.deadlines.schedule(close_at - now, self)
        ctx.metrics.warnings.inc()
        self.send(
            protocol.reply(
                "token_expiring",
                None,
                expires_in=max(0, expires_at - int(now)),
                expires_at=expires_at,
            )
        )

    def _on_expiry(self) -> None:
        if self.closing:
            return
        self._ctx.metrics.expiries.inc()
        self._auth_failed(TokenExpired(), None, final=True)

    # -- authenticated requests ------------------------------------------------------------

    def _admit_rate(self, now: float) -> bool:
        assert self._bucket is not None
        if self._bucket.take(now):
            if self._bucket.full:
                self._strikes = 0
            return True
        self._strikes += 1
        if self._strikes >= self._ctx.limits.rate_strikes:
            self.close(Disconnect.RATE_LIMITED)
        else:
            self.send(protocol.error(RateLimited(), None))
        return False

    async def _dispatch(self, request: protocol.Request) -> None:
        assert self.claims is not None
        kind = request.type
        if kind == "ping":
            self.send(protocol.reply("pong", request.id))
        elif kind == "publish":
            channel = self._permitted_channel(request, "publish")
            if "data" not in request.body:
                raise BadRequest("publish needs data")
            data = request.body["data"]
            url = self._ctx.namespaces.of(channel).publish_proxy
            if url is not None:
                data = await self._proxies().publish(url, self.claims, channel, data)
                if self.closing:
                    return
            await self._ctx.hub.publish(channel, data, self.claims)
            self.send(protocol.reply("published", request.id, channel=channel))
        elif kind == "subscribe":
            await self._subscribe(request)
        elif kind == "history":
            await self._history(request)
        elif kind == "presence":
            channel = self._permitted_channel(request, "presence")
            if not self._ctx.namespaces.of(channel).presence:
                raise NotEnabled("this channel's namespace has no presence")
            await self._app_lets_read(channel)
            members = await self._unless_redis_down(self._ctx.hub.members(channel))
            self.send(
                protocol.reply(
                    "presence",
                    request.id,
                    channel=channel,
                    members=[
                        {"user": {"id": m.id, "username": m.username}, "connections": n}
                        for m, n in members
                    ],
                )
            )
        elif kind == "unsubscribe":
            channel = validate_channel(request.body.get("channel"))
            if channel not in self.channels:
                raise NotSubscribed()
            self._leave(channel, "client")
            self.send(protocol.reply("unsubscribed", request.id, channel=channel))
        elif kind == "auth":
            await self._renew(request)
        else:
            raise BadRequest("unknown message type")

    def _proxies(self) -> ProxyGate:
        """Fail closed: a namespace with a proxy and no way to ask it allows nothing."""
        if self._ctx.proxies is None:
            raise ProxyUnavailable()
        return self._ctx.proxies

    def _leave(self, channel: str, reason: str) -> None:
        self.channels.pop(channel, None)
        if self._granted is not None:
            self._granted.discard(channel)
        self._ctx.hub.leave(channel, self)
        if self.claims is not None:
            self._ctx.events.unsubscribe(self.claims, channel, reason)

    def _may(self, action: Action, channel: str) -> bool:
        assert self.claims is not None
        try:
            self._ctx.namespaces.of(channel).check(action, channel, self.claims)
        except Forbidden:
            return False
        return True

    def _permitted_channel(self, request: protocol.Request, action: Action) -> str:
        """The request's channel, once the claims may do ``action`` on it."""
        assert self.claims is not None
        channel = validate_channel(request.body.get("channel"))
        self._ctx.namespaces.of(channel).check(action, channel, self.claims)
        return channel

    async def _subscribe(self, request: protocol.Request) -> None:
        """A client's subscribe: the namespace's rules, then (where the namespace has one) the
        application's proxy, then the join. Server-side subscribes (the server API) join
        without asking the application."""
        assert self.claims is not None
        channel = self._permitted_channel(request, "subscribe")
        since = _position(request.body.get("since"), "since")
        events = request.body.get("presence_events", False)
        if not isinstance(events, bool):
            raise BadRequest("presence_events must be true or false")
        namespace = self._ctx.namespaces.of(channel)
        self._start_joining(channel)
        try:
            if namespace.subscribe_proxy is not None:
                self._check_subscription(channel, since, events)
                await self._proxies().subscribe(namespace.subscribe_proxy, self.claims, channel)
                if self.closing:
                    return
            await self._join(channel, since, events, request.id)
        finally:
            self._end_joining(channel)

    def _start_joining(self, channel: str) -> None:
        """Count a subscribe of ``channel`` as under way."""
        joining = self._joining
        if joining is None:
            joining = self._joining = {}
        entry = joining.get(channel)
        if entry is None:
            entry = joining[channel] = [0, 0]
        entry[0] += 1

    def _end_joining(self, channel: str) -> None:
        """The subscribe is over. If a server unsubscribe came while any subscribe of the
        channel was under way, the channel is left once the last of them is over: each answered
        ``subscribed``, and the socket's last word on the channel is then ``unsubscribed``."""
        joining = self._joining
        entry = joining.get(channel) if joining is not None else None
        if joining is None or entry is None:
            return
        entry[0] -= 1
        if entry[0] > 0:
            return
        del joining[channel]
        if not joining:
            self._joining = None
        if entry[1] and not self.closing and channel in self.channels:
            self._leave(channel, SERVER)
            self.send(protocol.reply("unsubscribed", None, channel=channel, reason=SERVER))

    def _check_subscription(self, channel: str, since: Position | None, events: bool) -> None:
        """What a subscribe must pass before anything is asked or joined."""
        assert self.claims is not None
        namespace = self._ctx.namespaces.of(channel)
        if events:
            if not namespace.presence:
                raise NotEnabled("this channel's namespace has no presence")
            namespace.check("presence", channel, self.claims)
        if since is not None and namespace.history is None:
            raise NotEnabled("this channel's namespace keeps no history to recover from")
        full = len(self.channels) >= self._ctx.limits.max_subscriptions
        if channel not in self.channels and full:
            raise TooManySubscriptions()

    async def _join(
        self,
        channel: str,
        since: Position | None,
        events: bool,
        request_id: protocol.RequestId,
        reason: str | None = None,
    ) -> None:
        """Join first (holding the channel's live messages back), then read what was missed,
        answer, and release the held messages that come after it: no gap, no repeat. The app's
        ``subscribe`` event goes out as the channel is taken, so that whatever takes it away
        while the join awaits (the socket closing, the app's unsubscribe) reports its
        ``unsubscribe`` after it."""
        assert self.claims is not None
        self._check_subscription(channel, since, events)
        namespace = self._ctx.namespaces.of(channel)
        presence, policy = namespace.presence, namespace.history
        # Subscribed already and not recovering: the socket's stream goes on, so what arrives
        # while this join awaits follows what it was sent, not the position the reply reads.
        live = channel in self.channels and since is None
        if channel not in self.channels:
            if self.channels is NO_CHANNELS:
                self.channels = {}
            self.channels[channel] = None
            self._ctx.events.subscribe(self.claims, channel, reason or "client")
        if policy is not None:
            if self._held is None:
                self._held = {}
            held = self._held.get(channel)
            if held is None:  # another join of the channel may hold already: share its frames
                held = self._held[channel] = _Held()
            held.joins += 1
        page: HistoryPage | None = None
        hub = self._ctx.hub
        try:
            hub.join(channel, self, presence_events=events)
            await hub.synced()
            if presence:
                await hub.track(channel, self, Member(self.claims.sub, self.claims.username))
            if policy is not None:
                # Without since, only the position is answered: nothing is read. Recovering is
                # reading history: a token that may subscribe but not read history read every
                # kept message by subscribing with since offset 0 (an outside probe); it gets
                # the position and recovered false.
                read = since if since is not None and self._may("history", channel) else None
                limit = policy.size if read is not None else 0
                try:
                    page = await hub.history(channel, read, limit, self._ctx.limits.reply_bytes)
                except BusUnavailable:
                    page = None
                if page is not None and (
                    read is not since or (page.recovered and not page.complete)
                ):
                    # Not read, or more missed than one reply carries (the client pages with
                    # history).
                    page = replace(page, publications=[], recovered=False)
                sent = self.channels.get(channel)
                if live and page is not None and sent is not None:
                    page = replace(page, position=sent)
            if reason is not None and channel not in self.channels:
                return  # the client left it while the app's subscribe awaited: no longer true
            self.send(
                protocol.subscribed(
                    channel, request_id, page, recovering=since is not None, reason=reason
                )
            )
            if since is not None:
                self._ctx.metrics.recoveries.labels(_outcome(page)).inc()
        finally:
            if policy is not None:
                self._release(channel, None if live else page)

    def _release(self, channel: str, page: HistoryPage | None) -> None:
        """One join of ``channel`` is over: its reply went out with ``page``, whose position (a
        later one than the socket's) the socket's stream now goes on from. The last join to end
        delivers what was held after that, or, with no such page, after what the socket was
        last sent: no gap, no repeat."""
        held = self._held.get(channel) if self._held else None
        if held is None:
            return
        held.joins -= 1
        live = not self.closing and channel in self.channels
        if live and page is not None:
            self._skip_to(channel, page.position)
        if held.joins > 0:
            return
        assert self._held is not None
        del self._held[channel]
        if not self._held:
            self._held = None
        if not live:
            return
        for text, position in held.frames:
            if position is None or self._advance(channel, position):
                self.peer.send(text)

    def _skip_to(self, channel: str, position: Position) -> None:
        """A reply's position becomes the channel's, unless one past it already is (another
        join's reply, in the same stream, went further)."""
        last = self.channels.get(channel)
        if last is None or last.epoch != position.epoch or last.offset < position.offset:
            self.channels[channel] = position

    async def _app_lets_read(self, channel: str) -> None:
        """For a ``history`` or ``presence`` request, once every check of the gateway's own
        passed: in a namespace whose subscribes the app's proxy decides, the app must let this
        user subscribe to the channel (unless the socket is subscribed already, which it did):
        what a user may not subscribe to, it may not read either."""
        assert self.claims is not None
        proxy = self._ctx.namespaces.of(channel).subscribe_proxy
        if proxy is not None and channel not in self.channels:
            await self._proxies().subscribe(proxy, self.claims, channel)

    async def _history(self, request: protocol.Request) -> None:
        channel = self._permitted_channel(request, "history")
        since = _position(request.body.get("since"), "since")
        limit = request.body.get("limit", 1_000_000)
        # Bounded as offsets are: Redis's XRANGE COUNT takes no more.
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_OFFSET:
            raise BadRequest("limit must be an integer from 0 to 2^63-1")
        if self._ctx.namespaces.of(channel).history is None:
            raise NotEnabled("this channel's namespace keeps no history")
        await self._app_lets_read(channel)
        budget = self._ctx.limits.reply_bytes
        page = await self._unless_redis_down(self._ctx.hub.history(channel, since, limit, budget))
        self.send(protocol.history(channel, request.id, page, recovering=since is not None))

    async def _unless_redis_down(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except BusUnavailable:
            raise Unavailable() from None


def _position(value: object, name: str) -> Position | None:
    """A client's ``{"offset", "epoch"}``; None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object with offset and epoch")
    offset, epoch = value.get("offset"), value.get("epoch")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise BadRequest(f"{name}.offset must be an integer from 0 to 2^63-1")
    if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
        raise BadRequest(f"{name}.epoch must be a string of 1 to {MAX_EPOCH_LENGTH} characters")
    return Position(offset, epoch)


def _outcome(page: HistoryPage | None) -> str:
    if page is None:
        return "unavailable"
    return "recovered" if page.recovered else "not_recovered"
