"""Per-channel permissions from RFC 9396 ``authorization_details``: the strict parse, the shared
parsed form, and the namespace rule that reads scopes or grants (docs/protocol.md, "Permissions")."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_gateway_protocol.access_token import Claims
from ws_service.domain.errors import Forbidden, InvalidToken
from ws_service.domain.namespaces import MAX_GRANTS, Namespaces, granted, parse_grants
from ws_service.domain.verify import claims_from


def detail(channels: Any, actions: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "realtime_channels", "channels": channels, "actions": actions, **extra}


def claims(sub: str = "alice", *scopes: str, details: Any = None) -> Claims:
    return Claims(sub, "s", 0, 10, frozenset(scopes), None, "k", parse_grants(details))


def test_an_absent_claim_grants_nothing() -> None:
    assert parse_grants(None) == frozenset()


def test_each_action_of_an_entry_is_granted_on_each_of_its_channels() -> None:
    grants = parse_grants(
        [
            detail(["doc:1", "team:7.*"], ["subscribe", "history"]),
            detail(["doc:1"], ["publish"]),
        ]
    )
    assert grants == {
        ("subscribe", "doc:1"),
        ("history", "doc:1"),
        ("publish", "doc:1"),
        ("subscribe", "team:7.*"),
        ("history", "team:7.*"),
    }


def test_entries_of_other_types_are_for_other_resource_servers() -> None:
    other = {"type": "payment_initiation", "instructedAmount": {"amount": "1"}, "locations": ["x"]}
    assert parse_grants([other, detail(["doc:1"], ["publish"])]) == {("publish", "doc:1")}


def test_tokens_with_equal_grants_share_one_set() -> None:
    first = parse_grants([detail(["doc:1", "doc:2"], ["subscribe"])])
    second = parse_grants([detail(["doc:2"], ["subscribe"]), detail(["doc:1"], ["subscribe"])])
    assert first == second
    assert first is second


@pytest.mark.parametrize(
    "details",
    [
        {"type": "realtime_channels"},
        "doc:1",
        [None],
        [{"channels": ["doc:1"], "actions": ["subscribe"]}],
        [{"type": 7}],
        [detail([], ["subscribe"])],
        [detail(["doc:1"], [])],
        [detail("doc:1", ["subscribe"])],
        [detail(["doc:1"], "subscribe")],
        [detail(["doc:1"], ["read"])],
        [detail(["doc:1"], [["subscribe"]])],
        [detail(["doc:1"], ["Subscribe"])],
        [detail([7], ["subscribe"])],
        [detail(["doc"], ["subscribe"])],
        [detail(["*"], ["subscribe"])],
        [detail(["doc*"], ["subscribe"])],
        [detail(["doc:*:x"], ["subscribe"])],
        [detail(["doc:a b"], ["subscribe"])],
        [detail(["doc:" + "a" * 125], ["subscribe"])],
        [detail(["doc:1"], ["subscribe"], locations=["https://elsewhere"])],
        [detail(["doc:1"], ["subscribe"], identifier="doc-1")],
    ],
)
def test_a_malformed_claim_is_refused_whole(details: Any) -> None:
    with pytest.raises(ValueError):
        parse_grants(details)


def test_a_token_may_grant_a_bounded_number_of_channel_actions() -> None:
    actions = ["subscribe", "publish", "history", "presence"]
    channels = [f"doc:{n}" for n in range(MAX_GRANTS // 4)]
    split = [detail(channels[i : i + 32], actions) for i in range(0, len(channels), 32)]
    assert len(parse_grants(split)) == MAX_GRANTS
    with pytest.raises(ValueError, match="more than"):
        parse_grants([*split, detail(["doc:x"], actions)])


@pytest.mark.parametrize(
    ("pattern", "channel", "expected"),
    [
        ("doc:1", "doc:1", True),
        ("doc:1", "doc:10", False),
        ("team:7.*", "team:7.a", True),
        ("team:7.*", "team:7.", True),
        ("team:7.*", "team:7.", True),
        ("team:*", "team:anything:at.all", True),
        ("team:*", "teams:x", False),
    ],
)
def test_a_channel_is_granted_exactly_or_by_a_prefix(
    pattern: str, channel: str, expected: bool
) -> None:
    grants = parse_grants([detail([pattern], ["subscribe"])])
    assert granted(grants, "subscribe", channel) is expected
    assert not granted(grants, "publish", channel)


def test_a_grant_allows_what_the_scopes_do_not() -> None:
    namespaces = Namespaces()
    alice = claims(details=[detail(["doc:1"], ["subscribe", "publish"])])
    namespaces.of("doc:1").check("subscribe", "doc:1", alice)
    namespaces.of("doc:1").check("publish", "doc:1", alice)
    for action, channel in [("history", "doc:1"), ("presence", "doc:1"), ("subscribe", "doc:2")]:
        with pytest.raises(Forbidden):
            namespaces.of(channel).check(action, channel, alice)  # type: ignore[arg-type]


def test_scopes_still_allow_without_a_grant() -> None:
    reader = claims("alice", "doc:read", details=[detail(["doc:1"], ["publish"])])
    Namespaces().of("doc:9").check("history", "doc:9", reader)
    with pytest.raises(Forbidden):
        Namespaces().of("doc:9").check("publish", "doc:9", reader)


def test_grants_never_open_the_user_namespace() -> None:
    mallory = claims(
        "mallory",
        details=[detail(["user:alice", "user:*"], ["subscribe", "publish", "history"])],
    )
    user = Namespaces().of("user:alice")
    with pytest.raises(Forbidden):
        user.check("subscribe", "user:alice", mallory)
    with pytest.raises(Forbidden):
        user.check("publish", "user:mallory", mallory)


def test_the_verifier_reads_the_claim_and_refuses_a_malformed_one() -> None:
    payload = {"sub": "alice", "sid": "s", "jti": "j", "iat": 0, "exp": 10}
    assert claims_from(payload, "k").grants == frozenset()
    parsed = claims_from(
        {**payload, "authorization_details": [detail(["doc:1"], ["publish"])]}, "k"
    )
    assert parsed.grants == {("publish", "doc:1")}
    with pytest.raises(InvalidToken, match="authorization_details"):
        claims_from({**payload, "authorization_details": {"channels": ["doc:1"]}}, "k")
