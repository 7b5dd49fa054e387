"""WS_WEBHOOK_* and WS_API_TIMEOUT: a URL needs a secret (or its _FILE), publish events are a
per-namespace option, secrets never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config.env import ConfigError
from ws_service.settings import Settings

BASE = {"WS_JWKS_URL": "http://keys.test/jwks", "WS_ISSUER": "http://auth.test"}
SECRET = "webhook-secret-0123456789"
HOOK = {**BASE, "WS_WEBHOOK_URL": "https://app.test/hooks"}


def test_without_a_url_nothing_is_reported() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.webhook_url, settings.webhook_secrets) == ("", ())
    assert not settings.namespaces.of("chat:a").webhook_publish
    assert settings.api_timeout == 2.0


def test_a_url_with_secrets_from_a_file_and_publish_namespaces(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{SECRET}\nold-{SECRET}\n")
    settings = Settings.from_env(
        {
            **HOOK,
            "WS_WEBHOOK_SECRET_FILE": str(secret_file),
            "WS_WEBHOOK_PUBLISH": "chat, orders",
            "WS_WEBHOOK_QUEUE": "50",
        }
    )
    assert settings.webhook_secrets == (SECRET, f"old-{SECRET}")
    assert settings.namespaces.of("orders:1").webhook_publish
    assert settings.namespaces.of("chat:a").webhook_publish
    assert settings.namespaces.of("chat:a").presence, "other options of the namespace stay"
    assert not settings.namespaces.of("news:a").webhook_publish
    assert settings.webhook_queue == 50
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (HOOK, "WS_WEBHOOK_SECRET"),
        ({**HOOK, "WS_WEBHOOK_SECRET": "short"}, "16+"),
        ({**BASE, "WS_WEBHOOK_URL": "ftp://app.test/", "WS_WEBHOOK_SECRET": SECRET}, "http"),
        ({**BASE, "WS_WEBHOOK_PUBLISH": "chat"}, "WS_WEBHOOK_URL"),
        ({**HOOK, "WS_WEBHOOK_SECRET": SECRET, "WS_WEBHOOK_PUBLISH": "user"}, "user"),
        ({**HOOK, "WS_WEBHOOK_SECRET": SECRET, "WS_WEBHOOK_TIMEOUT": "0"}, "WS_WEBHOOK_TIMEOUT"),
    ],
)
def test_misconfigurations_stop_start_up(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env)
