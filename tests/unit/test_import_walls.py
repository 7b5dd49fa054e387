"""The walls between rooms hold: the import-linter contracts in pyproject.toml (also in `make lint`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert result.stdout.count(" KEPT") >= 8


def test_a_domain_importing_an_adapter_breaks_the_walls(tmp_path: Path) -> None:
    """The contracts can fail: the ws domain importing the Prometheus adapter, the auth domain
    importing its store, and the example app importing server code are each caught (layers and
    forbidden contracts)."""
    for package in ("auth_service", "ws_service", "shared", "services", "examples"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for module, line in (
        ("ws_service/domain/hub.py", "import ws_service.metrics"),
        ("auth_service/domain/service.py", "import auth_service.store.sql"),
        ("examples/app_backend/app.py", "import shared.jsonlog"),
    ):
        path = tmp_path / module
        path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    assert "ws_service.domain.hub -> ws_service.metrics" in result.stdout
    assert "auth_service.domain.service -> auth_service.store.sql" in result.stdout
    assert "prometheus_client" in result.stdout, "the forbidden contract catches it too"
    assert "examples.app_backend.app -> shared.jsonlog" in result.stdout
