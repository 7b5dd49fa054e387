"""docs/operations.md names exactly the audit events the servers log.

The names are found in the source: every ``audit("<event>", ...)`` call in auth_service,
ws_service and shared. The doc lists auth_service's under "Audit log" and ws_service's in the
``audit`` row of the log table. An outside probe found an alert written on a documented name
(``ws_publish_unauthorized``) that no code logs, and five events no doc named.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1].parent
DOC = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def logged() -> set[str]:
    events = set()
    for package in ("auth_service", "ws_service", "shared"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "audit"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    events.add(node.args[0].value)
    return events


def documented() -> set[str]:
    section = DOC[DOC.index("- **Audit log.**") :]
    section = section[: section.index("Of two refreshes")]
    (row,) = [line for line in DOC.splitlines() if line.startswith("| `audit` |")]
    names = re.findall(r"`([a-z]+_[a-z_]+)`", section) + re.findall(r"`(ws_[a-z_]+)`", row)
    return set(names) - {"client_hash"}  # a field, named beside its event


def test_every_audit_event_is_documented_and_every_documented_one_is_logged() -> None:
    events = logged()
    assert {"login_ok", "ws_auth_failure", "ws_api_unauthorized"} <= events  # the walk works
    assert sorted(events - documented()) == [], "logged, not in docs/operations.md"
    assert sorted(documented() - events) == [], "in docs/operations.md, logged nowhere"
