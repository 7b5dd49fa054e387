from __future__ import annotations

from pathlib import Path

import pytest

from auth_service.browser import browser_cookies
from auth_service.settings import SECRET_FILE, ConfigError, Settings

SECRET = "s3cr3t-value-long-enough"


def test_defaults_follow_host_and_port(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"AUTH_KEY_ENCRYPTION_SECRETS": SECRET, "AUTH_PORT": "9000", "AUTH_DATA_DIR": str(tmp_path)}
    )
    assert settings.issuer == "http://127.0.0.1:9000"
    assert settings.jwks_uri == "http://127.0.0.1:9000/.well-known/jwks.json"
    assert settings.database_url == f"sqlite:///{tmp_path.as_posix()}/auth.db"
    assert settings.access_token_ttl == 300 and settings.refresh_reuse_grace == 10
    assert SECRET not in repr(settings)


def test_issuer_trailing_slash_is_dropped() -> None:
    env = {"AUTH_KEY_ENCRYPTION_SECRETS": SECRET, "AUTH_ISSUER": "https://example.test/auth/"}
    assert Settings.from_env(env).issuer == "https://example.test/auth"


def test_the_issuers_scheme_and_host_are_lower_case() -> None:
    """As a browser's Origin spells them: HTTPS://Chat.Example.com made cookies without Secure
    or __Host- and refused the page's own origin (an outside probe); the path keeps its case."""
    env = {
        "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
        "AUTH_ISSUER": "HTTPS://Chat.Example.COM:8443/Auth",
    }
    settings = Settings.from_env(env)
    assert settings.issuer == "https://chat.example.com:8443/Auth"
    cookies = browser_cookies(settings)
    assert cookies.secure and cookies.session.startswith("__Host-")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "AUTH_KEY_ENCRYPTION_SECRETS is required"),
        ({"AUTH_KEY_ENCRYPTION_SECRETS": "changeme"}, "placeholder"),
        ({"AUTH_KEY_ENCRYPTION_SECRETS": f"{SECRET},short"}, "placeholder"),
        ({"AUTH_KEY_ENCRYPTION_SECRETS": SECRET, "AUTH_ACCESS_TOKEN_TTL": "soon"}, "integer"),
        (
            {
                "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
                "AUTH_JWKS_MAX_AGE": "900",
                "AUTH_KEY_ROTATION_INTERVAL": "600",
            },
            "longer",
        ),
        ({"AUTH_KEY_ENCRYPTION_SECRETS": SECRET, "AUTH_DEV": "perhaps"}, "AUTH_DEV"),
        (
            {"AUTH_KEY_ENCRYPTION_SECRETS": SECRET, "AUTH_WORKERS": "2", "REDIS_URL": "redis://r"},
            "AUTH_WORKERS above 1 needs PostgreSQL",
        ),
        (
            {
                "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
                "AUTH_WORKERS": "2",
                "AUTH_DATABASE_URL": "postgresql://db/auth",
            },
            "and REDIS_URL",
        ),
        (
            {
                "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
                "AUTH_WORKERS": "2",
                "AUTH_DATABASE_URL": "postgresql://db/auth",
                "REDIS_URL": "redis://r",
                "AUTH_PORT": "0",
            },
            "fixed AUTH_PORT",
        ),
    ],
)
def test_bad_configuration_stops_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "url",
    [
        "postgress://gateway@db.example:5432/gateway",
        "postgresql+asyncpg://gateway@db.example/gateway",
        "POSTGRESQL://gateway@db.example/gateway",
        "mysql://gateway@db.example/gateway",
    ],
)
def test_a_database_url_of_another_scheme_stops_start_up_without_its_password(url: str) -> None:
    """An outside probe: a mistyped scheme ran on a new SQLite file named after the URL, with
    AUTH_DATABASE_PASSWORD in it (in the file name, or in the error line where the directory was
    read-only); each replica had a database of its own."""
    env = {
        "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
        "AUTH_DATABASE_URL": url,
        "AUTH_DATABASE_PASSWORD": "Db-Passw0rd-SHOULD-NOT-LEAK",
    }
    with pytest.raises(ConfigError, match="AUTH_DATABASE_URL must start with postgresql://") as err:
        Settings.from_env(env)
    assert "Passw0rd" not in str(err.value)


def test_a_sqlite_url_needs_three_slashes() -> None:
    env = {"AUTH_KEY_ENCRYPTION_SECRETS": SECRET, "AUTH_DATABASE_URL": "sqlite://auth.db"}
    with pytest.raises(ConfigError, match="three slashes"):
        Settings.from_env(env)
    for fine in ("sqlite:////var/lib/auth.db", "postgres://db/auth", "/var/lib/auth.db"):
        assert Settings.from_env({**env, "AUTH_DATABASE_URL": fine}).database_url == fine


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AUTH_PORT", "70000", "AUTH_PORT must be at most 65535"),
        ("AUTH_HTTP_TIMEOUT", "nan", "AUTH_HTTP_TIMEOUT must be a finite number"),
        ("AUTH_HTTP_TIMEOUT", "inf", "AUTH_HTTP_TIMEOUT must be a finite number"),
        ("AUTH_DATABASE_TIMEOUT", "-inf", "must be a finite number"),
        # Absurd but finite (an outside probe): tokens that said expires_in 1e23, beyond what a
        # browser reads exactly, and timeouts that are none.
        ("AUTH_ACCESS_TOKEN_TTL", "99999999999999999999999", "at most 86400"),
        ("AUTH_ACCESS_TOKEN_TTL", "86401", "at most 86400"),
        ("AUTH_REFRESH_TOKEN_TTL", "315360001", "at most 315360000"),
        ("AUTH_SESSION_LIFETIME", "9007199254740993", "at most 315360000"),
        ("AUTH_HTTP_TIMEOUT", "1e300", "AUTH_HTTP_TIMEOUT must be at most 600, got 1e\\+300"),
        ("AUTH_DATABASE_TIMEOUT", "601", "at most 600"),
    ],
)
def test_out_of_range_and_non_finite_numbers_stop_start_up(
    name: str, value: str, message: str
) -> None:
    """float() takes nan and inf: WS_AUTH_TIMEOUT=nan closed every socket at once and an
    infinite AUTH_HTTP_TIMEOUT turned the slow-client protection off (an outside probe); a port
    over 65535 was a traceback."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"AUTH_KEY_ENCRYPTION_SECRETS": SECRET, name: value})


def test_dev_mode_generates_and_keeps_a_secret(tmp_path: Path) -> None:
    env = {"AUTH_DEV": "1", "AUTH_DATA_DIR": str(tmp_path)}
    first = Settings.from_env(env)
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600
    assert Settings.from_env(env).key_encryption_secrets == first.key_encryption_secrets
