"""A random secret created once in a file and read back on every later run."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["kept_secret"]


def kept_secret(path: Path) -> tuple[str, bool]:
    """The secret kept at ``path``, created (mode 0600) when missing; True when just created.

    Later shells and restarts read the same value back, so what it protects stays readable.
    """
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret, True
