"""``python -m auth_service``: serve, or manage keys, users and clients.

Every setting comes from the environment (docs/configuration.md). The commands act on the
database AUTH_DATABASE_URL names (`make run`'s SQLite file without it) and name it first.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from auth_service.app import OUTBOX_INTERVAL, build_keyring, build_service, create_app
from auth_service.domain.clients import DEFAULT_SECRET_GRACE, GRANT_NAMES, IssuedSecret
from auth_service.domain.dpop import DpopPolicy
from auth_service.domain.errors import AuthError, InvalidRequest
from auth_service.domain.federation import ALGORITHMS, DEFAULT_ALGORITHM, trusted_issuer
from auth_service.domain.keyring import KeyRing
from auth_service.domain.models import Client, OutboxItem, TrustedIssuer
from auth_service.domain.outbox import (
    REPLAY_LIMIT,
    EventPublisher,
    OutboxOnly,
    drop_dead_letters,
    replay_dead_letters,
)
from auth_service.domain.store import Store
from auth_service.settings import SECRET_FILE, ConfigError, Settings, checkout_secret
from auth_service.store import open_store
from realtime_gateway_protocol.key_events import (
    KEYS_TOPIC,
    KeyEvent,
    KeyRotated,
    KeyWithdrawn,
    encode_key_event,
)
from shared.config.env import redact_url
from shared.http.serve import CannotListen, Site, run_workers
from shared.redis.bus import BusRefused, open_bus
from shared.startup import start_logging

log = logging.getLogger("auth_service")

ANNOUNCE_WAIT = 3 * OUTBOX_INTERVAL
"""How long ``keys rotate`` and ``keys revoke`` wait for a running service to take the announcement."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m auth_service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP service (the default)")
    sub.add_parser(
        "secret",
        help=f"print the key-encryption secret kept in AUTH_DATA_DIR/{SECRET_FILE}, "
        "creating it once (for `export AUTH_KEY_ENCRYPTION_SECRETS=$(...)`)",
    )
    keys = sub.add_parser("keys", help="manage signing keys").add_subparsers(
        dest="action", required=True
    )
    rotate = keys.add_parser("rotate", help="publish a new signing key")
    rotate.add_argument(
        "--immediate", action="store_true", help="sign with it at once (compromised key)"
    )
    revoke = keys.add_parser(
        "revoke",
        help="withdraw a leaked key at once: out of the JWKS and every gateway's cache, its "
        "sockets must renew within seconds (a new key signs first if it was signing)",
    )
    revoke.add_argument("kid", help="the key id, as `keys list` prints it")
    keys.add_parser("list", help="list signing keys (and withdrawn ones)")
    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True
    )
    create = users.add_parser("create", help="create a user (password from stdin or a prompt)")
    create.add_argument("username")
    create.add_argument(
        "--scope",
        help="space-separated scope tokens, printable ASCII as the API takes them (default AUTH_DEFAULT_SCOPE)",
    )
    add_client_commands(sub)
    outbox = sub.add_parser("outbox", help="inspect the event outbox and its dead letters")
    outbox_actions = outbox.add_subparsers(dest="action", required=True)
    outbox_actions.add_parser("list", help="what waits, and each dead letter with its last error")
    replay = outbox_actions.add_parser("replay", help="give dead letters a fresh set of attempts")
    replay.add_argument("ids", nargs="*", type=int, metavar="ID")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    drop = outbox_actions.add_parser("drop", help="delete dead letters for good")
    drop.add_argument("ids", nargs="+", type=int, metavar="ID")
    args = parser.parse_args(_kid_is_literal(sys.argv[1:] if argv is None else argv))
    if args.command == "secret":
        return print_secret(os.environ)
    serving = args.command in (None, "serve")
    try:
        start_logging(os.environ, "AUTH_LOG_LEVEL")
        settings = Settings.from_env(os.environ, use_checkout_dev_secret=not serving)
        ssl_context = settings.ssl_context
    except ConfigError as exc:
        return refuse(serving, f"configuration error: {exc}", 2)
    try:
        if serving:
            return serve(settings, ssl_context)
        say_database(settings)
        if args.command == "keys":
            return asyncio.run(keys_command(settings, args.action, args))
        if args.command == "outbox":
            return asyncio.run(outbox_command(settings, args))
        if args.command == "clients":
            return asyncio.run(clients_command(settings, args))
        return asyncio.run(create_user(settings, args.username, args.scope))
    except CannotListen as exc:
        hint = " (is another auth_service or `make run` running?)" if exc.in_use else ""
        fix = "set AUTH_PORT to use another port" if exc.in_use else "check AUTH_HOST and AUTH_PORT"
        return refuse(serving, f"{exc}{hint}; {fix}", 1)
    except (AuthError, BusRefused) as exc:
        return refuse(serving, *(start_refusal(exc) or (str(exc), 1)))


