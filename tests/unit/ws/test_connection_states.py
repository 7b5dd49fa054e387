"""Every transition of one socket's state machine (the table in docs/protocol.md, "Connection
states"), driven with a fake peer, a fake admission and a fake clock: no server, no sleeping.

Each test names its row: ``test_<row>_...``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest

from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.close_codes import Action, Disconnect, action_for
from realtime_gateway_protocol.frames import PREAUTH_MAX_BYTES
from shared.bus import InProcessBus
from tests.support.clock import FakeClock
from tests.unit.ws.fakes import FakeMetrics, FakePeer, HeldPresence, RecordingSink
from ws_service.domain.connection import NO_CHANNELS, Connection, Context, State, warning_delay
from ws_service.domain.deadlines import DEFAULT_TICK, Deadlines
from ws_service.domain.errors import (
    AuthError,
    InvalidProof,
    InvalidToken,
    KeysUnavailable,
    KeyWithdrawn,
    SessionRevoked,
    TokenExpired,
    TooManyConnections,
)
from ws_service.domain.history import HistoryPolicy, MemoryHistory, Position
from ws_service.domain.hub import Hub
from ws_service.domain.limits import Limits
from ws_service.domain.namespaces import Namespace, Namespaces, parse_grants
from ws_service.domain.presence import MemoryPresence
from ws_service.domain.webhooks import Events

TTL = 900
WARNING = 60.0
LEEWAY = 5
AUTH_TIMEOUT = 10.0
TICK = DEFAULT_TICK


class FakeAdmission:
    """Tokens are names: ``tokens[name]`` is the claims they verify to, or the error they raise."""

    def __init__(self) -> None:
        self.tokens: dict[str, Claims | AuthError] = {}
        self.full = False
        self.admitted: list[Connection] = []
        self.forgotten: list[Connection] = []
        self.proofs: list[str | None] = []

    async def authenticate(self, token: str, proof: str | None) -> Claims:
        self.proofs.append(proof)
        outcome = self.tokens.get(token, InvalidToken("unknown token"))
        if isinstance(outcome, AuthError):
            raise outcome
        return outcome

    async def admit(self, conn: Connection, claims: Claims) -> None:
        if self.full:
            raise TooManyConnections()
        self.admitted.append(conn)

    def forget(self, conn: Connection) -> None:
        self.forgotten.append(conn)


class Socket:
    """One connection and everything around it."""

    def __init__(self, **limits: Any) -> None:
        self.clock = FakeClock()
        self.metrics = FakeMetrics()
        self.admission = FakeAdmission()
        bus = InProcessBus()
        self.bus = bus
        namespaces = Namespaces(
            [Namespace("chat", history=HistoryPolicy(100, 300.0), presence=True)]
        )
        self.hub = Hub(
            bus,
            MemoryHistory(bus.publish, clock=self.clock),
            MemoryPresence(bus.publish),
            namespaces,
            clock=self.clock,
            sync_timeout=0.01,
        )
        self.deadlines = Deadlines(self.clock)
        self.ctx = Context(
            limits=Limits(
                auth_timeout=AUTH_TIMEOUT,
                expiry_warning=WARNING,
                leeway=LEEWAY,
                **limits,
            ),
            metrics=self.metrics,
            hub=self.hub,
            namespaces=namespaces,
            admission=self.admission,
            deadlines=self.deadlines,
            clock=self.clock,
            random=lambda: 0.0,
        )
        self.peer = FakePeer()
        self.conn = Connection(self.ctx, self.peer, "10.0.0.1", 1)

    def claims(self, sub: str = "alice", *scopes: str, ttl: int = TTL, sid: str = "s1") -> Claims:
        now = int(self.clock.time())
        scope = frozenset(scopes or ("chat:read", "chat:write"))
        return Claims(sub, sid, now, now + ttl, scope, sub, "k1")

    def token(self, name: str, outcome: Claims | AuthError) -> str:
        self.admission.tokens[name] = outcome
        return name

    async def send(self, frame: dict[str, Any] | str) -> list[dict[str, Any]]:
        await self.conn.on_text(frame if isinstance(frame, str) else json.dumps(frame))
        return self.peer.take()

    async def authenticate(self, claims: Claims | None = None) -> Claims:
        claims = claims or self.claims()
        [reply] = await self.send({"type": "auth", "token": self.token("good", claims)})
        assert reply["type"] == "auth_success", reply
        return claims

    def advance(self, seconds: float) -> list[dict[str, Any]]:
        self.clock.advance(seconds)
        return self.peer.take()

    @property
    def state(self) -> State:
        return self.conn.state


# -- AWAITING_AUTH -------------------------------------------------------------------------------


def test_0_a_new_socket_awaits_auth_with_one_deadline() -> None:
    s = Socket()
    assert s.state is State.AWAITING_AUTH
    assert len(s.deadlines) == 1
    assert s.peer.texts == [] and s.peer.closed is None


async def test_1_a_valid_auth_authenticates() -> None:
    s = Socket()
    claims = s.claims()
    reply = await s.send({"type": "auth", "token": s.token("t", claims), "id": 7})
    assert reply == [
        {
            "type": "auth_success",
            "user": {"id": "alice", "username": "alice"},
            "session": "s1",
            "expires_in": TTL,
            "expires_at": claims.exp,
            "limits": Limits().advertised(),
            "id": 7,
        }
    ]
    assert s.state is State.AUTHENTICATED
    assert s.conn.claims == claims
    assert s.admission.admitted == [s.conn]
    assert s.metrics.counts["auth:ok"] == 1
    assert len(s.deadlines) == 1, "the auth deadline became the warning"


@pytest.mark.parametrize("error", [TokenExpired(), KeysUnavailable(), KeyWithdrawn()])
async def test_2_a_retryable_failure_keeps_waiting(error: AuthError) -> None:
    s = Socket()
    [reply] = await s.send({"type": "auth", "token": s.token("t", error)})
    assert (reply["type"], reply["code"], reply["retry"]) == ("auth_error", error.code, True)
    assert s.state is State.AWAITING_AUTH and s.peer.closed is None
    assert s.metrics.counts[f"auth:{error.code}"] == 1


@pytest.mark.parametrize("error", [TokenExpired(), InvalidProof()])
async def test_2_the_third_retryable_failure_is_final(error: AuthError) -> None:
    s = Socket()
    token = s.token("t", error)
    for attempt in (1, 2, 3):
        [reply] = await s.send({"type": "auth", "token": token, "proof": f"p{attempt}"})
        assert reply["retry"] is (attempt < 3)
    assert s.state is State.CLOSING
    assert s.peer.closed == (4401, error.code)
    assert s.admission.proofs == ["p1", "p2", "p3"], "each auth's own proof is checked"


async def test_2_a_retry_then_success_authenticates() -> None:
    s = Socket()
    await s.send({"type": "auth", "token": s.token("old", KeysUnavailable())})
    await s.authenticate()
    assert s.state is State.AUTHENTICATED


@pytest.mark.parametrize(
    ("error", "close"),
    [
        (InvalidToken(), (4401, "invalid_token")),
        (SessionRevoked(), (4403, "session_revoked")),
        (TooManyConnections(), (4429, "too_many_connections")),
    ],
)
async def test_3_a_final_failure_closes(error: AuthError, close: tuple[int, str]) -> None:
    s = Socket()
    if isinstance(error, TooManyConnections):
        s.admission.full = True
        token = s.token("t", s.claims())
    else:
        token = s.token("t", error)
    [reply] = await s.send({"type": "auth", "token": token})
    assert (reply["type"], reply["code"], reply["retry"]) == ("auth_error", error.code, False)
    assert s.state is State.CLOSING
    assert s.peer.closed == close
    assert len(s.deadlines) == 0


@pytest.mark.parametrize("token", [None, "", 3, ["t"]])
async def test_3_an_auth_without_a_token_string_is_an_invalid_token(token: object) -> None:
    s = Socket()
    [reply] = await s.send({"type": "auth", "token": token})
    assert reply["code"] == "invalid_token"
    assert s.peer.closed == (4401, "invalid_token")


@pytest.mark.parametrize("kind", ["ping", "subscribe", "publish", "history", "presence", "nope"])
async def test_4_anything_but_auth_first_closes_not_authenticated(kind: str) -> None:
    s = Socket()
    [reply] = await s.send({"type": kind, "channel": "chat:a"})
    assert (reply["type"], reply["code"]) == ("auth_error", "not_authenticated")
    assert s.peer.closed == (4401, "not_authenticated")
    assert s.state is State.CLOSING


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '"auth"',
        '{"type": 1}',
        '{"type": "auth", "x": NaN}',
        '{"type": "auth", "id": true}',
        "x" * (PREAUTH_MAX_BYTES + 1),
        '{"type":"auth","token":"' + "\u00e9" * (PREAUTH_MAX_BYTES // 2) + '"}',
    ],
)
async def test_5_a_malformed_or_oversized_first_frame_closes_bad_request(text: str) -> None:
    s = Socket()
    assert await s.send(text) == []
    assert s.peer.closed == (4400, "bad_request")
    assert s.state is State.CLOSING


async def test_6_no_auth_in_time_closes_auth_timeout() -> None:
    s = Socket()
    assert s.advance(AUTH_TIMEOUT - TICK) == []
    assert s.state is State.AWAITING_AUTH
    [reply] = s.advance(2 * TICK)
    assert (reply["type"], reply["code"]) == ("auth_error", "auth_timeout")
    assert s.peer.closed == (4408, "auth_timeout")
    assert s.metrics.counts["auth:auth_timeout"] == 1


async def test_6_a_retryable_failure_does_not_extend_the_auth_deadline() -> None:
    s = Socket()
    s.advance(AUTH_TIMEOUT / 2)
    await s.send({"type": "auth", "token": s.token("t", KeysUnavailable())})
    s.advance(AUTH_TIMEOUT / 2 + TICK)
    assert s.peer.closed == (4408, "auth_timeout")


class HeldAdmission(FakeAdmission):
    """Checks that finish when the test says: the server's own backlog, in a storm."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def authenticate(self, token: str, proof: str | None) -> Claims:
        await self.release.wait()
        return await super().authenticate(token, proof)


