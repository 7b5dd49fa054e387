"""docs/configuration.md lists exactly the environment variables the servers read.

The names are found in the source, not in a list kept beside it: every call of the ``env_*``
readers of ``shared/config/env.py`` (and ``environ.get`` / ``environ[...]``) with a literal name, or
a module constant holding one, in auth_service, ws_service, shared and services (the launcher behind
`make run`). A name read through ``env_secret`` or ``env_secret_url`` may also come from
``NAME_FILE``, so that variable must be documented too. A variable counts as documented when it is
in the first cell of a table row of docs/configuration.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["auth_service", "ws_service", "shared", "services"]
DOC = ROOT / "docs" / "configuration.md"

READERS = {
    "env_str",
    "env_int",
    "env_float",
    "env_bool",
    "env_list",
    "env_log_level",
    "env_origins",
    "start_logging",  # (environ, name): the log level's variable
    "env_secret",
    "env_secret_url",
}
SECRET_READERS = {"env_secret", "env_secret_url"}
"""Each takes ``(environ, name, ...)``; ``env_secret_url`` also a second name, its password's."""
ENVIRONS = {"environ", "os.environ"}
NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
DOCUMENTED = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "TEXT"``: how a variable's name may be passed around."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


def _literal(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        value: str | None = node.value
    elif isinstance(node, ast.Name):
        value = constants.get(node.id)
    else:
        return None
    return value if value is not None and NAME.fullmatch(value) else None


def _reads(node: ast.AST, constants: dict[str, str]) -> list[str | None]:
    """The variables one node reads: a reader's names, ``environ.get(NAME)``, ``environ[NAME]``."""
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return [_literal(node.slice, constants)] if ast.unparse(node.value) in ENVIRONS else []
    if not isinstance(node, ast.Call) or not node.args:
        return []
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    if name in READERS:
        names = [_literal(arg, constants) for arg in node.args[1:3]]
        names = names if name == "env_secret_url" else names[:1]
        files = [f"{n}_FILE" for n in names if n] if name in SECRET_READERS else []
        return [*names, *files]
    owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
    if (name == "get" and owner in ENVIRONS) or (name == "getenv" and owner == "os"):
        return [_literal(node.args[0], constants)]
    return []


def read_variables(source: str) -> set[str]:
    """The environment variables one module reads (with the ``_FILE`` of each secret)."""
    tree = ast.parse(source)
    constants = _constants(tree)
    return {name for node in ast.walk(tree) for name in _reads(node, constants) if name}


def variables_read() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found |= read_variables(path.read_text())
    return found


def documented(markdown: str) -> set[str]:
    """The variables named in the first cell of a table row."""
    found: set[str] = set()
    for line in markdown.splitlines():
        if line.startswith("|"):
            found.update(DOCUMENTED.findall(line.split("|")[1]))
    return found


def test_every_variable_the_servers_read_is_documented() -> None:
    missing = variables_read() - documented(DOC.read_text())
    assert missing == set(), f"read by the code, missing from docs/configuration.md: {missing}"


def test_every_documented_variable_is_read() -> None:
    stale = documented(DOC.read_text()) - variables_read()
    assert stale == set(), f"in docs/configuration.md, read by no code: {stale}"


def test_the_scan_finds_every_kind_of_read() -> None:
    """The search itself: literals, module constants, secrets with their files, the launcher's
    and the command line's own reads, and the shared Redis URL."""
    found = variables_read()
    assert {
        "AUTH_PORT",  # env_int
        "AUTH_KEY_ENCRYPTION_SECRETS",  # env_secret of a module constant
        "AUTH_KEY_ENCRYPTION_SECRETS_FILE",
        "AUTH_DATABASE_PASSWORD_FILE",  # env_secret_url's password
        "REDIS_URL_FILE",  # shared/redis/connect.py
        "WS_PROXY_SECRET_FILE",
        "AUTH_ISSUER",  # shared/config/env.py
        "AUTH_LOG_LEVEL",  # auth_service/__main__.py
        "LOG_LEVEL",  # services/__main__.py
    } <= found
    assert len(found) > 90, sorted(found)


def test_a_variable_missing_from_the_doc_is_caught() -> None:
    source = (
        'import os\nA = "WS_NEW_THING"\nenv_int(os.environ, A, 1)\nos.environ.get("WS_OTHER")\n'
    )
    assert read_variables(source) == {"WS_NEW_THING", "WS_OTHER"}
    doc = "| `WS_OTHER` | x | mentions `WS_NEW_THING` only in its meaning |\n"
    assert read_variables(source) - documented(doc) == {"WS_NEW_THING"}


def _bounds_in_code() -> dict[str, tuple[float, float | None]]:
    """``(minimum, maximum)`` of every ``env_int`` and ``env_float`` call with a literal name; a
    bound passed as a constant is looked up in the module that defines it."""
    import shared.config.env as env
    import ws_service.settings as ws_settings

    named = {**vars(env), **vars(ws_settings)}
    found: dict[str, tuple[float, float | None]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("env_int", "env_float")
                    and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                ):
                    continue
                given = {k.arg: k.value for k in node.keywords}
                low = _bound(given.get("minimum"), named)
                found[node.args[1].value] = (
                    0 if low is None else low,
                    _bound(given.get("maximum"), named),
                )
    return found


def _bound(value: ast.expr | None, named: dict[str, object]) -> float | None:
    if value is None:
        return None
    if isinstance(value, ast.Name):
        return float(named[value.id])  # type: ignore[arg-type]
    return float(ast.literal_eval(value))


def _bounds_in_doc() -> dict[str, tuple[float, float | None]]:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## Numbers and their bounds") :]
    found = {}
    for row in re.findall(r"^\| `([A-Z_0-9]+)` \| ([^|]+) \| ([^|]+) \|$", table, re.MULTILINE):
        name, low, high = (cell.strip().replace(",", "") for cell in row)
        found[name] = (float(low), None if high == "-" else float(high))
    return found


def test_the_bounds_table_is_the_codes() -> None:
    """An outside probe found most bounds undocumented (WS_MAX_MESSAGE_BYTES at least 1024, ...)
    and none above many numbers (a token that lived 1e23 s): the table says every bound the code
    checks, and the code checks every bound the table says."""
    code = _bounds_in_code()
    assert code["WS_PORT"] == (1, 65535) and code["AUTH_ACCESS_TOKEN_TTL"] == (1, 86400)
    assert _bounds_in_doc() == code