def start_refusal(exc: Exception) -> tuple[str, int] | None:
    """Why the service (or a command, or a worker) cannot start, and its exit status: the database
    cannot be reached (1), Redis refuses the credentials (2). ``None``: a crash."""
    if isinstance(exc, AuthError):
        return exc.description, 1
    if isinstance(exc, BusRefused):
        return f"configuration error: {exc}", 2
    return None


def refuse(serving: bool, message: str, status: int) -> int:
    """The service says why it stops in a JSON line, like every other line it writes; a command
    says it in plain text to the person who typed it."""
    if serving:
        log.error(message)
    else:
        print(f"auth_service: {message}", file=sys.stderr)
    return status


def _kid_is_literal(argv: list[str]) -> list[str]:
    """A kid is base64url and starts with ``-`` one time in 64, which argparse would take for an
    option: the word after ``keys revoke`` is the kid (``-h``/``--help`` aside)."""
    if argv[:2] == ["keys", "revoke"] and len(argv) == 3 and argv[2] not in ("-h", "--help", "--"):
        return [*argv[:2], "--", argv[2]]
    return argv


def say_database(settings: Settings) -> None:
    """Every command that acts on a database names it first: one run without the service's
    variables would otherwise act on `make run`'s SQLite file, silently."""
    where = redact_url(settings.database_url)
    if settings.database_url.startswith("sqlite:"):
        where += " (SQLite, as `make run` uses; AUTH_DATABASE_URL names another)"
    print(f"auth_service: database {where}", file=sys.stderr, flush=True)


def serve(settings: Settings, ssl_context: ssl.SSLContext | None) -> int:
    url = f"{'https' if ssl_context else 'http'}://{settings.host}:{settings.port}"
    workers = f" ({settings.workers} workers)" if settings.workers > 1 else ""

    def listening() -> None:
        log.info(f"auth_service listening on {url}{workers}", extra={"url": url})
        if not settings.redis_url:
            log.warning(
                "auth_service event bus: in-process (no REDIS_URL): revocations reach no "
                "ws_service in another process, and a DPoP proof spent here is not known to "
                "another auth_service replica; set REDIS_URL before running a second one"
            )

    def sites(reuse_port: bool) -> list[Site]:
        app = create_app(settings)
        return [
            Site(
                app,
                settings.host,
                settings.port,
                ssl_context,
                http_timeout=settings.http_timeout,
                reuse_port=reuse_port,
            )
        ]

    return run_workers(
        sites,
        workers=settings.workers,
        addresses=[(settings.host, settings.port)],
        on_listening=listening,
        refusal=start_refusal,
    )


def print_secret(environ: Mapping[str, str]) -> int:
    """The secret on stdout (for ``$(...)``), where it is kept on stderr: the same every time."""
    data_dir = Path(environ.get("AUTH_DATA_DIR") or ".data")
    path = data_dir / SECRET_FILE
    try:
        secret, created = checkout_secret(data_dir)
    except ConfigError as exc:
        print(f"auth_service: {exc}", file=sys.stderr)
        print("auth_service: set AUTH_DATA_DIR to a directory you can write", file=sys.stderr)
        return 1
    if created:
        note = f"created a key-encryption secret in {path}; keep it, the signing keys need it"
    else:
        note = f"using the key-encryption secret kept in {path}"
    print(f"auth_service: {note}", file=sys.stderr)
    print(secret)
    return 0


