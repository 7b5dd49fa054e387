"""An asyncio client for the gateway: REST login and refresh against auth_service, in-band auth and
renewal on the socket, and reconnects that re-authenticate and re-subscribe.

    async with GatewayClient("http://127.0.0.1:8081", "ws://127.0.0.1:8082/ws", "alice", pw) as c:
        await c.subscribe("chat:lobby")
        await c.publish("chat:lobby", {"text": "hi"})
        async for message in c.messages():
            print(message["from_username"], message["data"])

In channels with history the client remembers each channel's position (the ``offset`` and
``epoch`` of the last message) and resubscribes with ``since`` after every reconnect, so the
messages missed meanwhile come out of ``messages()`` in order, exactly once. When the server cannot
recover them (``recovered: false``), ``on_event`` gets ``{"type": "recovery", "channel": ...,
"recovered": False}``: resynchronise that channel from your own source (``history()`` helps).

The password is used once, by ``start()``, and then forgotten: when the session ends
(``AuthenticationFailed``) make a new client with fresh credentials. Messages wait for
``messages()`` in a queue bounded in bytes (``max_queued_bytes``): when a message would overflow it,
the client drops the socket instead of the message, waits until the queue is half drained, then
reconnects and resubscribes with ``since``, so channels with history lose nothing; other channels
miss what was published meanwhile, as after any disconnect.

With ``dpop=DPoPKey.generate()`` (``realtime_gateway_client.dpop``, the ``[dpop]`` extra) the
tokens are DPoP-bound (RFC 9449): every login, refresh and ``auth`` frame carries a proof signed
with a key that never leaves the process, so a copied token or refresh token is useless elsewhere.

A wrong URL is one error at once (``Unreachable``): until the first connection succeeds nothing is
retried; after it, a refused or failed connection is what a network does, and the client backs off
and reconnects.

Frames are paced by the gateway's own budget (``auth_success``'s ``limits``): a reconnect that
re-subscribes a hundred channels waits its turn rather than be refused as a flood. Each
resubscription carries an id: one left unanswered is asked again, one refused for a passing
reason is retried, and one refused for good (``forbidden``, ``too_many_subscriptions``...) drops
the channel and gives ``on_event`` ``{"type": "resubscribe_failed", "channel", "code",
"message"}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn, Protocol

import aiohttp

from realtime_gateway_protocol import wire_json
from realtime_gateway_protocol.backoff import backoff_delay
from realtime_gateway_protocol.close_codes import Action, CloseCode, Disconnect, action_for
from realtime_gateway_protocol.frames import MAX_EPOCH_LENGTH, MAX_OFFSET
from realtime_gateway_protocol.tasks import cancel_and_wait

__all__ = [
    "AuthApi",
    "AuthenticationFailed",
    "ClientError",
    "FrameTooLarge",
    "GatewayClient",
    "ProofSigner",
    "ProtocolViolation",
    "RequestFailed",
    "RequestTimeout",
    "ServerProtocolError",
    "StateListener",
    "TemporaryFailure",
    "TokenPair",
    "Unreachable",
    "refusing_redirects",
]

log = logging.getLogger(__name__)

StateListener = Callable[[str, str], None]
"""Called with ``(state, detail)`` as the connection changes: ``connected``, ``disconnected``
(close code and reason), ``reconnecting`` (after what delay), ``stopped`` (why)."""


def _user_id(user: Any) -> Any:
    return user.get("id") if isinstance(user, dict) else None


class ClientError(Exception):
    """Root of the client's errors."""


