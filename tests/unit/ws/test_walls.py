"""The import walls: ws_service's domain imports no aiohttp; the client imports no server code and
only the stdlib-only contract modules of shared."""

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


CLIENT_MAY_IMPORT_FROM_SHARED = {"shared", "shared.backoff", "shared.close_codes"}


def test_the_client_imports_no_server_code() -> None:
    code = "import sys, gateway_client, gateway_client.chat\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    tops = {name.split(".")[0] for name in loaded}
    assert not tops & {"auth_service", "ws_service", "services"}
    assert {name for name in loaded if name.split(".")[0] == "shared"} <= (
        CLIENT_MAY_IMPORT_FROM_SHARED
    )


def test_the_contract_modules_the_client_uses_are_stdlib_only() -> None:
    modules = sorted(CLIENT_MAY_IMPORT_FROM_SHARED)
    added = imported_by(modules) - imported_by([]) - set(sys.stdlib_module_names)
    assert added == {"shared"}
