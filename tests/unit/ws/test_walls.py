"""The import walls: ws_service's domain imports no aiohttp."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ws_service.domain


def imported_by(modules: list[str]) -> set[str]:
    """Top-level packages loaded by importing ``modules`` in a fresh interpreter."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_ws_domain_imports_no_aiohttp() -> None:
    domain = [
        m.name for m in pkgutil.iter_modules(ws_service.domain.__path__, "ws_service.domain.")
    ]
    assert len(domain) >= 9
    assert "aiohttp" not in imported_by(domain)