async def held_check(token: Claims | AuthError) -> tuple[Socket, asyncio.Task[list[Any]]]:
    """A socket whose ``auth`` arrived in time and is still being checked at the deadline."""
    s = Socket()
    s.conn.close(Disconnect.GOING_AWAY)  # the plain socket's own deadline leaves with it
    s.admission, s.peer = HeldAdmission(), FakePeer()
    s.conn = Connection(replace(s.ctx, admission=s.admission), s.peer, "10.0.0.1", 2)
    s.advance(AUTH_TIMEOUT / 2)
    checking = asyncio.ensure_future(s.send({"type": "auth", "token": s.token("t", token)}))
    await asyncio.sleep(0)
    assert s.state is State.CHECKING
    assert s.advance(AUTH_TIMEOUT) == [], "the deadline passes during the check"
    assert s.peer.closed is None
    return s, checking


async def test_6_an_auth_received_in_time_is_not_timed_out_while_it_is_checked() -> None:
    s, checking = await held_check(Socket().claims())
    s.admission.release.set()
    [reply] = await checking
    assert reply["type"] == "auth_success"
    assert s.state is State.AUTHENTICATED and s.peer.closed is None


async def test_6_a_retryable_refusal_after_the_deadline_passed_is_final() -> None:
    s, checking = await held_check(KeysUnavailable())
    s.admission.release.set()
    [reply] = await checking
    assert (reply["code"], reply["retry"]) == ("keys_unavailable", False)
    assert s.state is State.CLOSING


async def test_7_a_credential_at_the_handshake_authenticates_without_a_message() -> None:
    s = Socket()
    await s.conn.authenticated_at_handshake(s.claims())
    [reply] = s.peer.take()
    assert reply["type"] == "auth_success" and "id" not in reply
    assert s.state is State.AUTHENTICATED


async def test_7_a_handshake_credential_over_the_user_cap_closes() -> None:
    s = Socket()
    s.admission.full = True
    await s.conn.authenticated_at_handshake(s.claims())
    assert s.peer.take()[0]["code"] == "too_many_connections"
    assert s.peer.closed == (4429, "too_many_connections")


async def test_7_a_socket_closed_while_being_admitted_stays_closed() -> None:
    s = Socket()
    s.conn.disconnected()
    await s.conn.authenticated_at_handshake(s.claims())
    assert s.peer.texts == [] and s.state is State.CLOSING


# -- AUTHENTICATED -> EXPIRING -> CLOSING --------------------------------------------------------


