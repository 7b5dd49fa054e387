"""The dependency locks: every environment the Makefile builds installs exact, hashed versions, the
locks cover what pyproject.toml asks for, and the environment running these tests is the lock."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {name: ROOT / "requirements" / f"{name}.txt" for name in ("runtime", "dev", "bench")}
_PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(lock: Path) -> dict[str, tuple[str, str | None]]:
    """``name -> (version, marker)`` for every requirement line of a lock; each must be ``==``
    and followed by at least one ``--hash``."""
    found: dict[str, tuple[str, str | None]] = {}
    lines = lock.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line or line.startswith((" ", "#")):
            continue
        match = _PIN.match(line)
        assert match, f"{lock.name}: not an exact pin: {line!r}"
        assert i + 1 < len(lines) and lines[i + 1].strip().startswith("--hash=sha256:"), (
            f"{lock.name}: {line!r} has no hash"
        )
        name = canonicalize_name(match.group(1).split("[")[0])
        found[name] = (match.group(2), match.group(3))
    return found


def wanted(extras: tuple[str, ...]) -> set[str]:
    """Every third-party requirement: the project's own distributions (``tool.uv.sources``, the
    protocol package and the Python client) are installed from their folders, not the locks."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    local = {canonicalize_name(name) for name in pyproject["tool"]["uv"]["sources"]}
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(r).name) for r in names} - local


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime", ()), ("dev", ("dev",)), ("bench", ("dev", "bench"))]
)
def test_each_lock_pins_everything_its_environment_asks_for(
    lock: str, extras: tuple[str, ...]
) -> None:
    pinned = pins(LOCKS[lock])
    missing = wanted(extras) - set(pinned)
    assert not missing, f"requirements/{lock}.txt lacks {sorted(missing)}: run `make lock`"
    assert {"setuptools", "wheel"} <= set(pinned), "the build backend is locked too"


def test_the_bench_lock_pins_what_the_dev_lock_pins_alike() -> None:
    """`make bench` installs the bench lock over the dev environment: a package pinned otherwise
    there would leave the venv off the dev lock, and the next `make test` would fail on it."""
    dev, bench = pins(LOCKS["dev"]), pins(LOCKS["bench"])
    differ = sorted(f"{n} {dev[n][0]} != {bench[n][0]}" for n in dev.keys() & bench.keys()
                    if dev[n] != bench[n])  # fmt: skip
    assert not differ, f"compile the bench lock with -c requirements/dev.txt (make lock): {differ}"


def test_the_environment_running_the_tests_is_the_dev_lock() -> None:
    drift = []
    for name, (pinned, marker) in pins(LOCKS["dev"]).items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            drift.append(f"{name} missing")
            continue
        if installed != pinned:
            drift.append(f"{name} {installed} != {pinned}")
    assert not drift, f"the venv drifted from requirements/dev.txt (rm -rf .venv): {drift}"


def test_every_install_in_the_makefile_and_the_image_is_hash_checked() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes" in makefile
    assert "-r requirements/dev.txt" in makefile and "-r requirements/bench.txt" in makefile
    assert not re.search(r"pip install[^\n]*'\.\[", makefile), "no unlocked extras install"
    assert "-e ./protocol -e ./clients/python -e ." in makefile, "the local distributions, no deps"
    dockerfile = (ROOT / "services" / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r requirements/runtime.txt" in dockerfile
    assert "pip install --no-deps --no-build-isolation ./protocol ." in dockerfile


def test_ci_runs_lint_before_the_tests() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert script.index("make lint") < script.index("make test")
