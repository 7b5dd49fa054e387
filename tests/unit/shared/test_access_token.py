"""The access-token contract both services and the test token maker share."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_gateway_protocol.access_token import (
    REQUIRED_CLAIMS,
    Claims,
    TokenRef,
    same_media_type,
)


def payload(**overrides: Any) -> dict[str, Any]:
    base = {"sub": "42", "sid": "s1", "jti": "j1", "iat": 10, "exp": 20.0}
    return {**base, **overrides}


def test_every_claim_but_scope_and_username_is_required() -> None:
    assert set(REQUIRED_CLAIMS) == {"iss", "sub", "aud", "exp", "iat", "jti", "sid"}


def test_claims_keep_what_a_verifier_acts_on() -> None:
    claims = Claims.from_payload(payload(scope="a:read  b:write", preferred_username="Al"), "k1")
    assert (claims.scopes, claims.username, claims.exp, claims.kid) == (
        frozenset({"a:read", "b:write"}),
        "Al",
        20,
        "k1",
    )
    assert claims.ref == TokenRef(sid="s1", sub="42", iat=10)


def test_every_socket_of_one_key_shares_one_kid_string() -> None:
    kids = ["".join(["key", "-", str(n)]) for n in (1, 1)]
    assert kids[0] is not kids[1]
    first, second = (Claims.from_payload(payload(), kid) for kid in kids)
    assert first.kid is second.kid


def test_every_socket_of_one_scope_shares_one_set_of_scopes() -> None:
    """A frozenset of scopes is about 330 bytes a socket if each socket keeps its own (a new
    function once slid in between ``scope_set`` and its cache decorator, and memory per idle
    socket rose by that much)."""
    scopes = ["".join(["chat:read ", "chat:write"]) for _ in (1, 2)]
    assert scopes[0] is not scopes[1]
    first, second = (Claims.from_payload(payload(scope=scope), "k1") for scope in scopes)
    assert first.scopes is second.scopes


@pytest.mark.parametrize("typ", [["at+jwt"], {"at+jwt": 1}, 1, None, True])
def test_a_typ_that_is_not_a_string_names_no_media_type(typ: object) -> None:
    """An unverified header's ``typ`` can be any JSON value; a list once raised TypeError (it
    was hashed for a cache) where it must be a plain refusal."""
    assert same_media_type(typ, "at+jwt") is False


@pytest.mark.parametrize(
    "bad", [{"sub": ""}, {"sid": 7}, {"scope": ["a:read"]}, {"iat": True}, {"exp": "20"}]
)
def test_wrong_types_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Claims.from_payload(payload(**bad), "k1")


def test_a_username_of_another_type_is_dropped() -> None:
    assert Claims.from_payload(payload(preferred_username=5), "k1").username is None


def test_another_providers_token_may_have_no_sid_and_name_its_user_elsewhere() -> None:
    base = {k: v for k, v in payload(email="al@example.com").items() if k != "sid"}
    claims = Claims.from_payload(base, "k1", username_claim="email")
    assert (claims.sid, claims.username) == ("", "al@example.com")


def test_a_dpop_bound_token_names_its_key_once_per_key() -> None:
    jkts = ["".join(["NzbLsXh8", str(n)]) for n in (1, 1)]
    first, second = (Claims.from_payload(payload(cnf={"jkt": jkt}), "k1") for jkt in jkts)
    assert first.jkt == "NzbLsXh81" and first.jkt is second.jkt
    assert Claims.from_payload(payload(), "k1").jkt is None


@pytest.mark.parametrize(
    "cnf", ["jkt", {}, {"jkt": ""}, {"jkt": 7}, {"x5t#S256": "abc"}, {"jkt": "a", "jwk": {}}]
)
def test_a_binding_the_verifier_cannot_check_refuses_the_token(cnf: object) -> None:
    with pytest.raises(ValueError, match="cnf"):
        Claims.from_payload(payload(cnf=cnf), "k1")