async def keys_command(settings: Settings, action: str, args: argparse.Namespace) -> int:
    store = await open_store(settings.database_url, settings.database_timeout)
    try:
        ring = build_keyring(settings, store)
        database = redact_url(settings.database_url)
        if action == "rotate":
            await ring.reload(report=False)
            locked = bool(ring.keys) and all(key.private_key is None for key in ring.keys)
            key = await ring.rotate(time.time(), immediate=args.immediate)
            when = "now" if args.immediate else fmt(key.activate_at)
            print(f"new key {key.kid} (generation {key.generation}) signs from {when}")
            if locked:
                # The documented re-key, or a mistyped secret: either way the running services
                # cannot use the new key until they run with this secret too (an outside probe:
                # they went on signing with the key this rotation was meant to replace).
                print(
                    f"warning: the key-encryption secret from {settings.secrets_source} decrypts "
                    f"none of the other keys in {database}: services running with another "
                    "secret cannot sign with the new key; restart them with this one"
                )
            print(await announce(settings, store, KeyRotated(key.kid, key.generation)))
        elif action == "revoke":
            # A ring this secret cannot open cannot tell which key signs, so it would withdraw
            # the signing key without a replacement (an outside probe: logins 503 until the
            # services made one themselves).
            await ring.open(settings.secrets_source, database)
            withdrawal = await ring.withdraw(args.kid, time.time())
            if withdrawal.replacement is not None:
                new = withdrawal.replacement
                print(f"new key {new.kid} (generation {new.generation}) signs from now")
            done = "was already withdrawn" if withdrawal.already else "withdrawn"
            print(f"key {withdrawal.kid} {done}: no service signs with it or trusts it again")
            print(await announce(settings, store, KeyWithdrawn(withdrawal.kid)))
        else:
            await list_keys(ring, store)
        return 0
    finally:
        await store.close()


async def list_keys(ring: KeyRing, store: Store) -> None:
    await ring.reload()
    now = time.time()
    current = ring.current_key(now)
    for key in ring.keys:
        state = "signing" if key is current else ("pending" if key.activate_at > now else "retired")
        if key.private_key is None:
            state += " (no configured secret decrypts it)"
        print(
            f"{key.kid}  generation={key.generation}  activate_at={fmt(key.activate_at)}  {state}"
        )
    for withdrawn in await store.list_withdrawn_keys():
        print(
            f"{withdrawn.kid}  generation={withdrawn.generation}  "
            f"withdrawn_at={fmt(withdrawn.withdrawn_at)}  withdrawn"
        )


async def announce(settings: Settings, store: Store, event: KeyEvent) -> str:
    """Tell running services about the key ring's change, and say when they took it.

    Over Redis every replica hears it at once. Without Redis this process reaches no other, so the
    announcement waits in the outbox for a running service to pass it to its own bus."""
    payload = encode_key_event(event)
    if settings.redis_url:
        bus = await open_bus(settings.redis_url)
        try:
            if await EventPublisher(bus, store).announce(KEYS_TOPIC, payload):
                return f"announced over Redis at {fmt(time.time())}: running replicas act on it now"
        finally:
            await bus.close()
    else:
        await store.add_outbox(KEYS_TOPIC, payload, time.time())
    deadline = time.monotonic() + ANNOUNCE_WAIT
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if all(item.payload != payload for item in await store.outbox_batch(1000)):
            return f"a running service took the announcement at {fmt(time.time())} and acted on it"
    return (
        f"no running service took the announcement within {ANNOUNCE_WAIT:.0f} s: services read "
        "the key ring when they start, and running ones at their next reload (the announcement "
        "waits in the outbox)"
    )


async def create_user(settings: Settings, username: str, scope: str | None) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")  # CRLF too
    store = await open_store(settings.database_url, settings.database_timeout)
    try:
        ring = build_keyring(settings, store)
        service = build_service(settings, store, ring, OutboxOnly())
        service.policy = replace(service.policy, allow_registration=True)
        user = await service.register(username, password, scope=scope)
        print(f"created user {user.username} ({user.id})")
        return 0
    finally:
        await store.close()


