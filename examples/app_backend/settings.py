"""Where the services are and the secrets the example shares with them, from the environment.

Every secret is a file (``NOTES_DATA_DIR`` holds the example's own; ``init`` makes them), the way
a container gets its secrets: the client secret auth_service printed once, the server API key,
and the two keys the gateway signs its calls with (``WS_PROXY_SECRET_FILE`` and
``WS_WEBHOOK_SECRET_FILE`` name the same files on the gateway's side).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CLIENT_FILE",
    "PROXY_SECRET_FILE",
    "WEBHOOK_SECRET_FILE",
    "ConfigError",
    "Settings",
    "base_url",
    "data_dir",
]

CLIENT_FILE = "client.json"
PROXY_SECRET_FILE = "proxy-secret"  # noqa: S105 (a file name)
WEBHOOK_SECRET_FILE = "webhook-secret"  # noqa: S105 (a file name)


def data_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("NOTES_DATA_DIR", ".data/notes"))


def base_url(environ: Mapping[str, str]) -> str:
    """Where the example serves (``NOTES_HOST``, ``NOTES_PORT``)."""
    return f"http://{environ.get('NOTES_HOST', '127.0.0.1')}:{environ.get('NOTES_PORT', '8083')}"


class ConfigError(Exception):
    """A setting or secret file is missing or wrong; the message says which and what to do."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8083
    auth_url: str = "http://127.0.0.1:8081"
    auth_issuer: str = "http://127.0.0.1:8081"
    """``aud`` of the example's assertions: auth_service's AUTH_ISSUER."""
    gateway_url: str = "http://127.0.0.1:8082"
    """ws_service's base URL for the server API."""
    ws_url: str = "ws://127.0.0.1:8082/ws"
    """Where the example's users open their sockets (handed out with their tokens)."""
    client_id: str = "notes"
    client_secret: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    proxy_secret: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    cookie_secure: bool = False

    @property
    def database(self) -> Path:
        return self.data_dir / "notes.db"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        where = data_dir(environ)
        client = _read(
            where / CLIENT_FILE,
            "run `init`, then `python -m auth_service clients create notes --grant token-exchange "
            f"--namespaces doc --json > {where / CLIENT_FILE}`",
        )
        try:
            registration = json.loads(client)
            client_id, client_secret = registration["client_id"], registration["client_secret"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{where / CLIENT_FILE} is not what `clients create --json` prints"
            ) from None
        auth_url = environ.get("NOTES_AUTH_URL", cls.auth_url)
        api_key_file = Path(environ.get("NOTES_GATEWAY_API_KEY_FILE", ".data/dev-ws-api-key"))
        return cls(
            data_dir=where,
            host=environ.get("NOTES_HOST", cls.host),
            port=_port(environ.get("NOTES_PORT", str(cls.port))),
            auth_url=auth_url,
            auth_issuer=environ.get("NOTES_AUTH_ISSUER", auth_url),
            gateway_url=environ.get("NOTES_GATEWAY_URL", cls.gateway_url),
            ws_url=environ.get("NOTES_WS_URL", cls.ws_url),
            client_id=client_id,
            client_secret=client_secret,
            api_key=_read(api_key_file, "start the gateway first (`make run` makes it)"),
            proxy_secret=_read(where / PROXY_SECRET_FILE, "run `init` first"),
            webhook_secret=_read(where / WEBHOOK_SECRET_FILE, "run `init` first"),
            cookie_secure=environ.get("NOTES_COOKIE_SECURE", "0") == "1",
        )


def _port(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
        raise ConfigError(f"NOTES_PORT must be a port number, not {raw!r}")
    return int(raw)


def _read(path: Path, hint: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror}): {hint}") from None
    if not value:
        raise ConfigError(f"{path} is empty: {hint}")
    return value
