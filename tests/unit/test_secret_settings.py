"""Every secret setting of both services can come from a file, and never shows in a repr."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from auth_service.settings import Settings as AuthSettings
from shared.config.env import ConfigError
from ws_service.settings import Settings as WsSettings

AUTH_BASE = {"AUTH_KEY_ENCRYPTION_SECRETS": "base-key-encryption-secret-0123"}
VALUE = "file-secret-value-0123456789"


@dataclass(frozen=True)
class Secret:
    name: str
    from_env: Callable[[Mapping[str, str]], object]
    read: Callable[[object], str]
    """Where the secret lands in the settings (a URL holds it percent-encoded: VALUE needs none)."""
    base: Mapping[str, str]


def _attr(name: str) -> Callable[[object], str]:
    def read(settings: object) -> str:
        value = getattr(settings, name)
        return ",".join(value) if isinstance(value, tuple) else str(value)

    return read


SECRETS = [
    Secret(
        "AUTH_KEY_ENCRYPTION_SECRETS", AuthSettings.from_env, _attr("key_encryption_secrets"), {}
    ),
    Secret("AUTH_METRICS_TOKEN", AuthSettings.from_env, _attr("metrics_token"), AUTH_BASE),
    Secret("AUTH_DATABASE_URL", AuthSettings.from_env, _attr("database_url"), AUTH_BASE),
    Secret(
        "AUTH_DATABASE_PASSWORD",
        AuthSettings.from_env,
        _attr("database_url"),
        {**AUTH_BASE, "AUTH_DATABASE_URL": "postgresql://gateway@db:5432/gateway"},
    ),
    Secret("REDIS_URL", AuthSettings.from_env, _attr("redis_url"), AUTH_BASE),
    Secret(
        "REDIS_PASSWORD",
        AuthSettings.from_env,
        _attr("redis_url"),
        {**AUTH_BASE, "REDIS_URL": "redis://redis:6379/0"},
    ),
    Secret(
        "REDIS_SENTINEL_PASSWORD",
        AuthSettings.from_env,
        _attr("redis_url"),
        {**AUTH_BASE, "REDIS_URL": "rediss+sentinel://s1,s2/main"},
    ),
    Secret("WS_API_KEYS", WsSettings.from_env, _attr("api_keys"), {}),
    Secret("WS_METRICS_TOKEN", WsSettings.from_env, _attr("metrics_token"), {}),
    Secret("REDIS_URL", WsSettings.from_env, _attr("redis_url"), {}),
    Secret("REDIS_PASSWORD", WsSettings.from_env, _attr("redis_url"), {"REDIS_URL": "redis://r/0"}),
    Secret(
        "REDIS_SENTINEL_PASSWORD",
        WsSettings.from_env,
        _attr("redis_url"),
        {"REDIS_URL": "redis+sentinel://s1/main?db=1"},
    ),
    Secret(
        "WS_WEBHOOK_SECRET",
        WsSettings.from_env,
        _attr("webhook_secrets"),
        {"WS_WEBHOOK_URL": "https://app.test/hooks"},
    ),
]
IDS = [f"{'auth' if s.from_env == AuthSettings.from_env else 'ws'}:{s.name}" for s in SECRETS]


def file_value(secret: Secret) -> str:
    """What the operator writes: a URL for the *_URL settings, else the bare secret."""
    if secret.name == "AUTH_DATABASE_URL":
        return f"postgresql://gateway:{VALUE}@db:5432/gateway"
    if secret.name == "REDIS_URL":
        return f"redis://:{VALUE}@redis:6379/0"
    return VALUE


@pytest.mark.parametrize("secret", SECRETS, ids=IDS)
def test_each_secret_setting_reads_its_file(secret: Secret, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(file_value(secret) + "\n")
    settings = secret.from_env({**secret.base, f"{secret.name}_FILE": str(path)})
    assert VALUE in secret.read(settings)
    assert VALUE not in repr(settings)
    assert VALUE not in str(settings)


@pytest.mark.parametrize("secret", SECRETS, ids=IDS)
def test_each_secret_setting_refuses_both_forms(secret: Secret, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(file_value(secret))
    environ = {**secret.base, secret.name: file_value(secret), f"{secret.name}_FILE": str(path)}
    with pytest.raises(ConfigError, match=f"{secret.name} and {secret.name}_FILE") as caught:
        secret.from_env(environ)
    assert VALUE not in str(caught.value)


@pytest.mark.parametrize("secret", SECRETS, ids=IDS)
def test_each_secret_setting_names_a_missing_file(secret: Secret, tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=f"{secret.name}_FILE={missing} cannot be read"):
        secret.from_env({**secret.base, f"{secret.name}_FILE": str(missing)})


@pytest.mark.parametrize("secret", SECRETS, ids=IDS)
def test_each_secret_setting_read_from_the_environment_stays_out_of_the_repr(
    secret: Secret,
) -> None:
    settings = secret.from_env({**secret.base, secret.name: file_value(secret)})
    assert VALUE in secret.read(settings)
    assert VALUE not in repr(settings)


def test_a_short_secret_from_a_file_is_refused_without_being_shown(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("short-one\n")
    with pytest.raises(ConfigError, match="placeholder or a secret shorter") as caught:
        AuthSettings.from_env({"AUTH_KEY_ENCRYPTION_SECRETS_FILE": str(path)})
    assert "short-one" not in str(caught.value)
    with pytest.raises(ConfigError, match="at least 16 characters") as caught:
        WsSettings.from_env({"WS_API_KEYS_FILE": str(path)})
    assert "short-one" not in str(caught.value)


def test_a_key_encryption_secret_file_may_list_new_and_old_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("new-key-encryption-secret-01\nold-key-encryption-secret-01\n")
    settings = AuthSettings.from_env({"AUTH_KEY_ENCRYPTION_SECRETS_FILE": str(path)})
    assert settings.key_encryption_secrets == (
        "new-key-encryption-secret-01",
        "old-key-encryption-secret-01",
    )


@pytest.mark.parametrize("token", ["correct horse battery staple", "m\u00e9trics-token-0123456789"])
def test_a_metrics_token_no_bearer_header_can_carry_stops_auth_start_up(token: str) -> None:
    """The same rule as ws_service's keys: every scrape would have been answered 401."""
    with pytest.raises(ConfigError, match="AUTH_METRICS_TOKEN must be printable ASCII") as caught:
        AuthSettings.from_env({**AUTH_BASE, "AUTH_METRICS_TOKEN": token})
    assert token not in str(caught.value)
