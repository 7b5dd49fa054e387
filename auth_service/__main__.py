"""``python -m auth_service``: serve, or manage keys and users."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from dataclasses import replace

from auth_service.app import build_keyring, build_service, create_app
from auth_service.domain.errors import AuthError
from auth_service.domain.outbox import EventPublisher
from auth_service.settings import ConfigError, Settings
from auth_service.store import open_store
from shared.bus import InProcessBus
from shared.jsonlog import configure_logging
from shared.serve import Site, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auth_service", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP service (the default)")
    keys = sub.add_parser("keys", help="manage signing keys").add_subparsers(
        dest="action", required=True
    )
    rotate = keys.add_parser("rotate", help="publish a new signing key")
    rotate.add_argument(
        "--immediate", action="store_true", help="sign with it at once (compromised key)"
    )
    keys.add_parser("list", help="list signing keys")
    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True
    )
    create = users.add_parser("create", help="create a user (password from stdin or a prompt)")
    create.add_argument("username")
    create.add_argument("--scope", help="space-separated scope (default AUTH_DEFAULT_SCOPE)")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
        ssl_context = settings.ssl_context
    except ConfigError as exc:
        print(f"auth_service: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        if args.command in (None, "serve"):
            scheme = "https" if ssl_context else "http"
            print(
                f"auth_service listening on {scheme}://{settings.host}:{settings.port}", flush=True
            )
            if not settings.redis_url:
                print(
                    "auth_service event bus: in-process (no REDIS_URL): revocations reach no "
                    "ws_service in another process",
                    flush=True,
                )
            app = create_app(settings)
            run(
                [
                    Site(
                        app,
                        settings.host,
                        settings.port,
                        ssl_context,
                        http_timeout=settings.http_timeout,
                    )
                ]
            )
            return 0
        if args.command == "keys":
            return asyncio.run(keys_command(settings, args.action, args))
        return asyncio.run(create_user(settings, args.username, args.scope))
    except AuthError as exc:
        print(f"auth_service: {exc.description}", file=sys.stderr)
        return 1


async def keys_command(settings: Settings, action: str, args: argparse.Namespace) -> int:
    store = await open_store(settings.database_url)
    try:
        ring = build_keyring(settings, store)
        if action == "rotate":
            key = await ring.rotate(time.time(), immediate=args.immediate)
            print(
                f"new key {key.kid} (generation {key.generation}) signs from {fmt(key.activate_at)}"
            )
        else:
            await ring.reload()
            now = time.time()
            current = ring.signing_key(now)
            for key in ring.keys:
                state = (
                    "signing"
                    if key is current
                    else ("pending" if key.activate_at > now else "retired")
                )
                print(
                    f"{key.kid}  generation={key.generation}  activate_at={fmt(key.activate_at)}  {state}"
                )
        return 0
    finally:
        await store.close()


async def create_user(settings: Settings, username: str, scope: str | None) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    store = await open_store(settings.database_url)
    try:
        ring = build_keyring(settings, store)
        service = build_service(settings, store, ring, EventPublisher(InProcessBus(), store))
        service.policy = replace(service.policy, allow_registration=True)
        user = await service.register(username, password, scope=scope)
        print(f"created user {user.username} ({user.id})")
        return 0
    finally:
        await store.close()


def fmt(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


if __name__ == "__main__":
    sys.exit(main())
