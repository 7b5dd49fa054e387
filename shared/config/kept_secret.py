"""A random secret created once in a file and read back on every later run."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from shared.config.env import ConfigError

__all__ = ["kept_secret"]


def kept_secret(path: Path) -> tuple[str, bool]:
    """The secret kept at ``path``, created (mode 0600) when missing; True when just created.

    Later shells and restarts read the same value back, so what it protects stays readable. The
    file appears whole or not at all (written aside, then linked into place): created empty and
    then written, a second process reading it in between, or a crash, left an empty secret that
    every later run took as the secret (an outside probe). An empty file, or a directory that
    cannot be written, is a configuration error naming the path.
    """
    try:
        try:
            return _read(path), False
        except FileNotFoundError:
            pass
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        aside = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secret)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(aside, path)
        except FileExistsError:
            return _read(path), False
        finally:
            aside.unlink(missing_ok=True)
        return secret, True
    except OSError as exc:
        raise ConfigError(f"cannot keep a secret in {path}: {exc.strerror or exc}") from None


def _read(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError(f"{path} is empty: delete it and start again to make a new secret")
    return secret