async def test_8_the_warning_comes_one_window_before_exp() -> None:
    s = Socket()
    claims = await s.authenticate()
    before = TTL - WARNING
    assert s.advance(before - TICK) == []
    [warning] = s.advance(2 * TICK)
    assert warning == {"type": "token_expiring", "expires_in": WARNING, "expires_at": claims.exp}
    assert s.state is State.EXPIRING
    assert s.metrics.counts["warnings"] == 1


@pytest.mark.parametrize(
    ("remaining", "window", "rand", "expected"),
    [
        (900, 60, 0.0, 840),
        (900, 60, 0.999, 900 - 60 - 5.994),
        (100, 60, 0.5, 50),
        (10, 60, 0.0, 5),
        (-3, 60, 0.0, 0),
    ],
)
def test_8_warning_delay(remaining: float, window: float, rand: float, expected: float) -> None:
    assert warning_delay(remaining, window, rand) == pytest.approx(expected)


async def test_8_a_short_lived_token_is_warned_at_half_its_life() -> None:
    s = Socket()
    await s.authenticate(s.claims(ttl=40))
    assert s.advance(20 - TICK) == []
    assert [f["type"] for f in s.advance(2 * TICK)] == ["token_expiring"]


async def test_12_without_renewal_the_socket_closes_at_exp_plus_leeway() -> None:
    s = Socket()
    await s.authenticate()
    s.advance(TTL - WARNING + TICK)
    assert s.advance(WARNING + LEEWAY - 2 * TICK) == []
    assert s.state is State.EXPIRING and s.peer.closed is None
    [reply] = s.advance(2 * TICK)
    assert (reply["type"], reply["code"], reply["retry"]) == ("auth_error", "token_expired", False)
    assert s.peer.closed == (4401, "token_expired")
    assert s.metrics.counts["expiries"] == 1
    assert len(s.deadlines) == 0


@pytest.mark.parametrize("after_warning", [False, True])
async def test_9_a_renewal_authenticates_again_and_reschedules(after_warning: bool) -> None:
    s = Socket()
    await s.authenticate()
    if after_warning:
        s.advance(TTL - WARNING + TICK)
        assert s.state is State.EXPIRING
    renewed = s.claims(sid="s2")
    [reply] = await s.send({"type": "auth", "token": s.token("new", renewed), "id": "r"})
    assert (reply["type"], reply["renewed"], reply["session"]) == ("auth_success", True, "s2")
    assert s.state is State.AUTHENTICATED
    assert s.conn.claims == renewed
    assert s.metrics.counts["renewals"] == 1
    assert s.advance(TTL - WARNING - TICK) == [], "the old deadline is gone"
    assert [f["type"] for f in s.advance(2 * TICK)] == ["token_expiring"]


async def test_9_a_renewal_into_another_session_of_the_user_is_reported_to_the_app() -> None:
    """The socket's ``connect`` named one session and its ``disconnect`` the other, and nothing
    between told the app the socket had moved (an outside probe: a new token exchange for new
    grants, renewed on the socket as the docs advise)."""
    s = Socket()
    sink = RecordingSink()
    s.ctx = replace(s.ctx, events=Events(sink, clock=s.clock))
    s.conn = Connection(s.ctx, s.peer, "10.0.0.1", 1)
    await s.authenticate(s.claims(sid="s1"))
    await s.send({"type": "auth", "token": s.token("same", s.claims(sid="s1"))})
    await s.send({"type": "auth", "token": s.token("other", s.claims(sid="s2"))})
    s.conn.disconnected()
    assert [(e["type"], e["session"], e.get("previous_session")) for e in sink.take()] == [
        ("connect", "s1", None),
        ("session_changed", "s2", "s1"),
        ("disconnect", "s2", None),
    ]


async def test_9_a_renewal_leaves_the_channels_the_new_token_cannot_read() -> None:
    s = Socket()
    await s.authenticate(s.claims("alice", "chat:read", "news:read"))
    for channel in ("chat:a", "news:a"):
        assert (await s.send({"type": "subscribe", "channel": channel}))[0]["type"] == "subscribed"
    replies = await s.send({"type": "auth", "token": s.token("n", s.claims("alice", "chat:read"))})
    assert replies[0] == {
        "type": "unsubscribed",
        "channel": "news:a",
        "reason": "permission_revoked",
    }
    assert replies[1]["type"] == "auth_success"
    assert set(s.conn.channels) == {"chat:a"}
    assert s.peer.closed is None


async def test_9_a_renewal_keeps_the_channels_the_apps_backend_subscribed() -> None:
    """A server subscription asks no scope and lasts as long as the socket: the first renewal
    checked it against the new token's scope and left it (``permission_revoked``)."""
    s = Socket()
    await s.authenticate(s.claims("alice", "chat:read"))
    assert await s.conn.subscribe_by_server("orders:42")
    assert await s.conn.subscribe_by_server("news:a")
    s.peer.take()
    replies = await s.send({"type": "auth", "token": s.token("n", s.claims("alice", "chat:read"))})
    assert [r["type"] for r in replies] == ["auth_success"]
    assert set(s.conn.channels) == {"orders:42", "news:a"}
    await s.send({"type": "unsubscribe", "channel": "news:a"})
    [refused] = await s.send({"type": "subscribe", "channel": "news:a"})
    assert refused["code"] == "forbidden", "the client's own subscribe still needs the scope"
    replies = await s.send({"type": "auth", "token": s.token("m", s.claims("alice", "chat:read"))})
    assert [r["type"] for r in replies] == ["auth_success"]
    assert set(s.conn.channels) == {"orders:42"}


async def test_9_a_renewal_while_the_apps_backend_subscribes_keeps_that_channel() -> None:
    """The server subscription was granted only once its join was done: a renewal while it
    awaited (a Redis round trip) checked it against the token's scope and left it
    (``permission_revoked``), then the join answered ``subscribed`` for a channel the socket was
    no longer in (an outside probe: nothing published there reached it)."""
    s = Socket()
    held = HeldPresence(s.bus.publish, lambda *_: None)
    s.hub._presence = held
    await s.authenticate(s.claims("alice", "news:read"))
    joining = asyncio.ensure_future(s.conn.subscribe_by_server("chat:orders"))
    for _ in range(20):
        await asyncio.sleep(0)
    renewed = await s.send({"type": "auth", "token": s.token("n", s.claims("alice", "news:read"))})
    held.release.set()
    assert await joining
    frames = renewed + s.peer.take()
    assert [(f["type"], f.get("reason")) for f in frames] == [
        ("auth_success", None),
        ("subscribed", "server"),
    ]
    assert "chat:orders" in s.conn.channels