def add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clients = sub.add_parser(
        "clients", help="manage confidential clients (app backends that exchange tokens)"
    ).add_subparsers(dest="action", required=True)
    create = clients.add_parser("create", help="register a client; its secret is printed once")
    create.add_argument("name", help="the client_id: 3-32 characters of a-z 0-9 _ . -")
    create.add_argument(
        "--grant",
        action="append",
        choices=sorted(GRANT_NAMES),
        default=[],
        help="a grant it may use, besides authenticating (repeatable)",
    )
    create.add_argument("--scope", help="space-separated: the most it may grant (default: any)")
    create.add_argument(
        "--namespaces",
        help="space-separated channel namespaces its authorization_details may name (default: any)",
    )
    update = clients.add_parser(
        "update", help="change the identity provider whose tokens a client may exchange"
    )
    update.add_argument("name")
    for parser in (create, update):
        add_trust_options(parser)
    update.add_argument(
        "--no-trust-issuer",
        action="store_true",
        help="trust no identity provider any more (its tokens are refused from the next request)",
    )
    create.add_argument(
        "--dpop",
        choices=[policy.value for policy in DpopPolicy],
        help="bind its users' tokens to their DPoP keys: off, optional or required "
        "(default: AUTH_DPOP)",
    )
    rotate = clients.add_parser(
        "rotate-secret", help="a new secret, printed once; the old one works for --grace seconds"
    )
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_SECRET_GRACE,
        help=f"seconds the old secret keeps working (default {DEFAULT_SECRET_GRACE}; 0 if it leaked)",
    )
    for parser in (create, rotate):
        parser.add_argument(
            "--json", action="store_true", help='print {"client_id", "client_secret"} only'
        )
    clients.add_parser("list", help="list clients (never their secrets)")
    delete = clients.add_parser(
        "delete", help="delete a client and its users; their sessions end and sockets close"
    )
    delete.add_argument("name")


def add_trust_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-issuer",
        metavar="ISSUER",
        help="an identity provider (its exact iss) whose ID or access tokens the client may "
        "exchange for its users' tokens; needs --grant token-exchange and --jwks-uri",
    )
    parser.add_argument("--jwks-uri", metavar="URL", help="where the provider's keys are")
    parser.add_argument(
        "--audience",
        help="the aud its tokens must name (default: the client's id, an ID token's aud when the "
        "client has the same id there)",
    )
    parser.add_argument(
        "--algorithm",
        action="append",
        choices=sorted(ALGORITHMS),
        help=f"an algorithm its tokens may be signed with (repeatable; default {DEFAULT_ALGORITHM})",
    )


