"""Settings from the environment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from auth_service.settings import Settings as AuthSettings
from shared.config.env import ConfigError
from ws_service.settings import Settings, TrustedIssuer


def test_defaults_follow_the_local_auth_service() -> None:
    settings = Settings.from_env({})
    assert settings.issuer == "http://127.0.0.1:8081"
    assert settings.jwks_url == "http://127.0.0.1:8081/.well-known/jwks.json"
    assert (settings.host, settings.port, settings.audience) == ("127.0.0.1", 8082, "ws")
    assert (settings.auth_timeout, settings.expiry_warning, settings.leeway) == (10.0, 60.0, 5)
    assert settings.max_message_bytes == 65536
    assert settings.allowed_origins == settings.api_keys == ()
    assert settings.redis_url == ""


def test_auth_host_port_and_issuer_are_read_from_the_same_environment() -> None:
    assert Settings.from_env({"AUTH_HOST": "10.0.0.5", "AUTH_PORT": "9000"}).issuer == (
        "http://10.0.0.5:9000"
    )
    settings = Settings.from_env({"AUTH_ISSUER": "https://auth.example"})
    assert settings.issuer == "https://auth.example"
    assert settings.jwks_url == "https://auth.example/.well-known/jwks.json"


def test_the_key_set_is_the_issuers_own_by_default() -> None:
    """docs/configuration.md says WS_JWKS_URL defaults to {issuer}/.well-known/jwks.json, but it
    followed AUTH_ISSUER alone: with only WS_ISSUER set, keys were fetched from 127.0.0.1:8081
    (an outside probe)."""
    settings = Settings.from_env({"WS_ISSUER": "https://Auth.Example/auth/"})
    assert settings.jwks_url == "https://auth.example/auth/.well-known/jwks.json"
    both = {"AUTH_ISSUER": "https://a.example", "WS_ISSUER": "https://b.example"}
    assert Settings.from_env(both).jwks_url == "https://b.example/.well-known/jwks.json"


def test_ws_issuer_is_read_as_auth_service_reads_its_own() -> None:
    """auth_service drops a trailing slash from AUTH_ISSUER, so its tokens say iss without it:
    WS_ISSUER set to the same value (as docs/operations.md asks) refused every token, while
    both services reported ready."""
    for environ in ({"WS_ISSUER": "https://host/auth/"}, {"AUTH_ISSUER": "https://host/auth/"}):
        assert Settings.from_env(environ).issuer == "https://host/auth"
    secret = {"AUTH_KEY_ENCRYPTION_SECRETS": "a-key-encryption-secret-0123456789"}
    auth = AuthSettings.from_env({"AUTH_ISSUER": "https://host/auth/", **secret})
    assert auth.issuer == Settings.from_env({"WS_ISSUER": "https://host/auth/"}).issuer


def test_every_ws_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "WS_HOST": "192.0.2.1",
            "WS_PORT": "9999",
            "WS_JWKS_URL": "http://keys/jwks",
            "WS_ISSUER": "http://iss",
            "WS_AUDIENCE": "chat",
            "WS_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "WS_AUTH_TIMEOUT": "3",
            "WS_EXPIRY_WARNING": "30",
            "WS_KEY_WITHDRAWAL_GRACE": "3",
            "WS_LEEWAY": "2",
            "WS_MAX_MESSAGE_BYTES": "32768",
            "WS_API_KEYS": "k" * 20 + ",key-number-two-123",
            "REDIS_URL": "redis://:hunter2-secret@redis:6379/0",
            "WS_WORKERS": "4",
        }
    )
    assert settings.host == "192.0.2.1"
    assert settings.workers == 4
    assert settings.port == 9999
    assert settings.jwks_url == "http://keys/jwks"
    assert settings.issuer == "http://iss"
    assert settings.audience == "chat"
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert (settings.auth_timeout, settings.expiry_warning, settings.leeway) == (3.0, 30.0, 2)
    assert settings.key_withdrawal_grace == 3
    assert settings.max_message_bytes == 32768
    assert settings.api_keys == ("k" * 20, "key-number-two-123")
    assert settings.redis_url == "redis://:hunter2-secret@redis:6379/0"
    assert "k" * 20 not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert "redis://***@redis:6379/0" in repr(settings)


@pytest.mark.parametrize(
    "environ",
    [
        {"WS_PORT": "x"},
        {"WS_API_KEYS": "short"},
        {"WS_JWKS_MIN_TTL": "100", "WS_JWKS_MAX_TTL": "10"},
        {"WS_WORKERS": "2"},
        {"WS_WORKERS": "0", "REDIS_URL": "redis://redis:6379/0"},
    ],
)
def test_bad_settings_stop_start_up(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    "environ",
    [
        {"WS_API_KEYS": "correct horse battery staple"},
        {"WS_API_KEYS": "key-number-one-123,cl\u00e9-secr\u00e8te-0123456789"},
        {"WS_API_KEYS": "tab\there-0123456789abc"},
        {"WS_METRICS_TOKEN": "metrics token with spaces"},
    ],
)
def test_a_key_no_bearer_header_can_carry_stops_start_up(environ: dict[str, str]) -> None:
    """A key with a space or a non-ASCII character started the service, and every call with it
    then got 401: ``Authorization: Bearer`` credentials are printable ASCII without spaces (an
    outside probe)."""
    with pytest.raises(ConfigError, match="printable ASCII without spaces"):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WS_LEEWAY": "999999999"}, "WS_LEEWAY must be at most 300"),
        ({"WS_JWKS_URL": "auth:8081/.well-known/jwks.json"}, "WS_JWKS_URL must be an absolute"),
        ({"WS_JWKS_URL": "ftp://auth/jwks"}, "WS_JWKS_URL must be an absolute"),
        ({"AUTH_ISSUER": "chat.example.com/auth"}, "AUTH_ISSUER must be an absolute"),
        ({"AUTH_ISSUER": "https://chat.example.com/auth?x=1"}, "AUTH_ISSUER must be an absolute"),
        ({"WS_AUTH_TIMEOUT": "nan"}, "WS_AUTH_TIMEOUT must be a finite number"),
        ({"WS_PORT": "65536"}, "WS_PORT must be at most 65535"),
        ({"WS_HEARTBEAT": "1e300"}, "WS_HEARTBEAT must be at most 600"),
        ({"WS_AUTH_TIMEOUT": "600.5"}, "WS_AUTH_TIMEOUT must be at most 600"),
        ({"WS_DRAIN_SECONDS": "1e9"}, "WS_DRAIN_SECONDS must be at most 600"),
        ({"WS_HTTP_TIMEOUT": "601"}, "WS_HTTP_TIMEOUT must be at most 600"),
    ],
)
def test_settings_nothing_could_use_stop_start_up(environ: dict[str, str], message: str) -> None:
    """Each started before (an outside probe): a leeway of years admitted long-expired tokens, a
    JWKS URL without a scheme left the service unready for good, an issuer without one matched
    no token, and a NaN timeout closed every socket at once."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WS_PRESENCE_TTL": "1e300"}, "WS_PRESENCE_TTL must be at most 600"),
        ({"WS_WEBHOOK_CLAIM_IDLE": "1e300"}, "WS_WEBHOOK_CLAIM_IDLE must be at most 600"),
        ({"WS_WEBHOOK_BATCH": "99999999999999999999"}, "WS_WEBHOOK_BATCH must be at most 10000"),
    ],
)
def test_numbers_redis_cannot_take_stop_start_up(environ: dict[str, str], message: str) -> None:
    """Each started before and then failed every call that carried it to Redis (an outside
    probe): a presence ttl of 1e300 left the replica unregistered, the per-user cap unenforced
    and presence unrecorded; a claim idle of 1e300 (XAUTOCLAIM) or a batch of 1e20 (XREADGROUP
    COUNT) delivered no webhook at all, each logged as "webhook queue unreachable"."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


@pytest.mark.parametrize("value", ["1024", "4096", "16383"])
def test_a_frame_limit_an_auth_frame_may_not_fit_stops_start_up(value: str) -> None:
    """An ``auth`` frame may take the 16 KiB any frame may before auth (a token with its
    ``authorization_details``, about 6 KB, and a DPoP proof): with WS_MAX_MESSAGE_BYTES=1024 a
    DPoP-bound login's socket was closed 1009 on its first ``auth``, a close whose action is
    ``stop``, and a renewal past the limit the same (an outside probe)."""
    with pytest.raises(ConfigError, match="WS_MAX_MESSAGE_BYTES must be at least 16384"):
        Settings.from_env({"WS_MAX_MESSAGE_BYTES": value})
    assert Settings.from_env({"WS_MAX_MESSAGE_BYTES": "16384"}).max_message_bytes == 16384


def test_the_issuer_is_spelled_as_auth_service_spells_it() -> None:
    """Both services lower-case the scheme and host, so the iss auth_service writes is the one
    ws_service expects however either setting is written."""
    issuer = "HTTPS://Chat.Example.com/Auth"
    assert Settings.from_env({"AUTH_ISSUER": issuer}).issuer == "https://chat.example.com/Auth"
    assert Settings.from_env({"WS_ISSUER": issuer}).issuer == "https://chat.example.com/Auth"


IDP = {"issuer": "https://idp.example.com/", "jwks_url": "https://idp.example.com/jwks"}


def test_trusted_issuers_are_read_from_json() -> None:
    entries = [
        {**IDP, "audience": "api", "algorithms": ["ES256", "RS256", "ES256"]},
        {
            "issuer": "https://login.example.org",
            "jwks_url": "http://keys.internal/jwks",
            "audience": "ws",
            "algorithms": ["PS256"],
            "username_claim": "email",
        },
    ]
    settings = Settings.from_env({"WS_TRUSTED_ISSUERS": json.dumps(entries)})
    assert settings.trusted_issuers == (
        TrustedIssuer(IDP["issuer"], IDP["jwks_url"], "api", ("ES256", "RS256")),
        TrustedIssuer(
            "https://login.example.org", "http://keys.internal/jwks", "ws", ("PS256",), "email"
        ),
    )
    assert Settings.from_env({}).trusted_issuers == ()


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ("{not json", "JSON list"),
        ({"issuer": "x"}, "JSON list"),
        (["https://idp"], "entries are objects"),
        ([{**IDP, "audience": "a", "algorithms": ["ES256"], "jku": "x"}], "entries are objects"),
        ([{**IDP, "algorithms": ["ES256"]}], "audience"),
        ([{**IDP, "audience": "", "algorithms": ["ES256"]}], "audience"),
        ([{**IDP, "audience": "a", "algorithms": ["ES256"], "username_claim": 3}], "username"),
        ([{**IDP, "audience": "a", "algorithms": []}], "algorithms"),
        ([{**IDP, "audience": "a", "algorithms": ["none"]}], "never none or an HMAC"),
        ([{**IDP, "audience": "a", "algorithms": ["HS256"]}], "never none or an HMAC"),
        ([{**IDP, "audience": "a", "algorithms": "ES256"}], "algorithms"),
        (
            [{**IDP, "jwks_url": "file:///etc/keys", "audience": "a", "algorithms": ["ES256"]}],
            "URL",
        ),
        ([{**IDP, "audience": "a", "algorithms": ["ES256"]}] * 2, "twice"),
        (
            [{**IDP, "issuer": "http://127.0.0.1:8081", "audience": "a", "algorithms": ["ES256"]}],
            "WS_ISSUER",
        ),
    ],
)
def test_bad_trusted_issuers_stop_start_up(entries: Any, problem: str) -> None:
    raw = entries if isinstance(entries, str) else json.dumps(entries)
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env({"WS_TRUSTED_ISSUERS": raw})


PROXY = {"WS_PROXY_SECRET": "proxy-secret-0123456789"}


def test_proxies_are_namespace_options_read_from_ws_proxy() -> None:
    settings = Settings.from_env(
        {
            **PROXY,
            "WS_PROXY": "doc.subscribe=http://app:9000/rt/subscribe\n"
            "  doc.publish=https://app/rt/publish?v=1 team.v2.subscribe=http://app/t",
            "WS_PROXY_TIMEOUT": "0.5",
            "WS_PROXY_CACHE_TTL": "0",
            "WS_PROXY_MAX_IN_FLIGHT": "8",
        }
    )
    doc = settings.namespaces.of("doc:1")
    assert (doc.subscribe_proxy, doc.publish_proxy) == (
        "http://app:9000/rt/subscribe",
        "https://app/rt/publish?v=1",
    )
    team = settings.namespaces.of("team.v2:x")
    assert (team.subscribe_proxy, team.publish_proxy) == ("http://app/t", None)
    assert settings.namespaces.of("chat:a").subscribe_proxy is None
    assert (settings.proxy_timeout, settings.proxy_cache_ttl) == (0.5, 0.0)
    assert settings.proxy_max_in_flight == 8
    assert settings.proxy_secrets == ("proxy-secret-0123456789",)
    assert "proxy-secret" not in repr(settings)
    defaults = Settings.from_env({})
    assert (defaults.proxy, defaults.proxy_timeout, defaults.proxy_cache_ttl) == ({}, 2.0, 5.0)


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"WS_PROXY": "doc.subscribe=http://app/s"}, "WS_PROXY_SECRET"),
        ({**PROXY, "WS_PROXY": "doc.history=http://app/s"}, "namespace.subscribe=url"),
        ({**PROXY, "WS_PROXY": "subscribe=http://app/s"}, "namespace.subscribe=url"),
        ({**PROXY, "WS_PROXY": "doc:x.subscribe=http://app/s"}, "namespace.subscribe=url"),
        ({**PROXY, "WS_PROXY": "doc.subscribe"}, "http"),
        ({**PROXY, "WS_PROXY": "doc.subscribe=ftp://app/s"}, "http"),
        ({**PROXY, "WS_PROXY": "doc.subscribe=http:///s"}, "http"),
        ({**PROXY, "WS_PROXY": "doc.publish=http://a/p doc.publish=http://b/p"}, "twice"),
        ({**PROXY, "WS_PROXY": "user.subscribe=http://app/s"}, "user"),
        ({"WS_PROXY_SECRET": "short", "WS_PROXY": "doc.publish=http://a/p"}, "16 characters"),
        ({**PROXY, "WS_PROXY_TIMEOUT": "0"}, "WS_PROXY_TIMEOUT"),
    ],
)
def test_bad_proxies_stop_start_up(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env(environ)
