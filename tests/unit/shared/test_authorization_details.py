"""The one parser of ``authorization_details`` (RFC 9396) that the issuer and the gateway share."""

from __future__ import annotations

import json
from typing import Any

import pytest

from realtime_gateway_protocol.access_token import (
    MAX_AUTHORIZATION_DETAILS,
    MAX_AUTHORIZATION_DETAILS_BYTES,
    MAX_DETAIL_CHANNELS,
    AuthorizationDetailsError,
    ChannelGrant,
    parse_authorization_details,
)
from realtime_gateway_protocol.tickets import ticket_claims


def entry(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "realtime_channels",
        "channels": ["doc:123", "team:7.*"],
        "actions": ["subscribe", "history"],
        **overrides,
    }


def test_an_entry_grants_its_actions_on_exact_channels_and_prefixes() -> None:
    (grant,) = parse_authorization_details([entry()])
    assert grant == ChannelGrant(
        exact=frozenset({"doc:123"}),
        prefixes=("team:7.",),
        actions=frozenset({"subscribe", "history"}),
    )
    assert grant.allows("subscribe", "doc:123") and grant.allows("history", "team:7.general")
    assert not grant.allows("publish", "doc:123"), "an action not listed"
    assert not grant.allows("subscribe", "doc:1234"), "an exact name is not a prefix"
    assert not grant.allows("subscribe", "team:70"), "the prefix is 'team:7.'"
    assert grant.namespaces == {"doc", "team"}


def test_a_whole_namespace_and_every_action() -> None:
    actions = ["subscribe", "publish", "history", "presence"]
    (grant,) = parse_authorization_details([entry(channels=["chat:*"], actions=actions)])
    assert all(grant.allows(action, "chat:lobby") for action in actions)
    assert not grant.allows("subscribe", "chatter:x")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "doc:1",
        {},
        [],
        [entry()] * (MAX_AUTHORIZATION_DETAILS + 1),
        ["realtime_channels"],
        [entry(type="payment_initiation")],
        [entry(type=["realtime_channels"])],
        [{**entry(), "locations": ["https://x"]}],
        [{"type": "realtime_channels", "channels": ["doc:1"]}],
        [entry(channels=[])],
        [entry(channels="doc:1")],
        [entry(channels=[1])],
        [entry(channels=[["doc:1"]])],
        [entry(channels=[f"doc:{n}" for n in range(MAX_DETAIL_CHANNELS + 1)])],
        [entry(channels=["doc:1", "doc:1"])],
        [entry(channels=["*"])],
        [entry(channels=["doc"])],
        [entry(channels=["doc*"])],
        [entry(channels=[":x"])],
        [entry(channels=["doc:a*b"])],
        [entry(channels=["doc:*x"])],
        [entry(channels=["doc:a b"])],
        [entry(channels=["doc:caf\u00e9"])],
        [entry(channels=["doc:" + "x" * 125])],
        [entry(actions=[])],
        [entry(actions=["admin"])],
        [entry(actions=["subscribe", "subscribe"])],
        [entry(actions=[None])],
    ],
)
def test_anything_else_is_refused_with_a_reason(value: object) -> None:
    with pytest.raises(AuthorizationDetailsError) as caught:
        parse_authorization_details(value)
    assert str(caught.value).startswith("authorization_details")


def test_the_byte_limit_is_the_compact_json() -> None:
    channels = [f"d:{n:0118d}" for n in range(MAX_DETAIL_CHANNELS)]

    def details(count: int) -> list[dict[str, Any]]:
        return [entry(channels=channels[:count])]

    count = 1
    while len(json.dumps(details(count + 1), separators=(",", ":"))) <= (
        MAX_AUTHORIZATION_DETAILS_BYTES
    ):
        count += 1
    assert count < MAX_DETAIL_CHANNELS, "the byte limit binds before the count limit"
    assert len(parse_authorization_details(details(count))) == 1
    with pytest.raises(AuthorizationDetailsError, match="bytes"):
        parse_authorization_details(details(count + 1))


def test_deep_nesting_is_refused_before_it_is_walked() -> None:
    deep: Any = ["doc:1"]
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(AuthorizationDetailsError):
        parse_authorization_details([entry(channels=deep)])


def test_a_ticket_carries_the_tokens_details_and_client() -> None:
    details = [entry()]
    access = {
        "iss": "i",
        "aud": "ws",
        "sub": "acme:42",
        "sid": "s",
        "iat": 100,
        "exp": 400,
        "client_id": "acme",
        "authorization_details": details,
    }
    claims = ticket_claims(access, 100)
    assert claims["authorization_details"] == details and claims["client_id"] == "acme"
