"""Composition of the embedded stack: both services in one process sharing one in-process bus
(with REDIS_URL, each its own Redis bus).

auth_service's site starts first, so ws_service's first key-set fetch finds it listening.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from auth_service import handlers as auth_handlers
from auth_service.app import create_app as create_auth_app
from auth_service.app import replay_revocations
from auth_service.settings import Settings as AuthSettings
from services.webpage import mount, origin_of
from shared.bus import InProcessBus
from shared.config.env import env_list, env_secret, redact_url
from shared.http.readiness import Readiness
from shared.http.serve import Site
from ws_service import handlers as ws_handlers
from ws_service.app import create_app as create_ws_app
from ws_service.settings import DEV_API_KEY_FILE, dev_api_key
from ws_service.settings import Settings as WsSettings

__all__ = ["Stack", "build_stack"]


@dataclass(frozen=True)
class Stack:
    sites: list[Site]
    lines: list[str]
    auth_app: web.Application
    ws_app: web.Application
    mode: str = ""
    """How it runs, after "is up": the banner says what was set, never a fixed guess."""

    async def readiness(self) -> dict[str, Readiness]:
        return {
            "auth_service": await auth_handlers.readiness(self.auth_app),
            "ws_service": ws_handlers.readiness(self.ws_app),
        }

    def banner(self, readiness: Mapping[str, Readiness]) -> str:
        """Say it is up only when both services are ready; otherwise say what is not."""
        failing = [
            f"  {service} is NOT ready: {name}: {why}"
            for service, state in readiness.items()
            for name, why in state.failing.items()
        ]
        head = (
            [f"realtime gateway is up{self.mode}"]
            if not failing
            else ["realtime gateway started, but is not ready yet:", *failing]
        )
        rule = "-" * 72
        return "\n".join([rule, *head, *self.lines, rule])


CHAT_AUTH_URL, CHAT_WS_URL = "http://127.0.0.1:8081", "ws://127.0.0.1:8082/ws"
"""Where the terminal chat goes without ``--auth-url``/``--ws-url`` (nor AUTH_PORT, WS_PORT)."""


def build_stack(environ: Mapping[str, str]) -> Stack:
    auth = AuthSettings.from_env(environ)
    # One in-process bus for both services; with REDIS_URL each opens its own Redis bus, as a
    # replica does: the history store then publishes through Redis, which no in-process bus hears.
    bus = None if auth.redis_url else InProcessBus()
    page = f"{auth.issuer}/"
    origins = {*env_list(environ, "WS_ALLOWED_ORIGINS"), origin_of(auth.issuer)}
    ws_environ = {**environ, "WS_ALLOWED_ORIGINS": ",".join(sorted(origins))}
    dev_key = auth.dev and not env_secret(environ, "WS_API_KEYS")
    if dev_key:
        ws_environ["WS_API_KEYS"] = dev_api_key(auth.data_dir)
    ws = WsSettings.from_env(ws_environ)
    auth_tls, ws_tls = auth.ssl_context, ws.ssl_context
    ws_url = f"{'wss' if ws_tls else 'ws'}://{ws.host}:{ws.port}/ws"
    auth_app = create_auth_app(auth, bus=bus)
    ws_app = create_ws_app(ws, bus=bus)
    if bus is not None:
        # The in-process bus keeps nothing across a restart: the revocations still in force are
        # announced again once ws_service listens (its start-up, after its bus subscriptions and
        # before its site accepts a socket), or a logged-out session's tokens would pass again.
        async def replay(_: web.Application) -> None:
            await replay_revocations(auth_app)

        ws_app.on_startup.append(replay)
    mount(auth_app, ws_url)
    sites = [
        Site(auth_app, auth.host, auth.port, auth_tls, http_timeout=auth.http_timeout),
        Site(ws_app, ws.host, ws.port, ws_tls, ws.shutdown_timeout, ws.http_timeout),
    ]
    publish = f"{'https' if ws_tls else 'http'}://{ws.host}:{ws.port}/v1/publish"
    if dev_key:
        key_line = (
            f"publish API   {publish}   (dev key {ws.api_keys[0]}, "
            f"kept in {auth.data_dir / DEV_API_KEY_FILE})"
        )
    elif ws.api_keys:
        key_line = f"publish API   {publish}   (keys from WS_API_KEYS)"
    else:
        key_line = f"publish API   {publish}   disabled: WS_API_KEYS is empty"
    embedded_db = auth.database_url.startswith("sqlite:")
    same_env = "" if embedded_db else "   (with the AUTH_* variables this stack has)"
    # The commands as typed in a new shell, which has none of this stack's variables: a data dir
    # or ports of its own made them read another database and reach no server (an outside probe).
    data_dir = (
        f"AUTH_DATA_DIR={shlex.quote(str(auth.data_dir))} " if environ.get("AUTH_DATA_DIR") else ""
    )
    urls = ""
    if (auth.issuer, ws_url) != (CHAT_AUTH_URL, CHAT_WS_URL):
        urls = f" --auth-url {shlex.quote(auth.issuer)} --ws-url {shlex.quote(ws_url)}"
    lines = [
        f"chat page     {page}   (open this in a browser)",
        f"auth_service  {auth.issuer}   (REST API; JWKS at {auth.jwks_uri})",
        f"ws_service    {ws_url}",
        key_line,
        f"database      {redact_url(auth.database_url)}",
        f"secret        key encryption from {auth.secrets_source}",
        "",
        "Try it: create two users, then chat in two terminals:",
        f"  {data_dir}.venv/bin/python -m auth_service users create bob   (and carol){same_env}",
        f"  .venv/bin/python -m realtime_gateway_client.chat --user bob{urls}"
        "   (and --user carol in another)",
        "Next: docs/getting-started.md (a tour with curl), docs/rest.md (every endpoint).",
    ]
    ignored = [name for name in ("AUTH_WORKERS", "WS_WORKERS") if environ.get(name, "1") != "1"]
    if ignored:
        lines.insert(
            6,
            f"workers       {' and '.join(ignored)} not used: make run is one process "
            "(python -m auth_service / ws_service run workers)",
        )
    mode = " (one process, development mode: AUTH_DEV=1)" if auth.dev else " (one process)"
    return Stack(sites, lines, auth_app, ws_app, mode)
