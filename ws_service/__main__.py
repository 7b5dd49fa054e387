"""``python -m ws_service``: read the environment, log JSON, serve (WSS when given a certificate).

Every setting is an environment variable (docs/configuration.md); the issuer and its key set
default to an auth_service at AUTH_HOST:AUTH_PORT. It needs REDIS_URL (the Redis auth_service
announces logouts on), or WS_LOCAL_BUS=1 to accept an in-process event bus that hears no logout
made through another process."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from shared import collector
from shared.config.env import ConfigError, redact_url
from shared.http.serve import CannotListen, Site, run_workers
from shared.redis.bus import BusRefused
from shared.startup import start_logging
from ws_service.app import create_app
from ws_service.settings import Settings

log = logging.getLogger("ws_service")


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m ws_service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    try:
        start_logging(os.environ, "LOG_LEVEL")
        settings = Settings.from_env(os.environ)
        ssl_context = settings.ssl_context
        app = create_app(settings)
    except ConfigError as exc:
        log.error(f"configuration error: {exc}")
        sys.exit(2)
    url = f"{'wss' if ssl_context else 'ws'}://{settings.host}:{settings.port}/ws"
    # No full collection while sockets are added: shared/collector.py says what this gives up.
    collector.freeze_survivors()

    workers = f" ({settings.workers} workers)" if settings.workers > 1 else ""

    def listening() -> None:
        log.info(f"ws_service listening on {url}{workers}", extra={"url": url})
        if settings.redis_url:
            log.info(f"ws_service event bus: Redis at {redact_url(settings.redis_url)}")
        else:
            log.warning(
                "ws_service event bus: in-process (WS_LOCAL_BUS=1): logouts made through an "
                "auth_service in another process do NOT reach these sockets"
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
            refusal=start_refusal,
        )
    except CannotListen as exc:
        fix = "set WS_PORT to use another port" if exc.in_use else "check WS_HOST and WS_PORT"
        log.error(f"{exc}; {fix}")
        sys.exit(1)
    except BusRefused as exc:
        message, status = start_refusal(exc) or (str(exc), 2)
        log.error(message)
    sys.exit(status)


def start_refusal(exc: Exception) -> tuple[str, int] | None:
    """Why the service (or a worker) cannot start, and its exit status: Redis refuses the
    credentials (2). ``None``: a crash."""
    if isinstance(exc, BusRefused):
        return f"configuration error: {exc}", 2
    return None


if __name__ == "__main__":
    main()
