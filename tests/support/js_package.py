"""The JavaScript client as a team installs it: `npm pack` of clients/js, installed into a fresh
folder, beside the test tools `make test` installs with `npm ci` from its package-lock.json.

Without Node, npm, or those tools (npm could not reach its registry), the tests that need them are
skipped with the reason, and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.services import unavailable

__all__ = ["JS_CLIENT", "TOOLS", "install_packed", "run", "tool"]

ROOT = Path(__file__).resolve().parents[2]
JS_CLIENT = ROOT / "clients" / "js"
TOOLS = ROOT / ".venv" / "js-client" / "node_modules"
LINKED = ("ws", "@types/node", "@types/ws")
"""The packages an application brings itself, linked into the fresh folder from the test tools."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        unavailable("Node.js", f"no {name} on PATH")
        raise AssertionError("unreachable")
    return found


def tool(name: str) -> str:
    """A binary of the locked test tools (tsc, esbuild)."""
    if not (TOOLS / ".package-lock.json").exists():
        unavailable(
            "the npm registry",
            f"{TOOLS} is missing; `make test` installs the JavaScript client's test tools there"
            " with npm ci",
        )
    return str(TOOLS / ".bin" / name)


def run(
    args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure shows its whole output."""
    result = subprocess.run(
        list(args),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def install_packed(folder: Path) -> Path:
    """A fresh application folder (ESM) with the packed client installed by npm, as a team would,
    and the packages it would bring itself (ws, the Node types) linked in."""
    tool("tsc")
    npm = _binary("npm")
    _binary("node")
    packed = run([npm, "pack", "--json", "--pack-destination", str(folder), str(JS_CLIENT)], folder)
    tarball = folder / json.loads(packed.stdout)[0]["filename"]
    app = folder / "app"
    app.mkdir()
    (app / "package.json").write_text(
        json.dumps({"name": "app", "private": True, "type": "module"})
    )
    run([npm, "install", "--offline", "--no-audit", "--no-fund", str(tarball)], app)
    for name in LINKED:
        link = app / "node_modules" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(TOOLS / name)
    return app