def trust_from(args: argparse.Namespace) -> TrustedIssuer | None:
    """The provider the options name, None without ``--trust-issuer``."""
    others = args.jwks_uri or args.audience or args.algorithm
    if args.trust_issuer is None:
        if others:
            raise InvalidRequest("--jwks-uri, --audience and --algorithm go with --trust-issuer")
        return None
    if not args.jwks_uri:
        raise InvalidRequest("--trust-issuer needs --jwks-uri, where the provider's keys are")
    return trusted_issuer(
        args.trust_issuer,
        args.jwks_uri,
        args.name if args.audience is None else args.audience,
        args.algorithm or [DEFAULT_ALGORITHM],
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("a number of seconds, 0 or more")
    return value


async def clients_command(settings: Settings, args: argparse.Namespace) -> int:
    """The revocations a deletion makes go through the outbox: a running service (any replica)
    delivers them to its bus within a second, whether or not this shell reaches Redis."""
    store = await open_store(settings.database_url, settings.database_timeout)
    try:
        service = build_service(settings, store, build_keyring(settings, store), OutboxOnly())
        if args.action == "create":
            issued = await service.clients.create(
                args.name,
                grant_types=[GRANT_NAMES[name] for name in args.grant],
                scope=args.scope,
                namespaces=None if args.namespaces is None else args.namespaces.split(),
                reserved=[settings.client_id],
                trusted=trust_from(args),
                dpop=None if args.dpop is None else DpopPolicy(args.dpop),
            )
            print_issued_secret(issued, args.json, "created")
        elif args.action == "update":
            trusted = trust_from(args)
            if (trusted is None) != args.no_trust_issuer:
                raise InvalidRequest(
                    "say --trust-issuer ISSUER --jwks-uri URL, or --no-trust-issuer"
                )
            print(client_line(await service.clients.trust(args.name, trusted), time.time()))
        elif args.action == "rotate-secret":
            issued = await service.clients.rotate_secret(args.name, args.grace)
            print_issued_secret(issued, args.json, "has a new secret")
            if not args.json:
                until = issued.client.previous_secret_expires_at or 0.0
                print(f"the previous secret works until {fmt(until)}")
        elif args.action == "delete":
            ended = await service.delete_client(args.name)
            print(
                f"deleted client {args.name} and its users: {ended} live session(s) ended; a "
                "running service closes their sockets within a second"
            )
        else:
            for client in await store.list_clients():
                print(client_line(client, time.time()))
        return 0
    finally:
        await store.close()


def print_issued_secret(issued: IssuedSecret, as_json: bool, what: str) -> None:
    client = issued.client
    if as_json:
        print(json.dumps({"client_id": client.client_id, "client_secret": issued.secret}))
        return
    print(f"client {client.client_id} {what}")
    print(f"client_id:     {client.client_id}")
    print(f"client_secret: {issued.secret}")
    print("the secret is shown this once: keep it in the backend's secret store")


def client_line(client: Client, now: float) -> str:
    names = {grant: name for name, grant in GRANT_NAMES.items()}
    grants = ",".join(names.get(g, g) for g in client.grant_types.split()) or "-"
    line = (
        f"{client.client_id}  grants={grants}  scope={_limit(client.scope)}  "
        f"namespaces={_limit(client.namespaces)}  dpop={client.dpop or '*'}  "
        f"created={fmt(client.created_at)}"
    )
    if client.secret_rotated_at is not None:
        line += f"  secret_rotated={fmt(client.secret_rotated_at)}"
    grace = client.previous_secret_expires_at
    if grace is not None and grace > now:
        line += f"  previous_secret_until={fmt(grace)}"
    trusted = client.trusted
    if trusted is not None:
        line += (
            f"  trusts={trusted.issuer} jwks_uri={trusted.jwks_uri} "
            f"audience={json.dumps(trusted.audience)} algorithms={','.join(trusted.algorithms)}"
        )
    return line


def _limit(value: str | None) -> str:
    return "*" if value is None else json.dumps(value)


async def outbox_command(settings: Settings, args: argparse.Namespace) -> int:
    """Dead letters are events that failed every attempt (docs/operations.md, "Outbox")."""
    if args.action == "replay" and not (args.ids or args.all):
        print("auth_service: outbox replay needs dead-letter IDs or --all", file=sys.stderr)
        return 2
    store = await open_store(settings.database_url, settings.database_timeout)
    try:
        if args.action == "list":
            backlog = await store.outbox_backlog()
            since = (
                "" if backlog.oldest_at is None else f", the oldest since {fmt(backlog.oldest_at)}"
            )
            print(f"{backlog.waiting} event(s) waiting{since}; {backlog.dead} dead letter(s)")
            for item in await store.outbox_dead_letters(REPLAY_LIMIT):
                print(dead_letter_line(item))
            return 0
        if args.action == "replay":
            done = await replay_dead_letters(store, None if args.all else set(args.ids))
            verb = "replayed (a running service delivers them within a second)"
        else:
            done = await drop_dead_letters(store, set(args.ids))
            verb = "dropped"
        print(f"{len(done)} dead letter(s) {verb}: {' '.join(str(item.id) for item in done)}")
        missing = sorted(set(args.ids) - {item.id for item in done})
        if missing:
            print(f"auth_service: not dead letters: {' '.join(map(str, missing))}", file=sys.stderr)
            return 1
        return 0
    finally:
        await store.close()


def dead_letter_line(item: OutboxItem) -> str:
    dead = fmt(item.dead_at) if item.dead_at is not None else "-"
    return (
        f"{item.id}  topic={item.topic}  created={fmt(item.created_at)}  dead={dead}  "
        f"attempts={item.attempts}  error={item.last_error}\n    payload={item.payload}"
    )


def fmt(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


if __name__ == "__main__":
    sys.exit(main())