async def test_9_a_server_subscribe_the_client_left_meanwhile_is_not_answered_subscribed() -> None:
    """The client unsubscribed while the app's subscribe awaited its join: the join still
    answered ``subscribed`` after the client's ``unsubscribed``, for a channel it was not in."""
    s = Socket()
    held = HeldPresence(s.bus.publish, lambda *_: None)
    s.hub._presence = held
    await s.authenticate(s.claims("alice", "news:read"))
    joining = asyncio.ensure_future(s.conn.subscribe_by_server("chat:orders"))
    for _ in range(20):
        await asyncio.sleep(0)
    left = await s.send({"type": "unsubscribe", "channel": "chat:orders", "id": 1})
    held.release.set()
    assert not await joining
    frames = left + s.peer.take()
    assert [(f["type"], f.get("id")) for f in frames] == [("unsubscribed", 1)]
    assert "chat:orders" not in s.conn.channels


async def test_9_a_renewal_rechecks_presence_events_too() -> None:
    """A subscription with ``presence_events`` needs ``presence``: a renewal whose grants drop it
    left the join and leave frames flowing (a fresh subscribe would be refused)."""
    s = Socket()
    both = {
        "type": "realtime_channels",
        "channels": ["chat:a"],
        "actions": ["subscribe", "presence"],
    }
    only = {**both, "actions": ["subscribe"]}
    await s.authenticate(replace(s.claims("alice", "x:read"), grants=parse_grants([both])))
    frame = {"type": "subscribe", "channel": "chat:a", "presence_events": True}
    assert (await s.send(frame))[0]["type"] == "subscribed"
    assert await s.conn.subscribe_by_server("chat:b")
    s.peer.take()
    renewed = replace(s.claims("alice", "x:read"), grants=parse_grants([only]))
    replies = await s.send({"type": "auth", "token": s.token("n", renewed)})
    assert replies[0] == {
        "type": "unsubscribed",
        "channel": "chat:a",
        "reason": "permission_revoked",
    }
    assert replies[1]["type"] == "auth_success"
    assert set(s.conn.channels) == {"chat:b"}
    assert not s.hub.watching("chat:a", s.conn)


async def test_9_a_renewal_rechecks_authorization_details_grants() -> None:
    s = Socket()
    doc = {"type": "realtime_channels", "channels": ["doc:1", "team:7.*"], "actions": ["subscribe"]}
    await s.authenticate(replace(s.claims("alice", "none"), grants=parse_grants([doc])))
    for channel in ("doc:1", "team:7.a", "team:7.b"):
        assert (await s.send({"type": "subscribe", "channel": channel}))[0]["type"] == "subscribed"
    narrower = {**doc, "channels": ["team:7.a"]}
    renewed = replace(s.claims("alice", "none"), grants=parse_grants([narrower]))
    replies = await s.send({"type": "auth", "token": s.token("n", renewed)})
    assert replies[:2] == [
        {"type": "unsubscribed", "channel": channel, "reason": "permission_revoked"}
        for channel in ("doc:1", "team:7.b")
    ]
    assert replies[2]["type"] == "auth_success"
    assert set(s.conn.channels) == {"team:7.a"}
    assert s.peer.closed is None


async def test_grants_allow_each_action_they_name_and_no_other() -> None:
    s = Socket()
    entry = {"type": "realtime_channels", "channels": ["chat:a"], "actions": ["subscribe"]}
    await s.authenticate(replace(s.claims("alice", "none"), grants=parse_grants([entry])))
    assert (await s.send({"type": "subscribe", "channel": "chat:a"}))[0]["type"] == "subscribed"
    for frame in [
        {"type": "publish", "channel": "chat:a", "data": 1},
        {"type": "history", "channel": "chat:a"},
        {"type": "presence", "channel": "chat:a"},
        {"type": "subscribe", "channel": "chat:a", "presence_events": True},
    ]:
        [reply] = await s.send(frame)
        assert reply["code"] == "forbidden", frame


@pytest.mark.parametrize("error", [TokenExpired(), KeysUnavailable(), InvalidToken()])
async def test_10_a_failed_renewal_keeps_the_socket_and_its_schedule(error: AuthError) -> None:
    s = Socket()
    claims = await s.authenticate()
    s.advance(TTL - WARNING + TICK)
    [reply] = await s.send({"type": "auth", "token": s.token("bad", error)})
    assert (reply["type"], reply["code"]) == ("auth_error", error.code)
    assert s.state is State.EXPIRING and s.peer.closed is None
    assert s.conn.claims == claims
    s.advance(WARNING + LEEWAY)
    assert s.peer.closed == (4401, "token_expired"), "the old token still expires"


async def test_9_a_bearer_socket_may_renew_with_a_bound_token_and_is_bound_from_then_on() -> None:
    s = Socket()
    await s.authenticate()
    bound = replace(s.claims(), jkt="key-a")
    [reply] = await s.send({"type": "auth", "token": s.token("b", bound), "proof": "p"})
    assert reply["type"] == "auth_success" and s.conn.claims == bound
    [reply] = await s.send({"type": "auth", "token": s.token("u", s.claims())})
    assert (reply["code"], s.peer.closed) == ("subject_mismatch", (4403, "subject_mismatch"))


@pytest.mark.parametrize(
    ("new", "close"),
    [
        ("bob", (4403, "subject_mismatch")),
        ("revoked", (4403, "session_revoked")),
        ("another key", (4403, "subject_mismatch")),
        ("unbound", (4403, "subject_mismatch")),
    ],
)
async def test_11_a_renewal_for_another_user_or_key_or_a_revoked_session_closes(
    new: str, close: tuple[int, str]
) -> None:
    s = Socket()
    await s.authenticate(replace(s.claims(), jkt="key-a"))
    outcome: Claims | AuthError = {
        "bob": replace(s.claims("bob"), jkt="key-a"),
        "revoked": SessionRevoked(),
        "another key": replace(s.claims(), jkt="key-b"),
        "unbound": s.claims(),
    }[new]
    [reply] = await s.send({"type": "auth", "token": s.token("t", outcome)})
    assert (reply["type"], reply["retry"]) == ("auth_error", False)
    assert s.peer.closed == close
    assert s.state is State.CLOSING


