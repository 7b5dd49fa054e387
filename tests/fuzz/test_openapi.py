"""Schemathesis against the real services (``python -m services`` as a process): every operation
in docs/openapi.json with generated valid and invalid inputs; no 500, and every response matches
the document (status, content type, headers, body schema). Bounded so it stays within minutes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from realtime_gateway_protocol.wire_json import loads
from tests.system.procs import embedded_env, service

pytestmark = pytest.mark.system

DOC = Path(__file__).parents[2] / "docs" / "openapi.json"
API_KEY = "fuzz-api-key-0123456789"
METRICS_TOKEN = "fuzz-metrics-token-0123456789"
EXAMPLES = 40
SCHEMA = schemathesis.openapi.from_path(
    DOC,
    config=SchemathesisConfig.from_dict({"generation": {"mode": "all", "max-examples": EXAMPLES}}),
)
WS_PATHS = frozenset(
    path
    for path, item in loads(DOC.read_bytes(), max_depth=64)["paths"].items()
    if any(server.get("description") == "ws_service" for server in item.get("servers", ()))
)
"""ws_service's endpoints (the server API): their path items name ws_service as their server."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_the_document_is_valid_openapi_3_1() -> None:
    document = loads(DOC.read_bytes(), max_depth=64)
    assert document["openapi"].startswith("3.1")
    validate(document)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Both services in one real process (the embedded launcher), on free ports."""
    workdir = tmp_path_factory.mktemp("fuzz")
    env, auth_port, ws_port = embedded_env(
        workdir,
        AUTH_METRICS_TOKEN=METRICS_TOKEN,
        WS_API_KEYS=API_KEY,
    )
    with service("services", env, auth_port, workdir) as proc:
        yield {"auth": f"http://127.0.0.1:{auth_port}", "ws": f"http://127.0.0.1:{ws_port}"}
        assert "Traceback" not in proc.tail(100_000)


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_conforms(case: schemathesis.Case, stack: dict[str, str]) -> None:
    ws = case.path in WS_PATHS
    headers = {"Authorization": f"Bearer {API_KEY}"} if ws else None
    case.call_and_validate(
        base_url=stack["ws" if ws else "auth"], headers=headers, checks=CHECKS, timeout=10
    )
