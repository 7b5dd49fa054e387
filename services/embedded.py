"""Composition of the embedded stack: both services in one process sharing one in-process bus.

auth_service's site starts first, so ws_service's first key-set fetch finds it listening.
"""

from __future__ import annotations

from collections.abc import Mapping

from auth_service.app import create_app as create_auth_app
from auth_service.settings import Settings as AuthSettings
from services.webpage import mount, origin_of
from shared.bus import InProcessBus
from shared.envparse import env_list
from shared.serve import Site
from ws_service.app import create_app as create_ws_app
from ws_service.settings import Settings as WsSettings

__all__ = ["banner", "build_sites"]


def build_sites(environ: Mapping[str, str]) -> tuple[list[Site], list[str]]:
    bus = InProcessBus()
    auth = AuthSettings.from_env(environ)
    page = f"{auth.issuer}/"
    origins = {*env_list(environ, "WS_ALLOWED_ORIGINS"), origin_of(auth.issuer)}
    ws = WsSettings.from_env({**environ, "WS_ALLOWED_ORIGINS": ",".join(sorted(origins))})
    auth_tls, ws_tls = auth.ssl_context, ws.ssl_context
    ws_url = f"{'wss' if ws_tls else 'ws'}://{ws.host}:{ws.port}/ws"
    auth_app = create_auth_app(auth, bus=bus)
    mount(auth_app, ws_url)
    sites = [
        Site(auth_app, auth.host, auth.port, auth_tls, http_timeout=auth.http_timeout),
        Site(
            create_ws_app(ws, bus=bus),
            ws.host,
            ws.port,
            ws_tls,
            ws.shutdown_timeout,
            ws.http_timeout,
        ),
    ]
    lines = [
        f"chat page     {page}   (open this in a browser)",
        f"auth_service  {auth.issuer}   (REST API; JWKS at {auth.jwks_uri})",
        f"ws_service    {ws_url}",
        f"database      {auth.database_url}",
        "",
        "Try it: create two users, then chat in two terminals:",
        "  AUTH_DEV=1 .venv/bin/python -m auth_service users create alice   (and bob)",
        "  .venv/bin/python -m gateway_client.chat --user alice      (and --user bob in another)",
        "README.md has curl examples for every endpoint.",
    ]
    return sites, lines


def banner(lines: list[str]) -> str:
    rule = "-" * 72
    return "\n".join([rule, "realtime gateway is up (embedded mode, dev keys)", *lines, rule])