async def test_13_a_withdrawn_key_shortens_the_deadline_to_the_grace() -> None:
    s = Socket()
    await s.authenticate()
    s.conn.key_withdrawn(10)
    [warning] = s.peer.take()
    assert (warning["type"], warning["expires_in"]) == ("token_expiring", 10)
    assert s.state is State.EXPIRING
    assert s.advance(10 - TICK) == []
    s.advance(2 * TICK)
    assert s.peer.closed == (4401, "token_expired")


async def test_13_the_same_withdrawal_heard_again_warns_once() -> None:
    """A withdrawal reaches a replica more than once (the key set's refetch and each auth
    replica's announcement, 30 ms apart, after Redis came back): the same ``token_expiring`` went
    out three times, and a client that refreshes on each refreshed three times."""
    s = Socket()
    await s.authenticate()
    s.conn.key_withdrawn(10)
    assert [w["type"] for w in s.peer.take()] == ["token_expiring"]
    for _ in range(2):
        s.advance(0.03)
        s.conn.key_withdrawn(10)
    assert s.peer.take() == []
    s.advance(10 - 0.06 - TICK)
    assert s.peer.closed is None
    s.advance(2 * TICK)
    assert s.peer.closed == (4401, "token_expired"), "the first grace holds, not extended"
    later = Socket()
    await later.authenticate()
    later.conn.key_withdrawn(10)
    later.peer.take()
    later.advance(5)
    later.conn.key_withdrawn(2)
    [sooner] = later.peer.take()
    assert sooner["expires_in"] == 2, "a shorter grace still brings the close forward"


async def test_13_a_withdrawn_key_of_a_token_expiring_sooner_keeps_its_exp() -> None:
    s = Socket()
    claims = await s.authenticate(s.claims(ttl=4))
    s.conn.key_withdrawn(10)
    [warning] = s.peer.take()
    assert warning["expires_at"] == claims.exp


async def test_13_a_withdrawn_key_means_nothing_before_auth_or_after_close() -> None:
    s = Socket()
    s.conn.key_withdrawn(10)
    assert s.peer.texts == [] and s.state is State.AWAITING_AUTH
    await s.authenticate()
    s.conn.disconnected()
    s.conn.key_withdrawn(10)
    assert s.peer.texts == []


@pytest.mark.parametrize("warned", [False, True])
async def test_14_a_revocation_closes_with_a_revoked_frame(warned: bool) -> None:
    s = Socket()
    await s.authenticate()
    if warned:
        s.advance(TTL - WARNING + TICK)
    s.conn.revoke("session_revoked")
    assert s.peer.take() == [{"type": "revoked", "reason": "session_revoked"}]
    assert s.peer.closed == (4403, "session_revoked")
    assert s.state is State.CLOSING
    assert len(s.deadlines) == 0
    assert s.metrics.counts["revocations"] == 1


# -- limits on an authenticated socket -----------------------------------------------------------


async def test_15_over_the_rate_an_error_then_a_close_after_the_strikes() -> None:
    s = Socket(rate_per_second=1.0, rate_burst=2, rate_strikes=3)
    await s.authenticate()
    assert [r["type"] for r in await s.send({"type": "ping"})] == ["pong"]
    assert [r["type"] for r in await s.send({"type": "ping"})] == ["pong"]
    for _ in range(2):
        [refused] = await s.send({"type": "ping"})
        assert (refused["type"], refused["code"]) == ("error", "rate_limited")
    await s.send({"type": "ping"})
    assert s.peer.closed == (4429, "rate_limited")


async def test_15_strikes_are_forgiven_once_the_bucket_refills() -> None:
    s = Socket(rate_per_second=1.0, rate_burst=2, rate_strikes=2)
    await s.authenticate()
    for _ in range(3):
        await s.send({"type": "ping"})
    s.advance(10)
    for _ in range(3):
        await s.send({"type": "ping"})
    assert s.peer.closed is None, "one strike, forgiven, then one more"


