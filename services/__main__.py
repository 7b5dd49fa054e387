"""``python -m services``: the whole stack in one process on embedded defaults (what `make run` runs).

Every service shares one in-process event bus, so a logout on auth_service reaches the sockets.
Each service reads its own variables from the environment; AUTH_DEV defaults to 1 here.
"""

from __future__ import annotations

import os
import sys

from services.embedded import banner, build_sites
from shared.envparse import ConfigError
from shared.jsonlog import configure_logging
from shared.serve import run


def main() -> int:
    environ = {**os.environ}
    environ.setdefault("AUTH_DEV", "1")
    try:
        sites, lines = build_sites(environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(environ.get("LOG_LEVEL", "INFO"))
    run(sites, on_started=lambda: print(banner(lines), flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