class AuthenticationFailed(ClientError):
    """The credentials or the session are no longer good: log in again."""

    def __init__(self, code: str, message: str = "", close_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.close_code = close_code


class ProtocolViolation(ClientError):
    """The server closed the socket because this client broke the protocol (4400, 1009)."""


class ServerProtocolError(ClientError):
    """The server sent a frame the protocol does not allow: not JSON, not an object, or a field
    the client reads of the wrong type. The client closes the socket with ``close_code`` (1007
    for a payload that is not a JSON object, 1003 for a binary frame, 1002 for the rest) and
    reconnects with backoff, as after any broken connection; before the first connection
    succeeds ``start()`` raises it instead (the URL does not lead to the gateway)."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(f"the server broke the protocol: {reason} (closed {close_code})")
        self.close_code = close_code
        self.reason = reason


class FrameTooLarge(ClientError):
    """The server sent a frame larger than ``max_frame_bytes``: the client closed the socket
    (1009) and stopped, since a resubscription would bring the same frame back from history.
    Not a fault of either side: raise ``max_frame_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the server sent a frame larger than max_frame_bytes ({limit} bytes)")
        self.limit = limit


class TemporaryFailure(ClientError):
    """auth_service refused for now (throttled, unavailable); the credentials may be good: retry
    after ``retry_after`` seconds when the server said so."""

    def __init__(
        self, status: int, code: str, message: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class Unreachable(ClientError):
    """The first contact with a URL failed: nothing listens there, its host name does not resolve,
    or it answered HTTP (``status``) instead of the service: the URL is wrong or the service is
    down. Raised by ``start()`` at once, without retrying."""

    def __init__(self, service: str, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"cannot reach {service} at {url} ({reason})")
        self.url = url
        self.status = status


_FIRST_CONTACT_FAILURES = (
    aiohttp.ClientConnectorError,
    aiohttp.ClientResponseError,
    aiohttp.ServerTimeoutError,
)
"""What a wrong URL raises: refused, unresolvable, timed out, or an HTTP status (not a 101)."""


class _Redirected(aiohttp.ClientResponseError):
    """The gateway's URL answered with a redirect, which the client does not follow."""


def refusing_redirects() -> aiohttp.TraceConfig:
    """For the session the client makes (and one passed to it: ``aiohttp.ClientSession(
    trace_configs=[refusing_redirects()])``): a redirect of the upgrade is refused, not followed.
    aiohttp's ``ws_connect`` follows one, and the next frame is the access token; browsers and
    other WebSocket clients never follow one. Its REST calls ask for no redirects themselves."""

    async def refuse(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        response = params.response
        response.release()
        raise _Redirected(
            response.request_info,
            (),
            status=response.status,
            message=f"a redirect to {response.headers.get('Location', '?')}, not followed",
        )

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(refuse)
    return trace


def _unreachable(service: str, url: str, exc: Exception) -> Unreachable:
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status != 101:
        return Unreachable(service, url, f"HTTP {exc.status}, not a WebSocket", exc.status)
    if isinstance(exc, aiohttp.ClientResponseError):
        return Unreachable(service, url, f"HTTP {exc.status} {exc.message}".strip(), exc.status)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return Unreachable(service, url, f"{exc.host} does not resolve")
        if exc.os_error.errno:
            return Unreachable(service, url, os.strerror(exc.os_error.errno).lower())
    return Unreachable(service, url, str(exc) or type(exc).__name__)


class ConnectionLost(ClientError):
    """The socket closed while the request was waiting for its answer; the client reconnects
    unless the close said to stop. The request may or may not have been done (a ``publish`` is not
    sent again); :meth:`GatewayClient.subscribe` waits for the reconnection and subscribes then."""


class RequestTimeout(ClientError, TimeoutError):
    """No reply within ``request_timeout`` (nor a connection to send the request on); the request
    may yet be done. Also a ``TimeoutError``, which is what this used to raise."""


class RequestFailed(ClientError):
    """The server answered a request with an ``error`` frame; the socket stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class TokenPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 (a token type, not a secret)
    """``DPoP`` when the access token is bound to the client's key."""


class ProofSigner(Protocol):
    """What signs DPoP proofs (``realtime_gateway_client.dpop.DPoPKey``)."""

    def proof(
        self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None
    ) -> str: ...


NONCE_HEADER = "DPoP-Nonce"


MIN_RENEWAL_INTERVAL = 2.0
"""Seconds between the starts of two renewals on a socket at the least (as the JS client), or a
quarter of the token's lifetime (``expires_in``, from auth_service) when that is shorter: the
gateway warns a token at half its life at the earliest, so only a broken one meets it."""
MAX_ANSWER_BYTES = 64 * 1024
"""The largest answer taken from auth_service: a token answer is under 4 KiB."""
MAX_EXPIRES_IN = 366 * 24 * 3600
"""The longest ``expires_in`` believed: anything longer is a broken or hostile answer."""


class AuthApi:
    """auth_service's REST endpoints the client needs. With ``dpop`` every request carries a
    proof, and the server's latest ``DPoP-Nonce`` once it asked for one.

    The password and refresh token go to ``base_url`` and nowhere else: a redirect is not
    followed (aiohttp would send the body again to wherever a 307 or 308 points), and is an
    HTTP status like any other that is not an answer. The answer is read uncompressed, up to
    ``MAX_ANSWER_BYTES``, within ``timeout`` seconds, and must be a token answer."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        dpop: ProofSigner | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._dpop = dpop
        self._nonce: str | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def login(self, username: str, password: str) -> TokenPair:
        return await self._tokens("/v1/login", {"username": username, "password": password})

    async def refresh(self, refresh_token: str) -> TokenPair:
        body = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._tokens("/v1/token", body)

    async def _tokens(
        self, path: str, body: dict[str, str], *, nonce_retry: bool = True
    ) -> TokenPair:
        """Tokens from ``path``; asked for a DPoP nonce (RFC 9449 section 8), once more with it."""
        url = self._base + path
        headers = {"Accept-Encoding": "identity"}
        if self._dpop is not None:
            headers["DPoP"] = self._dpop.proof("POST", url, nonce=self._nonce)
        async with self._session.post(
            url,
            json=body,
            headers=headers,
            allow_redirects=False,
            auto_decompress=False,
            timeout=self._timeout,
        ) as response:
            self._nonce = response.headers.get(NONCE_HEADER, self._nonce)
            try:
                data: Any = wire_json.loads(await _read_capped(response))
            except ValueError:
                data = None
            error = data if isinstance(data, dict) else {}
            code = str(error.get("error", f"http_{response.status}"))
            description = str(error.get("error_description", ""))
            if code == "use_dpop_nonce" and nonce_retry and self._nonce is not None:
                retry = True
            elif response.status in (400, 401, 403):
                raise AuthenticationFailed(code, description)
            elif response.status == 429 or response.status >= 500:
                raise TemporaryFailure(
                    response.status, code, description, _retry_after(response.headers)
                )
            else:
                retry = False
                reason = (
                    _not_tokens(data)
                    if response.status == 200
                    else response.reason or "not a token answer"
                )
                if reason is not None:
                    raise aiohttp.ClientResponseError(
                        response.request_info,
                        response.history,
                        status=response.status,
                        message=reason,
                        headers=response.headers,
                    )
        if retry:
            return await self._tokens(path, body, nonce_retry=False)
        return TokenPair(
            data["access_token"],
            data["refresh_token"],
            data["expires_in"],
            data.get("token_type", "Bearer"),
        )


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The body, or ``ValueError`` past ``MAX_ANSWER_BYTES`` or when it comes compressed."""
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise ValueError("a compressed answer")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise ValueError(f"an answer over {MAX_ANSWER_BYTES} bytes")
    return bytes(body)


def _not_tokens(data: Any) -> str | None:
    """Why a 200 answer is not a token answer (RFC 6749 section 5.1), or ``None``."""
    if not isinstance(data, dict):
        return "not a token answer"
    for name in ("access_token", "refresh_token"):
        token = data.get(name)
        if not isinstance(token, str) or not token or not token.isascii():
            return f"a token answer without a usable {name}"
    expires_in = data.get("expires_in")
    if type(expires_in) is not int or not 0 < expires_in <= MAX_EXPIRES_IN:
        return "a token answer with an expires_in that is not a positive number of seconds"
    if not isinstance(data.get("token_type", "Bearer"), str):
        return "a token answer whose token_type is not a string"
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """RFC 9110's delay-seconds, a decimal integer; anything else (``inf``, ``nan``, ``-5``, an
    HTTP date) is no advice, where ``float`` took ``inf`` and handed it to the caller's sleep."""
    value = headers.get("Retry-After", "").strip()
    return float(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


EventHandler = Callable[[dict[str, Any]], None]
"""Called with ``join``/``leave`` frames and ``{"type": "recovery", "channel", "recovered",
"count"}`` after each resubscription with ``since``."""

_TRANSIENT = (TemporaryFailure, aiohttp.ClientError, OSError, TimeoutError)
"""Failures that pass: the connection loop backs off and tries again."""


QUEUE_FULL = "message_queue_full"
"""The reason of the disconnect the client makes itself when ``messages()`` falls behind."""


class _QueueFull(Exception):
    pass


class _NoAnswer(Exception):
    """The server said nothing before ``connect_timeout``."""


class _Closed(Exception):
    """The socket closed; ``by_client`` when this client closed it for a reason of its own (the
    close table then has no say: the client reconnects)."""

    def __init__(self, code: int | None, reason: str, *, by_client: bool = False) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.by_client = by_client


FRAME_DEPTH = wire_json.MAX_DEPTH + 2
"""Nesting allowed in a server frame: a publication's ``data``, as deep as the gateway lets a
client publish it, sits two levels deeper inside ``subscribed`` and ``history``."""


def _decode(text: str) -> dict[str, Any]:
    """A server frame, decoded as strictly as the gateway decodes ours and checked to hold what
    the client reads without looking again."""
    try:
        frame = wire_json.loads(text, max_depth=FRAME_DEPTH)
    except wire_json.WireJSONError as exc:
        raise ServerProtocolError(aiohttp.WSCloseCode.INVALID_TEXT, str(exc)) from None
    if not isinstance(frame, dict):
        raise ServerProtocolError(
            aiohttp.WSCloseCode.INVALID_TEXT, "a frame that is not a JSON object"
        )
    wrong = _wrong_field(frame)
    if wrong is not None:
        raise ServerProtocolError(
            aiohttp.WSCloseCode.PROTOCOL_ERROR, f"{frame.get('type')!r} frame with a bad {wrong!r}"
        )
    return frame


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_offset(value: Any) -> bool:
    return _is_int(value) and 0 <= value <= MAX_OFFSET


def _is_position(value: Any) -> bool:
    return isinstance(value, dict) and _is_int(value.get("offset")) and _is_str(value.get("epoch"))


def _is_user(value: Any) -> bool:
    return isinstance(value, dict) and _is_str(value.get("id"))


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and item.get("type") == "message" and _wrong_field(item) is None
        for item in value
    )


def _is_members(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and _is_user(item.get("user")) for item in value
    )


_Check = Callable[[Any], bool]

_FIELDS: dict[str, tuple[dict[str, _Check], dict[str, _Check]]] = {
    "auth_success": ({"user": _is_user, "expires_at": _is_int}, {}),
    "auth_error": ({"code": _is_str}, {"retry": lambda value: isinstance(value, bool)}),
    "error": ({"code": _is_str}, {"message": _is_str}),
    "message": ({"channel": _is_str}, {"offset": _is_int, "epoch": _is_str}),
    "subscribed": (
        {"channel": _is_str},
        {
            "position": _is_position,
            "publications": _is_messages,
            "recovered": lambda value: isinstance(value, bool),
        },
    ),
    "history": ({"publications": _is_messages}, {"position": _is_position}),
    "presence": ({"members": _is_members}, {}),
    "join": ({"channel": _is_str, "user": _is_user}, {}),
    "leave": ({"channel": _is_str, "user": _is_user}, {}),
    "token_expiring": ({"expires_at": _is_int}, {}),
    "unsubscribed": ({"channel": _is_str}, {}),
}
"""Per frame type, the fields the client reads: required, then checked when present (the JSON
Schema's server frames, narrowed to what the client uses). Other types pass, for servers newer
than the client."""


def _wrong_field(frame: dict[str, Any]) -> str | None:
    """The first field of ``frame`` that breaks its type's shape, or None."""
    kind = frame.get("type")
    if not isinstance(kind, str):
        return "type"
    request_id = frame.get("id")
    if request_id is not None and not (_is_str(request_id) or _is_int(request_id)):
        return "id"
    required, optional = _FIELDS.get(kind, ({}, {}))
    for name, check in required.items():
        if not check(frame.get(name)):
            return name
    for name, check in optional.items():
        if name in frame and not check(frame[name]):
            return name
    if kind == "message" and ("offset" in frame) != ("epoch" in frame):
        return "offset"
    return None


DEFAULT_RATE = (20.0, 40)
"""The gateway's defaults (``WS_RATE_PER_SECOND``, ``WS_RATE_BURST``), for a gateway that does not
say its own in ``auth_success``'s ``limits``."""

RESUBSCRIBE_RETRIED = frozenset({"unavailable", "proxy_unavailable"})
"""Refusals of a resubscription that a later attempt may not meet; any other is for good."""


class _Pacer:
    """The gateway's per-socket token bucket, mirrored: a frame waits here for its turn rather
    than being dropped there (``rate_limited`` names no id, so the caller would never hear)."""

    __slots__ = ("_burst", "_lock", "_rate", "_stamp", "_tokens", "max_message")

    def __init__(self, limits: Any) -> None:
        rate, burst = DEFAULT_RATE
        self.max_message: int | None = None
        """The gateway's ``max_message_bytes``: a larger frame would close the socket 1009."""
        if isinstance(limits, dict):
            said_max = limits.get("max_message_bytes")
            if type(said_max) is int and said_max >= 1:
                self.max_message = said_max
            said_rate, said_burst = limits.get("rate_per_second"), limits.get("rate_burst")
            if (
                isinstance(said_rate, int | float)
                and not isinstance(said_rate, bool)
                and 0 < said_rate < math.inf
            ):
                rate = float(said_rate)
            if type(said_burst) is int and said_burst >= 1:
                burst = said_burst
        self._rate = float(rate)
        # One token short of the gateway's: its bucket filled before ours, but floats round.
        self._burst = float(max(1, burst - 1))
        self._tokens = self._burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """Wait for a token; waiters are served in turn."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                # At most a second at a time: a rate of 1e-300 must not overflow the timer.
                await asyncio.sleep(min(1.0, (1.0 - self._tokens) / self._rate))

    def empty(self) -> None:
        """The gateway refused a frame as over its rate: its bucket is empty, so is ours."""
        self._tokens = 0.0
        self._stamp = time.monotonic()


class GatewayClient:
    """One logical connection that survives reconnects. Use as an async context manager."""

    def __init__(
        self,
        auth_url: str,
        ws_url: str,
        username: str,
        password: str,
        *,
        session: aiohttp.ClientSession | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        stable_after: float = 10.0,
        connect_timeout: float = 10.0,
        heartbeat: float = 20.0,
        max_frame_bytes: int = 16 * 1024 * 1024,
        request_timeout: float = 10.0,
        max_queued_bytes: int = 8 * 1024 * 1024,
        on_state: StateListener | None = None,
        on_event: EventHandler | None = None,
        dpop: ProofSigner | None = None,
    ) -> None:
        """``dpop``: a ``realtime_gateway_client.dpop.DPoPKey`` (or another signer) binds the
        tokens to its key; every request and ``auth`` frame then carries a proof.

        The backoff grows with each reconnect and starts again from ``backoff_base`` only after a
        connection stayed up ``stable_after`` seconds: a server that authenticates and then
        closes at once must not earn a reconnect per round trip.

        ``connect_timeout`` bounds each wait of a connection before it is up (the upgrade, each
        answer to ``auth``, the close after a refusal) and the closing handshake.

        ``heartbeat``: seconds of silence from the server after which the client pings it; no
        pong within half that drops the socket and reconnects, so a dead peer (a frozen process,
        a lost route) is found within 1.5 heartbeats instead of never.

        ``max_frame_bytes``: the largest frame taken from the server (a ``subscribed`` frame
        carries a page of history); a larger one stops the client with ``FrameTooLarge``."""
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive: frames are never unbounded")
        self._ws_url = ws_url
        self._dpop = dpop
        self._username = username
        self._password: str | None = password
        self._own_session = session is None
        self._session = session
        self._auth_url = auth_url
        self._api: AuthApi | None = None
        self._backoff = (backoff_base, backoff_cap)
        self._timeout = request_timeout
        self._tokens: TokenPair | None = None
        self._refreshing: asyncio.Task[TokenPair] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._channels: dict[str, bool] = {}
        """Subscribed channels, each with whether it asked for presence events."""
        self._positions: dict[str, dict[str, Any]] = {}
        self._on_event = on_event
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._resubscribing: dict[str, tuple[str, asyncio.Future[bool]]] = {}
        """Resubscriptions sent and not answered: id -> (channel, whether to ask again)."""
        self._pacer: _Pacer | None = None
        """The current socket's frame budget, from its ``auth_success``."""
        self._ids = itertools.count(1)
        self._messages: asyncio.Queue[tuple[dict[str, Any], int] | None] = asyncio.Queue()
        self._max_queued = max_queued_bytes
        self._queued = 0
        self._drained = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._failure: ClientError | None = None
        self._attempt = 0
        self._stable_after = stable_after
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._max_frame = max_frame_bytes
        self._up_since: float | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._renewal: asyncio.Task[None] | None = None
        self._renewed_for: int | None = None
        self._held: int | None = None
        """The expiry of the token the socket holds: its last ``auth_success``'s ``expires_at``."""
        self._last_renewal = -math.inf
        """The expiry this socket's last renewal answered (``token_expiring``'s ``expires_at``)."""
        self._refresh_after = -math.inf
        """``time.monotonic()`` before which auth_service asked not to be asked again (429 or 503
        with ``Retry-After``, at most ``backoff_cap`` seconds)."""
        self._on_state = on_state
        self.connects = 0
        self.refreshes = 0
        self.user: dict[str, Any] | None = None

    @property
    def channels(self) -> frozenset[str]:
        """The channels this client is subscribed to (and re-subscribes after a reconnect)."""
        return frozenset(self._channels)

    def position(self, channel: str) -> dict[str, Any] | None:
        """``{"offset", "epoch"}`` of the last message seen on a channel with history."""
        return self._positions.get(channel)

    async def __aenter__(self) -> GatewayClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Log in, connect and authenticate; raises what the first attempt raises."""
        if self._session is None:
            self._session = aiohttp.ClientSession(trace_configs=[refusing_redirects()])
        try:
            self._api = AuthApi(
                self._session, self._auth_url, self._dpop, timeout=self._connect_timeout
            )
            password, self._password = self._password, None
            if password is None:
                raise ClientError("start() was already called: make a new client to log in again")
            try:
                self._tokens = await self._api.login(self._username, password)
            except _FIRST_CONTACT_FAILURES as exc:
                raise _unreachable("auth_service", self._auth_url, exc) from exc
            except TimeoutError as exc:
                reason = f"no answer within {self._connect_timeout:g} s"
                raise Unreachable("auth_service", self._auth_url, reason) from exc
            self._runner = asyncio.get_running_loop().create_task(self._run())
            connected = asyncio.ensure_future(self._connected.wait())
            await asyncio.wait({connected, self._runner}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            if self._failure is not None:
                raise self._failure
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop, and close the socket and the session even when the caller is being cancelled
        (Ctrl-C): nothing is left open behind it."""
        try:
            # A refresh in flight too: it would go on after close() and fail on the closed
            # session ("Task exception was never retrieved").
            await cancel_and_wait(self._runner, *self._background, self._refreshing)
        finally:
            # Requests in flight end now, as the JavaScript client's do, not at request_timeout.
            self._fail_pending(ConnectionLost("connection closed (close() was called)"))
            if self._runner is None:  # never started: messages() would wait for good
                self._messages.put_nowait(None)
            if self._ws is not None:
                await self._ws.close()
            if self._own_session and self._session is not None:
                await self._session.close()

    async def wait_closed(self) -> None:
        """Return when the client stops; raise the reason when it stopped on an error."""
        if self._runner is not None:
            await asyncio.wait({self._runner})
        if self._failure is not None:
            raise self._failure

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Every ``message`` frame from subscribed channels, across reconnects."""
        while True:
            item = await self._messages.get()
            if item is None:
                # The end, for every iterator: one beside this one, or one called later.
                self._messages.put_nowait(None)
                if self._failure is not None:
                    raise self._failure
                return
            frame, size = item
            self._queued -= size
            if self._queued <= self._max_queued // 2:
                self._drained.set()
            yield frame

    async def subscribe(self, channel: str, *, presence_events: bool = False) -> None:
        """Subscribe; with ``presence_events`` ``on_event`` also gets the channel's join/leave."""
        frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
        if presence_events:
            frame["presence_events"] = True
        while True:
            try:
                await self._request(frame)  # its position is taken in stream order (_handle)
                break
            except ConnectionLost:
                # Subscribing twice is harmless, and the new socket has no subscription yet:
                # ask again once reconnected (``_request`` raises why if the client stopped).
                continue
        if channel in self._channels:  # not since dropped by the gateway (``_handle``)
            self._channels[channel] = presence_events

    async def unsubscribe(self, channel: str) -> None:
        """Leave ``channel``. ``not_subscribed`` for a channel this client had is the end asked
        for: a socket that reconnected meanwhile never resubscribed it (it raised before)."""
        subscribed = channel in self._channels
        self._channels.pop(channel, None)
        self._positions.pop(channel, None)
        try:
            await self._request({"type": "unsubscribe", "channel": channel})
        except RequestFailed as exc:
            if not (subscribed and exc.code == "not_subscribed"):
                raise

    async def history(
        self, channel: str, *, limit: int | None = None, since: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The channel's recent messages: ``{"publications": [...], "position": {...}}``.
        A ``limit`` or ``since`` the gateway refuses raises ``ValueError`` and is not sent: each
        would be a protocol violation, and the fifth closes the socket 4400 (the client stops)."""
        if limit is not None and not _is_offset(limit):
            raise ValueError("not sent: limit must be an integer from 0 to 2^63-1")
        if since is not None and not (
            isinstance(since, dict)
            and _is_offset(since.get("offset"))
            and _is_str(since.get("epoch"))
            and 0 < len(since["epoch"]) <= MAX_EPOCH_LENGTH
        ):
            raise ValueError(
                f"not sent: since must be {{'offset': 0 to 2^63-1, 'epoch': 1 to "
                f"{MAX_EPOCH_LENGTH} characters}}, as position() gives it"
            )
        frame: dict[str, Any] = {"type": "history", "channel": channel}
        if limit is not None:
            frame["limit"] = limit
        if since is not None:
            frame["since"] = since
        return await self._request(frame)

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """Who is subscribed: ``[{"user": {"id", "username"}, "connections": n}, ...]``."""
        members: list[dict[str, Any]] = (
            await self._request({"type": "presence", "channel": channel})
        )["members"]
        return members

    async def publish(self, channel: str, data: Any) -> None:
        await self._request({"type": "publish", "channel": channel, "data": data})

    async def refresh(self) -> TokenPair:
        """Refresh the tokens over REST; concurrent callers share one request, because refresh
        tokens rotate and a second use of the old one would look like theft."""
        if self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._do_refresh())
        refreshing = self._refreshing
        try:
            return await asyncio.shield(refreshing)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if refreshing.cancelled() and not (current is not None and current.cancelling()):
                raise ConnectionLost("the client was closed during the refresh") from None
            raise
        finally:
            if self._refreshing is not None and self._refreshing.done():
                self._refreshing = None

    async def _do_refresh(self) -> TokenPair:
        assert self._api is not None and self._tokens is not None
        try:
            self._tokens = await self._api.refresh(self._tokens.refresh_token)
        except TemporaryFailure as exc:
            if exc.retry_after is not None:
                wait = min(exc.retry_after, self._backoff[1])
                self._refresh_after = time.monotonic() + wait
            raise
        self.refreshes += 1
        return self._tokens

    # -- the connection loop ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                await self._after_close(await self._session_until_closed())
        except ClientError as exc:
            self._stop(exc)
        except Exception as exc:
            # A bug, in this client or in what it was given: stop and say so rather than die
            # silently with callers waiting on a client that no longer runs.
            log.exception("the client stopped on an unexpected error")
            failure = ClientError(f"the client stopped on an unexpected error: {exc!r}")
            failure.__cause__ = exc
            self._stop(failure)
        finally:
            self._connected.clear()
            self._messages.put_nowait(None)

    def _stop(self, failure: ClientError) -> None:
        self._failure = failure
        self._fail_pending(failure)
        self._state("stopped", str(failure))

    async def _session_until_closed(self) -> _Closed:
        try:
            await self._session_once()
        except _Closed as closed:
            return closed
        except _QueueFull:
            return _Closed(None, QUEUE_FULL, by_client=True)
        except _TRANSIENT as exc:
            return _Closed(None, str(exc))

    async def _after_close(self, closed: _Closed) -> None:
        """Do what the close-code table says: stop, or wait (backoff with jitter), refresh when
        the table says so, and reconnect. The wait comes first for every reconnect, a refresh's
        included: a server that closes ``token_expired`` at once must not earn a refresh and a
        reconnect per round trip.

        A refresh that fails for a passing reason (auth_service down) is retried by reconnecting:
        the expired token earns a retryable ``token_expired`` and another refresh."""
        self._connected.clear()
        up_since, self._up_since = self._up_since, None
        if (
            up_since is not None
            and asyncio.get_running_loop().time() - up_since >= self._stable_after
        ):
            self._attempt = 0
        self._fail_pending(ConnectionLost(f"connection closed ({closed.code} {closed.reason})"))
        self._state("disconnected", f"{closed.code or ''} {closed.reason}".strip())
        action = Action.RECONNECT if closed.by_client else action_for(closed.code, closed.reason)
        if action is Action.STOP:
            if closed.code in (CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN):
                raise AuthenticationFailed(closed.reason or "unauthorized", close_code=closed.code)
            raise ProtocolViolation(f"closed {closed.code} {closed.reason}")
        if closed.by_client and closed.reason == QUEUE_FULL:
            self._state("reconnecting", "once messages() has taken half of the queued messages")
            await self._drained.wait()
            return
        while True:
            # Not before auth_service's Retry-After: reconnecting with the expired token only
            # earns another refresh, which it asked us not to make yet.
            delay = max(
                backoff_delay(self._attempt, *self._backoff, random.random()),
                self._refresh_after - time.monotonic(),
            )
            self._attempt += 1
            log.info("reconnecting", extra={"code": closed.code, "delay": round(delay, 3)})
            self._state("reconnecting", f"in {delay:.1f} s")
            await asyncio.sleep(delay)
            if action is not Action.REFRESH_THEN_RECONNECT:
                return
            try:
                await self.refresh()
                return
            except _TRANSIENT as exc:
                log.warning("token refresh failed", exc_info=exc)
                if self._refresh_after <= time.monotonic():
                    return  # no advice: reconnect, and the expired token earns a refresh

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        """The socket, within ``connect_timeout``; before the first connection a failure is
        ``Unreachable`` at once."""
        assert self._session is not None
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await self._session.ws_connect(
                    self._ws_url,
                    autoping=True,
                    heartbeat=self._heartbeat,
                    # aiohttp refuses a message of max_msg_size bytes and more: max_frame_bytes
                    # is the largest frame taken, as ws_service's WS_MAX_MESSAGE_BYTES is.
                    max_msg_size=self._max_frame + 1,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self._connect_timeout),
                )
        except _FIRST_CONTACT_FAILURES as exc:
            if self.connects == 0:
                raise _unreachable("the gateway", self._ws_url, exc) from exc
            raise
        except TimeoutError as exc:
            if self.connects == 0:
                raise self._silent("the upgrade") from exc
            raise

    def _silent(self, what: str) -> Unreachable:
        return Unreachable(
            "the gateway", self._ws_url, f"no answer to {what} within {self._connect_timeout:g} s"
        )

    async def _session_once(self) -> NoReturn:
        ws = await self._open()
        async with ws:
            self._ws = ws
            self._pacer = None  # the last socket's; this one's comes with its auth_success
            try:
                await self._authenticate(ws)
                self.connects += 1
                self._up_since = asyncio.get_running_loop().time()
                self._renewed_for = None
                resubscribing = asyncio.get_running_loop().create_task(self._resubscribe(ws))
                self._connected.set()
                self._state("connected", str((self.user or {}).get("username", "")))
                try:
                    while True:
                        frame, size = await self._receive_sized(ws)
                        await self._handle(ws, frame, size)
                finally:
                    await cancel_and_wait(resubscribing)
            except ServerProtocolError as exc:
                await ws.close(code=exc.close_code, message=exc.reason.encode()[:123])
                if self.connects == 0:
                    raise
                raise _Closed(exc.close_code, exc.reason, by_client=True) from exc
            except _NoAnswer as exc:
                if self.connects == 0:
                    raise self._silent("auth") from exc
                raise _Closed(None, str(exc), by_client=True) from exc

    async def _authenticate(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send ``auth`` until it succeeds or the server says to stop. A retryable
        ``token_expired`` earns one refresh per socket: when the fresh token is called expired
        too, another refresh will not help (a skewed clock, a broken server), so the client closes
        as the server would (4401 ``token_expired``), and backs off before refreshing again."""
        assert self._tokens is not None
        refreshed = False
        for attempt in range(3):
            await self._send(ws, self._auth_frame(self._tokens))
            frame = await self._answer(ws)
            if frame.get("type") == "auth_success":
                user = frame.get("user")
                if self.user is not None and _user_id(user) != _user_id(self.user):
                    # A client is one user's: a reconnect that became someone else is not
                    # followed (another login replaced the tokens, or a broken gateway).
                    raise AuthenticationFailed(
                        "user_changed", "the gateway authenticated another user on a reconnect"
                    )
                self.user = user
                self._held = frame["expires_at"]
                self._pacer = _Pacer(frame.get("limits"))
                return
            if not frame.get("retry"):
                break
            # A retryable auth_error's code is a close reason: the table says what helps.
            code = str(frame.get("code"))
            if action_for(CloseCode.UNAUTHORIZED, code) is Action.REFRESH_THEN_RECONNECT:
                if refreshed:
                    raise _Closed(CloseCode.UNAUTHORIZED, code)
                await self.refresh()
                refreshed = True
            else:
                await asyncio.sleep(backoff_delay(attempt, *self._backoff, random.random()))
        # The server closes after a refusal, with the code that says what to do next; one that
        # does not is taken at its word: its refusal's code is that close's reason.
        code = str(frame.get("code"))
        try:
            async with asyncio.timeout(self._connect_timeout):
                while True:
                    await self._receive(ws)
        except TimeoutError:
            row = Disconnect.for_reason(code)
            raise _Closed(row.code if row else CloseCode.UNAUTHORIZED, code) from None

    async def _answer(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        """The server's answer to ``auth``, within ``connect_timeout``. A frame of another type
        before it answers nothing, and is passed over (taken as a refusal, it stopped the client
        for good as ``AuthenticationFailed('None')``)."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                while True:
                    frame = await self._receive(ws)
                    if frame.get("type") in ("auth_success", "auth_error"):
                        return frame
        except TimeoutError:
            raise _NoAnswer(f"no answer to auth within {self._connect_timeout:g} s") from None

    def _auth_frame(self, tokens: TokenPair) -> dict[str, Any]:
        """``auth``, with a fresh proof for ``GET`` of the gateway's URL when the token is bound."""
        frame: dict[str, Any] = {"type": "auth", "token": tokens.access_token}
        if self._dpop is not None and tokens.token_type == "DPoP":  # noqa: S105
            frame["proof"] = self._dpop.proof("GET", self._ws_url, access_token=tokens.access_token)
        return frame

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        return (await self._receive_sized(ws))[0]

    async def _receive_sized(
        self, ws: aiohttp.ClientWebSocketResponse
    ) -> tuple[dict[str, Any], int]:
        """A frame and its size in characters (what it weighs in the message queue)."""
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            return _decode(msg.data), len(msg.data)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            raise _Closed(msg.data, msg.extra or "")
        if msg.type is aiohttp.WSMsgType.BINARY:
            raise ServerProtocolError(aiohttp.WSCloseCode.UNSUPPORTED_DATA, "a binary frame")
        if msg.type is aiohttp.WSMsgType.ERROR and isinstance(msg.data, aiohttp.WebSocketError):
            # aiohttp closed the socket itself, with the error's code (1002, 1007, 1009).
            if msg.data.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                raise FrameTooLarge(self._max_frame)
            raise ServerProtocolError(msg.data.code, str(msg.data) or "a malformed frame")
        if msg.type is aiohttp.WSMsgType.ERROR:
            # No pong to the heartbeat's ping: aiohttp dropped the socket (1006).
            raise _Closed(ws.close_code, str(msg.data), by_client=True)
        raise _Closed(ws.close_code, "")

    async def _handle(
        self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any], size: int
    ) -> None:
        kind = frame.get("type")
        request_id = frame.get("id")
        if isinstance(request_id, str) and request_id in self._pending:
            future = self._pending.pop(request_id)
            if kind == "unsubscribed":
                # Left in stream order too: a subscribe answered just before it (subscribe()
                # then unsubscribe() at once) must not leave the channel recorded, to be
                # subscribed again by every reconnect although the gateway left it.
                self._channels.pop(str(frame.get("channel")), None)
                self._positions.pop(str(frame.get("channel")), None)
            if kind == "subscribed":
                # Its position in its place in the stream: the messages read after it (one read
                # may bring both) are delivered before subscribe() resumes, and the position
                # they moved on must not be taken back (a first message starts an epoch of its
                # own, so "never back within an epoch" did not hold it: delivered twice).
                self._remember(str(frame.get("channel")), frame.get("position"))
                # Subscribed in stream order too: the gateway's ``unsubscribed`` right behind
                # the reply (read before subscribe() resumes) must find the channel to drop.
                self._channels.setdefault(str(frame.get("channel")), False)
            if not future.done():
                future.set_result(frame)
        elif isinstance(request_id, str) and request_id in self._resubscribing:
            self._resubscribed(request_id, frame, size)
        elif kind == "error" and frame.get("code") == "rate_limited" and self._pacer is not None:
            self._pacer.empty()
        elif kind == "message":
            self._deliver(frame, size)
        elif kind == "subscribed":
            self._recovered(frame, size)
        elif kind in ("join", "leave"):
            self._emit(frame)
        elif kind == "token_expiring":
            self._renew_once(ws, frame["expires_at"])
        elif kind == "auth_success":  # a renewal's
            self._held = frame["expires_at"]
        elif kind == "unsubscribed":
            # The gateway's own (the app's backend, or a renewed token that may not read it): the
            # app hears it, or its view of the channel would go silent without a word.
            channel = str(frame.get("channel"))
            self._positions.pop(channel, None)
            if self._channels.pop(channel, None) is not None:
                self._emit(frame)

    # -- positions and recovery ------------------------------------------------------------

    async def _resubscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Every channel again on a new socket, paced with the app's own requests. The answers
        are taken in turn with the stream (``_resubscribed``), so the missed messages come out
        before what follows them; one not answered within ``request_timeout`` (dropped, or lost
        in a proxy) and one refused for a passing reason are asked again after a backoff."""
        loop = asyncio.get_running_loop()
        # Least recently confirmed first (_resubscribed moves a confirmed channel to the end): in
        # a fixed order, sockets that each lived shorter than resubscribing all took (a flapping
        # link) confirmed the same channels every time and never the last ones.
        waiting = list(self._channels)
        attempt = 0
        while waiting:
            asked: dict[str, tuple[str, asyncio.Future[bool]]] = {}
            try:
                for channel in waiting:
                    if channel not in self._channels:
                        continue  # unsubscribed meanwhile
                    request_id = f"s{next(self._ids)}"
                    frame = {
                        **self._resubscription(channel, self._channels[channel]),
                        "id": request_id,
                    }
                    asked[request_id] = self._resubscribing[request_id] = (
                        channel,
                        loop.create_future(),
                    )
                    try:
                        await self._send(ws, frame)
                    except (aiohttp.ClientError, ConnectionError):
                        return  # the socket is closing: the runner hears of it and reconnects
                if asked:
                    await asyncio.wait([f for _, f in asked.values()], timeout=self._timeout)
            finally:
                for request_id in asked:
                    self._resubscribing.pop(request_id, None)
            waiting = [
                channel
                for channel, future in asked.values()
                if channel in self._channels and (not future.done() or future.result())
            ]
            if waiting:
                log.warning("resubscribing again", extra={"channels": len(waiting)})
                await asyncio.sleep(backoff_delay(attempt, *self._backoff, random.random()))
                attempt += 1

    def _resubscribed(self, request_id: str, frame: dict[str, Any], size: int) -> None:
        """A resubscription's answer, in its place in the stream: the channel's missed messages,
        or a refusal: a passing one is asked again, any other drops the channel and says so."""
        channel, future = self._resubscribing.pop(request_id)
        if frame.get("type") != "error":
            if channel in self._channels:
                self._channels[channel] = self._channels.pop(channel)  # confirmed: last in line
                self._recovered(frame, size)
            future.set_result(False)
            return
        code = str(frame.get("code"))
        if code in RESUBSCRIBE_RETRIED:
            future.set_result(True)
            return
        future.set_result(False)
        if self._channels.pop(channel, None) is None:
            return
        self._positions.pop(channel, None)
        message = str(frame.get("message") or "")
        log.warning("resubscription refused", extra={"channel": channel, "code": code})
        self._emit(
            {"type": "resubscribe_failed", "channel": channel, "code": code, "message": message}
        )

    def _resubscription(self, channel: str, presence_events: bool) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
        if presence_events:
            frame["presence_events"] = True
        if channel in self._positions:
            frame["since"] = self._positions[channel]
        return frame

    def _remember(self, channel: str, position: Any) -> None:
        """Note the channel's position, never back past a message already delivered: a reply
        read after the messages that followed it (one read brought both) is older than them."""
        if not (isinstance(position, dict) and "offset" in position and "epoch" in position):
            return
        if not self._seen(channel, position):
            self._positions[channel] = {"offset": position["offset"], "epoch": position["epoch"]}

    def _seen(self, channel: str, position: dict[str, Any]) -> bool:
        """Whether ``position`` (a message's, a reply's) is at or before the channel's: such a
        message was delivered already (a late answer to a resubscription asked twice brings the
        same missed messages again), and such a position would move it back."""
        known = self._positions.get(channel)
        return (
            known is not None
            and known["epoch"] == position.get("epoch")
            and known["offset"] >= position["offset"]
        )

    def _deliver(self, frame: dict[str, Any], size: int) -> None:
        """Queue a message, or raise ``_QueueFull`` before its position is remembered, so the
        resubscription after the reconnect asks for it again."""
        channel = str(frame.get("channel"))
        if "offset" in frame and self._seen(channel, frame):
            return
        if self._queued + size > self._max_queued and self._queued > 0:
            self._drained.clear()
            raise _QueueFull()
        if "offset" in frame:  # past the position (just checked): it moves on
            self._positions[channel] = {"offset": frame["offset"], "epoch": frame["epoch"]}
        self._queued += size
        self._messages.put_nowait((frame, size))

    def _recovered(self, frame: dict[str, Any], size: int) -> None:
        """A resubscription's answer: the missed messages first, then the stream goes on."""
        channel = str(frame.get("channel"))
        publications = frame.get("publications") or []
        share = size // max(1, len(publications))
        for publication in publications:
            self._deliver(publication, share)
        self._remember(channel, frame.get("position"))
        if "recovered" in frame:
            recovered = bool(frame["recovered"])
            if not recovered:
                log.warning("missed messages not recovered", extra={"channel": channel})
            self._emit(
                {
                    "type": "recovery",
                    "channel": channel,
                    "recovered": recovered,
                    "count": len(publications),
                }
            )

    def _emit(self, event: dict[str, Any]) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("on_event handler failed")

    def _renew_once(self, ws: aiohttp.ClientWebSocketResponse, expires_at: int) -> None:
        """One renewal at a time, for a warning about the token the socket holds: its
        ``expires_at`` is that token's (its ``auth_success``'s) or a sooner close (a key
        withdrawal), never a later one. Each refresh rotates the refresh token, so a warning for
        an expiry already renewed is ignored (300 repeats made 300 refreshes), and a renewal
        starts at least ``MIN_RENEWAL_INTERVAL`` after the last (a gateway that warned of each
        new expiry as it confirmed it made 232 refreshes in 5 s); warnings meanwhile join it."""
        if self._held is None or expires_at > self._held or expires_at == self._renewed_for:
            return
        if self._renewal is not None and not self._renewal.done():
            return
        self._renewed_for = expires_at
        spacing = MIN_RENEWAL_INTERVAL
        if self._tokens is not None:  # auth_service's lifetime, not the warning's: tests use 2 s
            spacing = min(spacing, self._tokens.expires_in / 4)
        wait = self._last_renewal + spacing - time.monotonic()
        self._renewal = asyncio.get_running_loop().create_task(self._renew(ws, wait))
        self._background.add(self._renewal)
        self._renewal.add_done_callback(self._background.discard)

    async def _renew(self, ws: aiohttp.ClientWebSocketResponse, wait: float = 0.0) -> None:
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_renewal = time.monotonic()
        try:
            tokens = await self.refresh()
            await self._send(ws, {**self._auth_frame(tokens), "id": "renew"})
        except AuthenticationFailed as exc:
            log.warning("token refresh refused; the socket will close at expiry", exc_info=exc)
        except _TRANSIENT as exc:
            log.warning("token refresh failed", exc_info=exc)

    # -- requests --------------------------------------------------------------------------

    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        if self._failure is not None:
            raise self._failure
        try:
            # What the gateway cannot read it refuses without an id (the request would wait
            # request_timeout), and the fifth such frame closes 4400, which stops the client.
            # The text json.dumps writes is what is judged, as the gateway reads it: a tuple is
            # a list there (check() passed NaN or nesting inside one), an int key a string
            # (check() raised AttributeError on ``{1: "a"}``, which json.dumps writes).
            wire_json.loads(json.dumps(frame))
        except ValueError as exc:  # WireJSONError, or what json.dumps will not write
            raise ValueError(f"not sent: the gateway refuses such a frame ({exc})") from None
        try:
            async with asyncio.timeout(self._timeout):
                ws = await self._connection()
                request_id = f"r{next(self._ids)}"
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._pending[request_id] = future
                try:
                    try:
                        await self._send(ws, {**frame, "id": request_id}, sized=True)
                    except (aiohttp.ClientError, ConnectionError) as exc:
                        # Closing under us: the runner has not heard yet; the next request
                        # waits for the reconnection rather than write to this socket again.
                        if self._ws is ws:
                            self._connected.clear()
                        raise ConnectionLost(f"connection closed ({exc})") from exc
                    reply = await future
                finally:
                    self._pending.pop(request_id, None)
                    if future.done() and not future.cancelled():
                        future.exception()  # failed while its frame waited: retrieved here
        except TimeoutError as exc:
            raise RequestTimeout(f"no reply within {self._timeout:g} s") from exc
        if reply.get("type") == "error":
            raise RequestFailed(str(reply.get("code")), str(reply.get("message")))
        return reply

    async def _connection(self) -> aiohttp.ClientWebSocketResponse:
        """The socket, once connected; raises why the client stopped if it stops first."""
        while not self._connected.is_set():
            if self._runner is None or self._runner.done():
                raise self._failure or ClientError("the client is not running")
            connected = asyncio.ensure_future(self._connected.wait())
            try:
                await asyncio.wait({connected, self._runner}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                connected.cancel()
        assert self._ws is not None
        return self._ws

    async def _send(
        self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any], *, sized: bool = False
    ) -> None:
        """Once authenticated, within the socket's frame budget (``_Pacer``); a ``sized``
        frame (a request) over the gateway's ``max_message_bytes`` raises ``ValueError`` unsent:
        the gateway would close the socket 1009, which stops the client."""
        text = json.dumps(frame)  # ASCII (ensure_ascii): its length is its UTF-8 bytes
        pacer = self._pacer
        if pacer is not None:
            if sized and pacer.max_message is not None and len(text) > pacer.max_message:
                raise ValueError(
                    f"not sent: {len(text)} bytes, over the gateway's max_message_bytes"
                    f" ({pacer.max_message})"
                )
            await pacer.take()
        await ws.send_str(text)

    def _state(self, state: str, detail: str) -> None:
        if self._on_state is not None:
            try:
                self._on_state(state, detail)
            except Exception:
                log.exception("on_state listener failed")

    def _fail_pending(self, exc: ClientError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()
