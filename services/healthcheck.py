"""Container healthcheck: exit 0 only when the service's ``/readyz`` answers 200.

It uses only the standard library so the runtime image needs no curl or wget.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

__all__ = ["is_ready", "main", "readyz_url"]


def readyz_url(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The URL given on the command line, else ``/readyz`` on AUTH_PORT or WS_PORT."""
    parser = argparse.ArgumentParser(prog="python -m services.healthcheck", description=__doc__)
    parser.add_argument(
        "url", nargs="?", help="the URL to check (default: /readyz on AUTH_PORT or WS_PORT)"
    )
    url: str | None = parser.parse_args(argv).url
    if url:
        return url
    port = environ.get("AUTH_PORT") or environ.get("WS_PORT")
    if not port:
        raise SystemExit("healthcheck: pass a URL or set AUTH_PORT or WS_PORT")
    return f"http://127.0.0.1:{port}/readyz"


def is_ready(url: str, timeout: float = 3.0) -> bool:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"healthcheck URL must be http(s): {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked)
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    url = readyz_url(sys.argv[1:] if argv is None else argv, os.environ)
    return 0 if is_ready(url) else 1


if __name__ == "__main__":
    sys.exit(main())
