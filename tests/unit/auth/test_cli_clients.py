"""``python -m auth_service clients ...`` in process, on a SQLite file: a secret is printed once
and never logged, and a deletion's revocations wait in the outbox for a running service."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest

from auth_service.__main__ import main
from auth_service.app import build_keyring, build_service
from auth_service.domain.store import Announcement
from auth_service.settings import Settings
from auth_service.store import open_store
from realtime_gateway_protocol.events import REVOCATIONS_TOPIC, SessionRevoked, decode_event


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTH_DEV", "1")
    monkeypatch.setenv("AUTH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AUTH_ISSUER", "http://auth.test")
    return tmp_path


def create(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    assert main(["clients", "create", "acme", *args, "--json"]) == 0
    out, err = capsys.readouterr()
    created: dict[str, str] = json.loads(out)
    assert created["client_secret"] not in err, "never logged"
    return created


def test_create_prints_the_secret_once_and_list_never(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    created = create(capsys, "--grant", "token-exchange", "--scope", "chat:read doc:read")
    assert set(created) == {"client_id", "client_secret"} and created["client_id"] == "acme"
    assert main(["clients", "create", "zeta", "--namespaces", "doc team"]) == 0
    out = capsys.readouterr().out
    assert "client_id:     zeta" in out and "client_secret: " in out
    assert main(["clients", "list"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("  ")[:4] for line in lines] == [
        ["acme", "grants=token-exchange", 'scope="chat:read doc:read"', "namespaces=*"],
        ["zeta", "grants=-", "scope=*", 'namespaces="doc team"'],
    ]
    assert created["client_secret"] not in out + err
    assert main(["clients", "create", "acme"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "auth_service: a client 'acme' exists"
    assert main(["clients", "create", "realtime-gateway"]) == 1
    assert "public client" in capsys.readouterr().err


def test_rotate_secret_keeps_the_old_one_for_the_grace(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = create(capsys)
    assert main(["clients", "rotate-secret", "acme", "--grace", "3600", "--json"]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["client_id"] == "acme" and rotated["client_secret"] != first["client_secret"]
    assert main(["clients", "list"]) == 0
    assert "previous_secret_until=" in capsys.readouterr().out
    assert main(["clients", "rotate-secret", "acme", "--grace", "0"]) == 0
    out = capsys.readouterr().out
    assert "client_secret: " in out and "the previous secret works until" in out
    assert main(["clients", "list"]) == 0
    assert "previous_secret_until" not in capsys.readouterr().out
    assert main(["clients", "rotate-secret", "ghost"]) == 1
    with pytest.raises(SystemExit):
        main(["clients", "rotate-secret", "acme", "--grace", "-1"])


async def exchange(secret: str) -> str:
    """One token exchange through the domain, on the CLI's database: the session's id."""
    settings = Settings.from_env(use_checkout_dev_secret=True)
    store = await open_store(settings.database_url)
    try:
        ring = build_keyring(settings, store)
        await ring.maintain(time.time())

        class Publish:
            def announcements(self, events: object) -> list[Announcement]:
                raise AssertionError("an exchange announces nothing")

            async def deliver(self, kept: object) -> None:
                raise AssertionError("an exchange announces nothing")

        service = build_service(settings, store, ring, Publish())
        client = await store.get_client("acme")
        assert client is not None
        claims = {
            "iss": "acme",
            "aud": "http://auth.test",
            "sub": "42",
            "exp": int(time.time()) + 60,
            "jti": uuid.uuid4().hex,
        }
        pair = await service.exchange(client, jwt.encode(claims, secret, "HS256"))
        sid: str = jwt.decode(pair.access_token, options={"verify_signature": False})["sid"]
        return sid
    finally:
        await store.close()


async def outbox(env: Path) -> list[object]:
    store = await open_store(f"sqlite:///{env / 'auth.db'}")
    try:
        items = await store.outbox_batch(10)
    finally:
        await store.close()
    assert {item.topic for item in items} <= {REVOCATIONS_TOPIC}
    return [decode_event(item.payload) for item in items]


def test_delete_ends_the_users_sessions_through_the_outbox(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = create(capsys, "--grant", "token-exchange")["client_secret"]
    sid = asyncio.run(exchange(secret))
    assert main(["clients", "delete", "acme"]) == 0
    assert "1 live session(s) ended" in capsys.readouterr().out
    (event,) = asyncio.run(outbox(env))
    assert isinstance(event, SessionRevoked) and (event.sid, event.sub) == (sid, "acme:42")
    assert main(["clients", "delete", "acme"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("auth_service: database ")
    assert err[-1] == "auth_service: no client 'acme' (see `clients list`)"


def test_a_client_trusts_an_identity_provider_and_the_trust_changes(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idp = [
        "--trust-issuer",
        "https://idp.example.com/",
        "--jwks-uri",
        "https://idp.example.com/jwks",
    ]
    create(capsys, "--grant", "token-exchange", *idp, "--algorithm", "ES256")
    assert main(["clients", "list"]) == 0
    assert capsys.readouterr().out.split("  ")[-1] == (
        "trusts=https://idp.example.com/ jwks_uri=https://idp.example.com/jwks "
        'audience="acme" algorithms=ES256\n'
    )
    assert main(["clients", "update", "acme", *idp, "--audience", "realtime-api"]) == 0
    assert capsys.readouterr().out.endswith('audience="realtime-api" algorithms=RS256\n')
    assert main(["clients", "update", "acme", "--no-trust-issuer"]) == 0
    assert "trusts=" not in capsys.readouterr().out
    refusals = [
        (["clients", "create", "plain", *idp], "only a client with the token-exchange grant"),
        (["clients", "update", "acme", "--trust-issuer", "x"], "--trust-issuer needs --jwks-uri"),
        (["clients", "update", "acme"], "say --trust-issuer ISSUER --jwks-uri URL, or"),
        (["clients", "update", "acme", *idp, "--no-trust-issuer"], "say --trust-issuer"),
        (["clients", "update", "ghost", *idp], "no client 'ghost'"),
        (["clients", "update", "acme", "--audience", "a"], "go with --trust-issuer"),
        (
            ["clients", "update", "acme", "--trust-issuer", "i", "--jwks-uri", "file:///etc/x"],
            "the JWKS URI must be an http or https URL",
        ),
    ]
    for argv, message in refusals:
        assert main(argv) == 1, argv
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["clients", "update", "acme", *idp, "--algorithm", "HS256"])