class StalledPublishes(MemoryHistory):
    """A history whose publishes wait for the test: Redis stalled (SIGSTOPped) under one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def publish(self, *args: Any, **kwargs: Any) -> str:
        await self.gate.wait()
        return await super().publish(*args, **kwargs)


STALL = 8.0
RATE, BURST = 20.0, 40


async def publishing_through_a_stall(during: float, after: float) -> tuple[Socket, float]:
    """The WS handler's loop on a fake clock: the socket's first publish waits ``STALL`` seconds
    on Redis while the client sends a publish every ``1 / during`` s; those queue and are handled
    back to back once it returns. Then one every ``1 / after`` s for ``STALL`` s more, each
    handled as it arrives, until the socket closes. Returns the socket and the seconds from the
    first publish to the last frame handled."""
    s = Socket(rate_per_second=RATE, rate_burst=BURST)
    history = StalledPublishes(s.bus.publish, clock=s.clock)
    s.hub._history = history
    await s.authenticate()
    began = s.clock.monotonic()
    sent = 0

    def publish() -> str:
        nonlocal sent
        sent += 1
        return json.dumps({"type": "publish", "channel": "chat:a", "data": sent, "id": sent})

    stalled = asyncio.ensure_future(s.conn.on_text(publish()))
    await asyncio.sleep(0)
    queued = []
    for _ in range(int(STALL * during)):
        s.clock.advance(1 / during)
        queued.append(publish())
    history.gate.set()
    await stalled
    for text in queued:
        await s.conn.on_text(text)
    for _ in range(int(STALL * after)):
        if s.peer.closed is not None:
            break
        s.clock.advance(1 / after)
        await s.conn.on_text(publish())
    return s, s.clock.monotonic() - began


async def test_15_frames_paced_under_the_rate_are_not_refused_for_the_server_s_stall() -> None:
    """14 a second under a limit of 20: the 112 sent while a publish waited on Redis came back
    to back after it, and met a bucket capped at its burst of 40 (the server's 8 s charged to
    the client): 40 passed, 20 were refused and the socket closed 4429, the rest lost."""
    s, _ = await publishing_through_a_stall(during=14.0, after=14.0)
    frames = s.peer.take()
    assert [f for f in frames if f["type"] != "published"] == []
    assert [f["id"] for f in frames] == list(range(1, 2 + int(2 * STALL * 14.0)))
    assert s.peer.closed is None


@pytest.mark.parametrize(("during", "after"), [(60.0, 14.0), (14.0, 60.0)])
async def test_15_over_the_rate_through_a_stall_is_still_refused(
    during: float, after: float
) -> None:
    """Too fast while the server stalled, or after it: refused, then closed, and never more
    admitted than the burst and the rate allow over the time since the stall began."""
    s, elapsed = await publishing_through_a_stall(during, after)
    frames = s.peer.take()
    assert {"type": "error", "code": "rate_limited", "id": None} in [
        {k: f.get(k) for k in ("type", "code", "id")} for f in frames
    ]
    assert s.peer.closed == (4429, "rate_limited")
    published = sum(f["type"] == "published" for f in frames)
    assert published <= BURST + RATE * elapsed


async def test_16_repeated_bad_requests_close_the_socket() -> None:
    s = Socket(max_violations=3)
    await s.authenticate()
    for n in range(3):
        [reply] = await s.send("{oops")
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", None)
        assert (s.peer.closed is None) is (n < 2)
    assert s.peer.closed == (4400, "bad_request")


async def test_16_other_refusals_do_not_count_as_violations() -> None:
    s = Socket(max_violations=2)
    await s.authenticate()
    for _ in range(5):
        [reply] = await s.send({"type": "subscribe", "channel": "news:a"})
        assert reply["code"] == "forbidden"
    assert s.peer.closed is None


@pytest.mark.parametrize("authenticated", [False, True])
async def test_17_a_binary_frame_closes_in_any_state(authenticated: bool) -> None:
    s = Socket()
    if authenticated:
        await s.authenticate()
    s.conn.on_binary()
    assert s.peer.closed == (4400, "bad_request")
    assert s.state is State.CLOSING


@pytest.mark.parametrize("authenticated", [False, True])
async def test_18_the_peer_leaving_drops_timers_channels_and_the_index_entry(
    authenticated: bool,
) -> None:
    s = Socket()
    if authenticated:
        await s.authenticate()
        await s.send({"type": "subscribe", "channel": "chat:a"})
    s.conn.disconnected()
    assert s.state is State.CLOSING
    assert len(s.deadlines) == 0
    assert s.conn.channels == {}
    assert s.admission.forgotten == [s.conn]
    assert s.advance(TTL * 2) == [] and s.peer.closed is None


@pytest.mark.parametrize("frame", [{"type": "auth", "token": "good"}, {"type": "ping"}, "{oops"])
async def test_19_a_closing_socket_reads_nothing(frame: dict[str, Any] | str) -> None:
    s = Socket()
    await s.authenticate()
    s.conn.revoke("session_revoked")
    s.peer.take()
    assert await s.send(frame) == []
    s.advance(TTL * 2)
    assert s.peer.texts == []


# -- the app's backend acts on the socket (the server API) ---------------------------------------


@pytest.mark.parametrize("warned", [False, True])
async def test_20_the_apps_backend_disconnects_a_live_socket(warned: bool) -> None:
    s = Socket()
    await s.authenticate(s.claims(ttl=30) if warned else None)
    if warned:
        s.advance(15)
        assert s.state is State.EXPIRING
    assert s.conn.disconnect()
    assert (s.state, s.peer.closed, s.clock.pending) == (
        State.CLOSING,
        (4403, "disconnected"),
        0,
    )
    assert not s.conn.disconnect(), "a closing socket is not closed again"


async def test_20_a_socket_awaiting_auth_is_left_alone() -> None:
    s = Socket()
    assert not s.conn.disconnect()
    assert not s.conn.unsubscribe_by_server("chat:a")
    assert not await s.conn.subscribe_by_server("chat:a")
    assert (s.state, s.peer.closed, s.peer.texts) == (State.AWAITING_AUTH, None, [])


async def test_21_the_apps_backend_unsubscribes_the_socket() -> None:
    s = Socket()
    await s.authenticate()
    await s.send({"type": "subscribe", "channel": "chat:a"})
    assert s.conn.unsubscribe_by_server("chat:a")
    assert s.peer.take() == [{"type": "unsubscribed", "channel": "chat:a", "reason": "server"}]
    await s.hub.publish("chat:a", 1, None)
    assert (s.state, s.peer.texts, s.conn.channels) == (State.AUTHENTICATED, [], {})
    assert not s.conn.unsubscribe_by_server("chat:a"), "not subscribed any more"


async def test_22_the_apps_backend_subscribes_the_socket_without_its_scope() -> None:
    s = Socket()
    await s.authenticate(s.claims("alice", "other:read"))
    assert await s.conn.subscribe_by_server("chat:a")
    [subscribed] = s.peer.take()
    assert (subscribed["type"], subscribed["reason"], "id" in subscribed) == (
        "subscribed",
        "server",
        False,
    )
    assert "position" in subscribed, "a channel with history says where it stands"
    await s.hub.publish("chat:a", 1, None)
    assert [f["data"] for f in s.peer.take()] == [1]
    assert not await s.conn.subscribe_by_server("chat:a"), "already subscribed"


# -- requests on an authenticated socket ---------------------------------------------------------


async def test_ping_answers_pong_with_the_id() -> None:
    s = Socket()
    await s.authenticate()
    assert await s.send({"type": "ping", "id": "p1"}) == [{"type": "pong", "id": "p1"}]
    assert s.metrics.counts["messages_in"] == 1


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "subscribe", "channel": "bad"}, "invalid_channel"),
        ({"type": "subscribe", "channel": "news:a"}, "forbidden"),
        ({"type": "subscribe", "channel": "user:bob"}, "forbidden"),
        ({"type": "publish", "channel": "user:alice", "data": 1}, "forbidden"),
        ({"type": "publish", "channel": "chat:a"}, "bad_request"),
        ({"type": "unsubscribe", "channel": "chat:a"}, "not_subscribed"),
        ({"type": "presence", "channel": "user:alice"}, "not_enabled"),
        (
            {"type": "subscribe", "channel": "user:alice", "since": {"offset": 1, "epoch": "e"}},
            "not_enabled",
        ),
        ({"type": "subscribe", "channel": "chat:a", "presence_events": "yes"}, "bad_request"),
        (
            {"type": "subscribe", "channel": "chat:a", "since": {"offset": -1, "epoch": "e"}},
            "bad_request",
        ),
        (
            {"type": "subscribe", "channel": "chat:a", "since": {"offset": 2**63, "epoch": "e"}},
            "bad_request",
        ),
        (
            {"type": "subscribe", "channel": "chat:a", "since": {"offset": 1, "epoch": ""}},
            "bad_request",
        ),
        ({"type": "history", "channel": "chat:a", "limit": -1}, "bad_request"),
        ({"type": "history", "channel": "chat:a", "limit": True}, "bad_request"),
        ({"type": "nope"}, "bad_request"),
    ],
)
async def test_a_refused_request_is_an_error_frame_and_the_socket_stays(
    frame: dict[str, Any], code: str
) -> None:
    s = Socket()
    await s.authenticate(s.claims("alice", "chat:read", "chat:write"))
    [reply] = await s.send({**frame, "id": 9})
    assert (reply["type"], reply["code"], reply["id"]) == ("error", code, 9)
    assert s.state is State.AUTHENTICATED and s.peer.closed is None


async def test_subscribe_publish_unsubscribe() -> None:
    s = Socket()
    await s.authenticate()
    [subscribed] = await s.send({"type": "subscribe", "channel": "chat:a", "id": 1})
    assert subscribed["type"] == "subscribed" and subscribed["position"]["offset"] == 0
    replies = await s.send({"type": "publish", "channel": "chat:a", "data": {"x": 1}, "id": 2})
    assert [r["type"] for r in replies] == ["message", "published"]
    assert (replies[0]["data"], replies[0]["from"], replies[0]["offset"]) == ({"x": 1}, "alice", 1)
    assert await s.send({"type": "unsubscribe", "channel": "chat:a", "id": 3}) == [
        {"type": "unsubscribed", "channel": "chat:a", "id": 3}
    ]
    assert s.conn.channels == {}


async def test_subscriptions_are_capped() -> None:
    s = Socket(max_subscriptions=2)
    await s.authenticate()
    for channel in ("chat:a", "chat:b"):
        await s.send({"type": "subscribe", "channel": channel})
    [reply] = await s.send({"type": "subscribe", "channel": "chat:c"})
    assert reply["code"] == "too_many_subscriptions"
    assert (await s.send({"type": "subscribe", "channel": "chat:a"}))[0]["type"] == "subscribed"


async def test_history_and_presence_answer_on_a_readable_channel() -> None:
    s = Socket()
    await s.authenticate()
    await s.send({"type": "subscribe", "channel": "chat:a"})
    await s.send({"type": "publish", "channel": "chat:a", "data": 1})
    [history] = await s.send({"type": "history", "channel": "chat:a", "limit": 5})
    assert [m["data"] for m in history["publications"]] == [1]
    [presence] = await s.send({"type": "presence", "channel": "chat:a"})
    assert presence["members"] == [{"user": {"id": "alice", "username": "alice"}, "connections": 1}]


async def test_a_history_reply_is_bounded_in_bytes_and_pages_from_since() -> None:
    """A channel keeps up to its size times the message limit (6.4 MB by default), more than a
    socket's outbox: one reply carries at most ``reply_bytes`` of publications, the most recent
    without ``since``, else the oldest after it, and the client pages on from the last one."""
    s = Socket(reply_bytes=2_500)
    await s.authenticate()
    await s.send({"type": "subscribe", "channel": "chat:a"})
    for n in range(10):
        await s.hub.publish("chat:a", {"n": n, "pad": "x" * 900}, None)
    s.peer.take()
    [recent] = await s.send({"type": "history", "channel": "chat:a"})
    assert [m["data"]["n"] for m in recent["publications"]] == [8, 9]
    seen: list[int] = []
    since = {"offset": 0, "epoch": recent["position"]["epoch"]}
    while True:
        [page] = await s.send({"type": "history", "channel": "chat:a", "since": since})
        assert page["recovered"] is True
        assert sum(len(json.dumps(m)) for m in page["publications"]) < 2_600
        if not page["publications"]:
            break
        seen += [m["data"]["n"] for m in page["publications"]]
        since = {"offset": page["publications"][-1]["offset"], "epoch": since["epoch"]}
    assert seen == list(range(10)), "every message once, in order"


async def test_a_subscribe_without_since_reads_no_message() -> None:
    """It answers the position only: it read the channel's whole history (6.4 MB out of Redis
    at most, per subscribe) and dropped it."""
    s = Socket()
    reads: list[tuple[int, int]] = []
    history = s.hub._history
    read = history.read

    async def recording(*args: Any) -> Any:
        reads.append((args[2], args[4]))
        return await read(*args)

    history.read = recording  # type: ignore[method-assign]
    await s.authenticate()
    await s.send({"type": "subscribe", "channel": "chat:a"})
    await s.send({"type": "history", "channel": "chat:a"})
    assert reads == [(0, Limits().reply_bytes), (100, Limits().reply_bytes)]


async def test_a_recovery_past_the_reply_budget_is_not_recovered() -> None:
    s = Socket(reply_bytes=2_500)
    await s.authenticate()
    position = (await s.send({"type": "subscribe", "channel": "chat:a"}))[0]["position"]
    await s.send({"type": "unsubscribe", "channel": "chat:a"})
    for n in range(10):
        await s.hub.publish("chat:a", {"n": n, "pad": "x" * 900}, None)
    since = {"offset": position["offset"], "epoch": position["epoch"]}
    [reply] = await s.send({"type": "subscribe", "channel": "chat:a", "since": since})
    assert (reply["recovered"], reply["publications"]) == (False, [])
    assert reply["position"]["offset"] == 10, "the client pages from since with history"
    [one] = await s.send({"type": "history", "channel": "chat:a", "since": since, "limit": 1})
    assert [m["data"]["n"] for m in one["publications"]] == [0]


async def test_a_recovery_needs_the_history_action_as_a_history_request_does() -> None:
    """A token that may subscribe to a channel but not read its history was refused ``history``
    and read every kept message by subscribing with ``since`` offset 0 (an outside probe). It
    gets the position and ``recovered: false``, with nothing read."""
    s = Socket()
    grant = {"type": "realtime_channels", "channels": ["chat:a"], "actions": ["subscribe"]}
    await s.authenticate(replace(s.claims("alice", "none"), grants=parse_grants([grant])))
    position = (await s.send({"type": "subscribe", "channel": "chat:a"}))[0]["position"]
    for n in range(3):
        await s.hub.publish("chat:a", {"n": n}, None)
    s.peer.take()
    [refused] = await s.send({"type": "history", "channel": "chat:a", "id": 1})
    assert refused["code"] == "forbidden"
    since = {"offset": 0, "epoch": position["epoch"]}
    [reply] = await s.send({"type": "subscribe", "channel": "chat:a", "since": since})
    assert (reply["type"], reply["recovered"], reply["publications"]) == ("subscribed", False, [])
    assert reply["position"]["offset"] == 3
    readers = {**grant, "actions": ["subscribe", "history"]}
    s.conn.claims = replace(s.claims("alice", "none"), grants=parse_grants([readers]))
    [reply] = await s.send({"type": "subscribe", "channel": "chat:a", "since": since})
    assert [m["data"]["n"] for m in reply["publications"]] == [0, 1, 2], "with history: read"


# -- held-back frames while a channel is recovered -----------------------------------------------


class GatedHistory(MemoryHistory):
    """A history whose reads wait for the test, so live messages arrive during a recovery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import asyncio

        self.gate = asyncio.Event()

    async def read(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        return await super().read(*args, **kwargs)


async def test_live_messages_during_a_recovery_are_held_then_released_without_repeats() -> None:
    import asyncio

    s = Socket()
    history = GatedHistory(s.bus.publish, clock=s.clock)
    s.hub._history = history  # the socket's hub reads through the gate
    await s.authenticate()
    history.gate.set()
    position = (await s.send({"type": "subscribe", "channel": "chat:a"}))[0]["position"]
    for n in (1, 2):
        await s.hub.publish("chat:a", n, None)
    s.peer.take()
    await s.send({"type": "unsubscribe", "channel": "chat:a"})
    history.gate.clear()
    since = {"offset": position["offset"], "epoch": position["epoch"]}
    subscribing = asyncio.ensure_future(
        s.send({"type": "subscribe", "channel": "chat:a", "since": since})
    )
    await asyncio.sleep(0)
    await s.hub.publish("chat:a", 3, None)
    assert s.peer.texts == [], "held while the recovery reads"
    history.gate.set()
    frames = await subscribing + s.peer.take()
    assert frames[0]["type"] == "subscribed" and frames[0]["recovered"] is True
    recovered = [m["data"] for m in frames[0]["publications"]]
    live = [f["data"] for f in frames[1:] if f["type"] == "message"]
    assert recovered + live == [1, 2, 3], "every message once, in order"


async def test_a_message_at_or_below_the_last_position_is_dropped() -> None:
    s = Socket()
    await s.authenticate()
    await s.send({"type": "subscribe", "channel": "chat:a"})
    await s.hub.publish("chat:a", 1, None)
    [message] = s.peer.take()
    s.conn.deliver("chat:a", json.dumps(message), s.conn.channels["chat:a"])
    assert s.peer.texts == [], "the same offset again is a straggler"


async def sent_one_message(channel: str) -> tuple[Socket, dict[str, Any], Position]:
    """An authenticated socket subscribed to ``channel``, its first message taken, and the
    position the socket holds for it."""
    s = Socket()
    await s.authenticate()
    await s.send({"type": "subscribe", "channel": channel})
    await s.hub.publish(channel, 1, None)
    [first] = s.peer.take()
    last = s.conn.channels[channel]
    assert last is not None
    return s, first, last


async def test_a_message_past_the_next_offset_closes_the_socket_to_recover_what_it_missed() -> None:
    """An outside probe: during a Redis failover, messages reached the channel's history but not
    a replica's bus subscription, and its subscribers, still connected, went from offset 10 to
    22 without ever seeing 11-21 (nor could their clients tell). A gap now closes the socket
    1012 missed_messages: the client reconnects and recovers them with since."""
    s, first, last = await sent_one_message("chat:a")
    assert first["offset"] == last.offset
    message = json.dumps({**first, "data": 2})
    s.conn.deliver("chat:a", message, replace(last, epoch="another"))
    assert [m["data"] for m in s.peer.take()] == [2], "a new epoch is a new stream, not a gap"
    s.conn.deliver("chat:a", message, replace(last, epoch="another", offset=last.offset + 1))
    assert len(s.peer.take()) == 1 and s.peer.closed is None, "the next offset is no gap"
    s.conn.deliver("chat:a", message, replace(last, epoch="another", offset=last.offset + 3))
    assert s.peer.texts == [], "not delivered past the gap"
    assert s.peer.closed == (1012, "missed_messages")
    assert action_for(1012, "missed_messages") is Action.RECONNECT


async def test_a_new_epoch_past_its_first_offset_closes_the_socket_too() -> None:
    """An outside probe: Redis restarted empty, and the first messages published after it came
    back went into the new stream (offsets 1-8) before the replicas' bus listened again. The
    first live message was offset 9 of the new epoch, taken as a new stream: nobody was told,
    and the client's position moved past what it never got."""
    s, first, last = await sent_one_message("chat:a")
    message = json.dumps({**first, "data": 9})
    s.conn.deliver("chat:a", message, replace(last, epoch="reborn", offset=9))
    assert s.peer.texts == [], "not delivered past the gap"
    assert s.peer.closed == (1012, "missed_messages")


async def test_sockets_that_never_subscribed_share_one_empty_channels_dict_never_written() -> None:
    """An idle socket keeps no dict of its own (64 bytes each, docs/performance.md); the first
    subscribe gives it one. Nothing may write the shared one: it would be every socket's."""
    first, second = Socket(), Socket()
    for s in (first, second):
        await s.authenticate()
    assert first.conn.channels is second.conn.channels is NO_CHANNELS
    await first.send({"type": "subscribe", "channel": "chat:a"})
    await first.send({"type": "unsubscribe", "channel": "chat:b"})
    await second.send({"type": "unsubscribe", "channel": "chat:a"})
    await second.send({"type": "publish", "channel": "chat:a", "data": 1})
    assert list(first.conn.channels) == ["chat:a"] and first.conn.channels is not NO_CHANNELS
    assert second.conn.channels is NO_CHANNELS and NO_CHANNELS == {}
    second.conn.disconnected()
    first.conn.disconnected()
    assert NO_CHANNELS == {} and first.conn.channels == {}
