"""deploy/observability: the alert rules and the Grafana dashboard query only metrics the services
export, the rules pass `promtool check rules` and their own `promtool test rules`, and the docs
name every alert."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from auth_service.metrics import Metrics as AuthMetrics
from tests.integration.deploy.rules import ROOT
from tests.services import unavailable
from ws_service.metrics import Metrics as WsMetrics

OBSERVABILITY = ROOT / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yml"
ALERT_TESTS = OBSERVABILITY / "alerts.test.yml"
DASHBOARD = OBSERVABILITY / "dashboard.json"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
_NOT_METRICS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
}  # fmt: skip


def exported(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exports, its labelled metrics included before first use."""
    return {
        f"{family.name}{suffix}"
        for family in registry.collect()
        for suffix in _SUFFIXES[family.type]
    }


def service_metrics() -> set[str]:
    return exported(AuthMetrics().registry) | exported(WsMetrics().registry)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither a function or
    aggregation (followed by a parenthesis), nor a keyword, a label (inside braces or a grouping
    clause), a string, a range, a number or a duration."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+|ms|[smhdwy])*", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group() in _NOT_METRICS:
            continue
        names.add(match.group())
    return names


def alert_rules() -> list[dict[str, Any]]:
    data = YAML(typ="safe").load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    return [
        target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    ]


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{status=~"5.."}[5m]))) '
        "/ on (instance) group_left b > 0.5 and c offset 5m or sum(d) without (x)"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d"}
    assert metric_names('max by (instance) (g) > 0 unless h2{job="x"} == bool 1e3') == {"g", "h2"}


def test_the_services_export_the_names_the_rules_are_checked_against() -> None:
    names = service_metrics()
    assert {"ws_auth_total", "ws_connections", "auth_http_request_duration_seconds_bucket"} <= names
    assert {"ws_event_bus_connected", "auth_event_bus_connected", "auth_outbox_pending"} <= names
    assert "ws_auth" not in names, "a counter is exported with _total"


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_queried_metric_exists(source: str) -> None:
    queries = (
        [rule["expr"] for rule in alert_rules()] if source == "alerts" else dashboard_queries()
    )
    assert queries
    queried = set().union(*(metric_names(query) for query in queries))
    assert queried, source
    assert queried - service_metrics() == set()


def test_every_alert_is_labelled_explained_tested_and_documented() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    tests = YAML(typ="safe").load(ALERT_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    operations = (ROOT / "docs" / "operations.md").read_text()
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert re.fullmatch(r"\d+m", rule["for"]), rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} has no case in alerts.test.yml"
        assert f"`{rule['alert']}`" in operations, (
            f"docs/operations.md does not name {rule['alert']}"
        )


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    data = dashboard()
    assert data["uid"] == "realtime-gateway" and data["schemaVersion"] >= 36
    (variable,) = data["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    panels = data["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs) and all(target["expr"] for target in panel["targets"])


def find_promtool() -> str:
    """PROMTOOL, promtool on PATH, or the copy `make test` unpacks from Debian's prometheus."""
    venv = ROOT / ".venv" / "prometheus" / "usr" / "bin" / "promtool"
    for candidate in (os.environ.get("PROMTOOL"), shutil.which("promtool"), str(venv)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unavailable("promtool", "no binary: `make test` unpacks Debian's prometheus into .venv")
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "args", [["check", "rules", ALERTS.name], ["test", "rules", ALERT_TESTS.name]], ids=" ".join
)
def test_promtool_accepts_the_rules_and_their_tests(args: list[str]) -> None:
    result = subprocess.run(
        [find_promtool(), *args],
        cwd=OBSERVABILITY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_when_an_alert_does_not_fire(tmp_path: Path) -> None:
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    rules = ALERTS.read_text().replace("auth_outbox_pending) > 0", "auth_outbox_pending) > 1")
    (tmp_path / ALERTS.name).write_text(rules)
    result = subprocess.run(
        [find_promtool(), "test", "rules", ALERT_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "GatewayOutboxBacklog" in result.stdout + result.stderr
