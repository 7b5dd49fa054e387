"""A random secret created once in a file and read back on every later run."""

from __future__ import annotations

import errno
import os
import secrets
import time
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
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            return _create_in_place(path, secret)
        finally:
            aside.unlink(missing_ok=True)
        return secret, True
    except OSError as exc:
        raise ConfigError(f"cannot keep a secret in {path}: {exc.strerror or exc}") from None


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV}
"""What ``os.link`` raises on a file system without hard links (vfat, exFAT, some SMB mounts)."""


def _create_in_place(path: Path, secret: str) -> tuple[str, bool]:
    """Without hard links: created and then written, as before; a reader meanwhile waits for the
    write (``_read``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path), False
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret, True


def _read(path: Path, wait: float = 1.0) -> str:
    """The secret; a file still empty after ``wait`` seconds (a crash between its creation and
    its write) is an error naming it."""
    deadline = time.monotonic() + wait
    while not (secret := path.read_text().strip()):
        if time.monotonic() >= deadline:
            raise ConfigError(f"{path} is empty: delete it and start again to make a new secret")
        time.sleep(0.05)
    return secret
