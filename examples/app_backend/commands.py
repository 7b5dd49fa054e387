"""``init`` (the files the example and the gateway share) and ``report`` (what the database
holds)."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from examples.app_backend import db
from examples.app_backend.settings import (
    CLIENT_FILE,
    PROXY_SECRET_FILE,
    WEBHOOK_SECRET_FILE,
    Settings,
    data_dir,
)

__all__ = ["init", "report"]


def init(environ: Mapping[str, str]) -> int:
    """Make the two secrets the gateway will sign its calls to the example with, and an empty
    private file for the client's registration (``clients create --json > it`` keeps its mode),
    once: nothing that exists is touched."""
    where = data_dir(environ)
    where.mkdir(parents=True, exist_ok=True)
    made = []
    for name, content in (
        (PROXY_SECRET_FILE, secrets.token_urlsafe(32)),
        (WEBHOOK_SECRET_FILE, secrets.token_urlsafe(32)),
        (CLIENT_FILE, ""),
    ):
        if not (where / name).exists():
            _write_private(where / name, content)
            made.append(str(where / name))
    print(f"notes: made {', '.join(made)}" if made else f"notes: {where} was ready")
    return 0


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


async def report(settings: Settings) -> int:
    database = db.Database(settings.database)
    await database.open()
    try:
        log = await database.run(db.webhook_log)
        online = await database.run(db.online_usernames)
        chat = await database.run(db.all_messages)
    finally:
        await database.close()
    for document, author, text in chat:
        print(f"doc:{document}  {author}: {text}")
    counts = Counter((event["type"], event["user"]) for event in log)
    for (kind, user), n in sorted(counts.items(), key=lambda item: (str(item[0][1]), item[0][0])):
        print(f"webhook  {kind:<12} {user}  x{n}")
    print(f"online now: {', '.join(online) or 'nobody'}")
    return 0
