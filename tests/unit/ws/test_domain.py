"""Pure domain rules: channel names and permissions, token bucket, revocations, warning timing."""

from __future__ import annotations

import pytest

from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.events import SessionRevoked, UserRevoked
from ws_service.domain.connection import warning_delay
from ws_service.domain.errors import Forbidden, InvalidChannel
from ws_service.domain.history import HistoryPolicy
from ws_service.domain.namespaces import USER_NAMESPACE, Namespace, Namespaces, validate_channel
from ws_service.domain.ratelimit import STALL_CREDIT, TokenBucket
from ws_service.domain.revocations import RevocationRegistry


@pytest.mark.parametrize(
    "name", ["chat:general", "a:b", "chat:room:1", "user:42@x.y-z_", "n:" + "a" * 126]
)
def test_valid_channel_names(name: str) -> None:
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "chat", ":general", "chat:", "chat: x", "chat:é", "ns:" + "a" * 126, None, 3, ["a:b"]],
)
def test_invalid_channel_names(name: object) -> None:
    with pytest.raises(InvalidChannel):
        validate_channel(name)


def claims(sub: str, *scopes: str) -> Claims:
    return Claims(sub, "s", 0, 10, frozenset(scopes), None, "k")


def test_scopes_open_namespaces() -> None:
    chat = Namespaces().of("chat:x")
    for action in ("subscribe", "history", "presence"):
        chat.check(action, "chat:x", claims("alice", "chat:read"))
    chat.check("publish", "chat:x", claims("alice", "chat:write"))
    with pytest.raises(Forbidden, match="subscribing needs the scope chat:read"):
        chat.check("subscribe", "chat:x", claims("alice", "chat:write", "news:read"))
    with pytest.raises(Forbidden, match="publishing needs the scope chat:write"):
        chat.check("publish", "chat:x", claims("alice", "chat:read"))


def test_user_namespace_is_private_and_server_written() -> None:
    user = Namespaces().of("user:alice")
    assert user.private
    user.check("subscribe", "user:alice", claims("alice"))
    with pytest.raises(Forbidden):
        user.check("subscribe", "user:bob", claims("alice", "user:read", "user:bob:read"))
    with pytest.raises(Forbidden):
        user.check("subscribe", "user:alice:extra", claims("alice", "user:read"))
    with pytest.raises(Forbidden):
        user.check("publish", "user:alice", claims("alice", "user:write"))


def test_a_namespace_resolves_once_to_its_configured_rules() -> None:
    chat = Namespace("chat", history=HistoryPolicy(10, 60.0), presence=True)
    namespaces = Namespaces([chat])
    assert namespaces.of("chat:a") is namespaces.of("chat:b") is chat
    other = namespaces.of("news:a")
    assert (other.history, other.presence) == (None, False)
    assert namespaces.of("news:b") is other
    with pytest.raises(ValueError, match="private"):
        Namespaces([Namespace(USER_NAMESPACE, presence=True)])


def test_unconfigured_namespaces_are_remembered_within_a_bound() -> None:
    namespaces = Namespaces()
    for n in range(5000):
        assert namespaces.of(f"n{n}:x").name == f"n{n}"
    assert len(namespaces._resolved) <= 1024


def test_token_bucket_allows_burst_then_refills_at_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.4)
    assert bucket.take(0.5)
    assert not bucket.full
    assert bucket.take(10.0)
    assert bucket.full


@pytest.mark.parametrize(("at", "admitted"), [(10.0, 22), (14.9, 31), (19.9, 33), (20.0, 3)])
def test_token_bucket_caps_a_stall_s_refill_at_the_stall_credit_until_as_long_again_has_passed(
    at: float, admitted: int
) -> None:
    """Over a stall and as long again, the refill is capped at the burst plus ``STALL_CREDIT``
    seconds of it (3 + 2 x 15 = 33 here), not at the burst."""
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert bucket.take(0.0)
    bucket.stalled(0.0, 10.0)
    assert sum(bucket.take(at) for _ in range(100)) == admitted


def test_frames_that_each_stall_the_server_save_no_more_than_the_stall_credit() -> None:
    """Each of a client's frames held the server 0.5 s (a slow application proxy): every stall
    lifted the cap, and the refill of all of them was saved, 633 frames passing back to back
    against a burst of 40 (an outside probe). Now at most the burst and ``STALL_CREDIT``."""
    bucket = TokenBucket(rate=20.0, burst=40, now=0.0)
    now = 0.0
    for _ in range(60):
        assert bucket.take(now)
        bucket.stalled(now, now + 0.5)
        now += 0.5
    assert sum(bucket.take(now) for _ in range(2000)) == 40 + 20 * STALL_CREDIT


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_revocation_lasts_until_until() -> None:
    clock = Clock()
    registry = RevocationRegistry(clock)
    registry.apply(SessionRevoked(sid="s1", sub="alice", until=1010))
    assert registry.is_revoked("alice", "s1", iat=999)
    assert registry.is_revoked("mallory", "s1", iat=999)
    assert not registry.is_revoked("alice", "s2", iat=999)
    clock.now = 1011
    assert not registry.is_revoked("alice", "s1", iat=999)
    registry.prune()
    assert len(registry) == 0


def test_revocations_outlast_until_by_the_verifier_leeway() -> None:
    clock = Clock()
    registry = RevocationRegistry(clock, leeway=5)
    registry.apply(SessionRevoked(sid="s1", sub="alice", until=1010))
    registry.apply(UserRevoked(sub="bob", issued_before=1000, until=1010))
    clock.now = 1015
    assert registry.is_revoked("alice", "s1", iat=999)
    assert registry.is_revoked("bob", "any", iat=999)
    clock.now = 1016
    assert not registry.is_revoked("alice", "s1", iat=999)
    assert not registry.is_revoked("bob", "any", iat=999)


def test_user_revocation_covers_only_tokens_issued_before_the_cutoff() -> None:
    clock = Clock()
    registry = RevocationRegistry(clock)
    registry.apply(UserRevoked(sub="alice", issued_before=1000, until=1100))
    registry.apply(UserRevoked(sub="alice", issued_before=990, until=1050))
    assert registry.is_revoked("alice", "any", iat=999)
    assert not registry.is_revoked("alice", "any", iat=1000)
    assert not registry.is_revoked("bob", "any", iat=999)
    clock.now = 1080
    assert registry.is_revoked("alice", "any", iat=999)
    clock.now = 1101
    assert not registry.is_revoked("alice", "any", iat=999)


def test_apply_prunes_expired_entries() -> None:
    clock = Clock()
    registry = RevocationRegistry(clock)
    registry.apply(SessionRevoked(sid="old", sub="a", until=1001))
    clock.now = 1002
    registry.apply(SessionRevoked(sid="new", sub="a", until=1100))
    assert len(registry) == 1


@pytest.mark.parametrize(
    ("remaining", "window", "rand", "expected"),
    [
        (300.0, 60.0, 0.0, 240.0),
        (300.0, 60.0, 0.5, 237.0),
        (300.0, 60.0, 0.999, 234.006),
        (100.0, 60.0, 0.7, 50.0),
        (3.0, 1.0, 0.3, 1.97),
        (1.5, 1.0, 0.3, 0.75),
        (-1.0, 1.0, 0.3, 0.0),
    ],
)
def test_warning_delay(remaining: float, window: float, rand: float, expected: float) -> None:
    assert warning_delay(remaining, window, rand) == pytest.approx(expected)
