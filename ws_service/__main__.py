"""``python -m ws_service``: read the environment, log JSON, serve (WSS when given a certificate)."""

from __future__ import annotations

import os
import sys

from shared.config.env import ConfigError, redact_url
from shared.http.serve import CannotListen, Site, run_workers
from shared.jsonlog import configure_logging
from ws_service.app import create_app
from ws_service.settings import Settings


def main() -> None:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = Settings.from_env(os.environ)
        ssl_context = settings.ssl_context
        app = create_app(settings)
    except ConfigError as exc:
        sys.exit(f"ws_service: {exc}")
    url = f"{'wss' if ssl_context else 'ws'}://{settings.host}:{settings.port}/ws"

    workers = f" ({settings.workers} workers)" if settings.workers > 1 else ""

    def listening() -> None:
        print(f"ws_service listening on {url}{workers}", flush=True)
        if settings.redis_url:
            print(f"ws_service event bus: Redis at {redact_url(settings.redis_url)}", flush=True)
        else:
            print(
                "ws_service event bus: in-process (WS_LOCAL_BUS=1): logouts made through an "
                "auth_service in another process do NOT reach these sockets",
                flush=True,
            )

    def sites(reuse_port: bool) -> list[Site]:
        """One process serves the app built (and checked) above; each worker builds its own."""
        own = create_app(settings) if reuse_port else app
        return [
            Site(
                own,
                settings.host,
                settings.port,
                ssl_context,
                shutdown_timeout=settings.shutdown_timeout,
                http_timeout=settings.http_timeout,
                reuse_port=reuse_port,
            )
        ]

    try:
        status = run_workers(
            sites,
            workers=settings.workers,
            addresses=[(settings.host, settings.port)],
            on_listening=listening,
        )
    except CannotListen as exc:
        sys.exit(f"ws_service: {exc}; set WS_PORT to use another port")
    sys.exit(status)


if __name__ == "__main__":
    main()
