"""Composition of the embedded stack: which apps run, on what, sharing which bus."""

from __future__ import annotations

from collections.abc import Mapping

from auth_service.app import create_app as create_auth_app
from auth_service.settings import Settings as AuthSettings
from shared.bus import InProcessBus
from shared.serve import Site

__all__ = ["banner", "build_sites"]


def build_sites(environ: Mapping[str, str]) -> tuple[list[Site], list[str]]:
    bus = InProcessBus()
    auth = AuthSettings.from_env(environ)
    sites = [Site(create_auth_app(auth, bus=bus), auth.host, auth.port)]
    lines = [
        f"auth_service  http://{auth.host}:{auth.port}   (JWKS: {auth.jwks_uri})",
        f"database      {auth.database_url}",
    ]
    return sites, lines


def banner(lines: list[str]) -> str:
    rule = "-" * 72
    return "\n".join([rule, "realtime gateway is up (embedded mode, dev keys)", *lines, rule])
