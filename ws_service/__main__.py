"""``python -m ws_service``: read the environment, log JSON, serve (WSS when given a certificate)."""

from __future__ import annotations

import os
import sys

from shared.envparse import ConfigError
from shared.jsonlog import configure_logging
from shared.serve import CannotListen, Site, run_workers
from ws_service.app import create_app
from ws_service.settings import Settings


def main() -> None:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = Settings.from_env(os.environ)
        ssl_context = settings.ssl_context
    except ConfigError as exc:
        sys.exit(f"ws_service: {exc}")
    url = f"{'wss' if ssl_context else 'ws'}://{settings.host}:{settings.port}/ws"

    workers = f" ({settings.workers} workers)" if settings.workers > 1 else ""

    def listening() -> None:
        print(f"ws_service listening on {url}{workers}", flush=True)

    def sites(reuse_port: bool) -> list[Site]:
        app = create_app(settings)
        timeout = settings.shutdown_timeout
        return [Site(app, settings.host, settings.port, ssl_context, timeout, reuse_port)]

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
