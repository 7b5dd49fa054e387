"""Schemathesis against the real services (``python -m services`` as a process): every operation
of each service's OpenAPI document (auth_service/openapi.json, ws_service/openapi.json) sent to
that service, with generated valid and invalid inputs; no 500, and every response matches the
document (status, content type, headers, body schema). Bounded so it stays within minutes."""

from __future__ import annotations

import urllib.request
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

ROOT = Path(__file__).parents[2]
DOCS = {name: ROOT / name / "openapi.json" for name in ("auth_service", "ws_service")}
API_KEY = "fuzz-api-key-0123456789"
METRICS_TOKEN = "fuzz-metrics-token-0123456789"
EXAMPLES = 40
CONFIG = SchemathesisConfig.from_dict({"generation": {"mode": "all", "max-examples": EXAMPLES}})
AUTH = schemathesis.openapi.from_path(DOCS["auth_service"], config=CONFIG)
WS = schemathesis.openapi.from_path(DOCS["ws_service"], config=CONFIG)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("name", DOCS)
def test_each_document_is_valid_openapi_3_1_and_names_its_service(name: str) -> None:
    document = loads(DOCS[name].read_bytes(), max_depth=64)
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert [server["description"] for server in document["servers"]] == [f"{name} (make run)"]


@pytest.mark.parametrize("name", DOCS)
def test_every_operation_that_reads_a_body_documents_its_refusals(name: str) -> None:
    """A body is refused, on either service, when it is malformed (400), slow (408), too large
    (413) or compressed (415): ws_service answered 415 where its document did not say so (an
    outside probe). Every operation with a request body lists all four."""
    document = loads(DOCS[name].read_text(encoding="utf-8"))
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    ]
    assert len(operations) >= 5
    for path, method, operation in operations:
        missing = {"400", "413", "415"} - set(operation["responses"])
        assert not missing, f"{method.upper()} {path} does not document {sorted(missing)}"


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
        yield {
            "auth_service": f"http://127.0.0.1:{auth_port}",
            "ws_service": f"http://127.0.0.1:{ws_port}",
        }
        assert "Traceback" not in proc.tail(100_000)


@pytest.mark.parametrize("name", DOCS)
def test_each_service_serves_its_own_document(name: str, stack: dict[str, str]) -> None:
    with urllib.request.urlopen(f"{stack[name]}/openapi.json", timeout=10) as response:  # noqa: S310 (loopback)
        assert response.headers["Content-Type"] == "application/json"
        assert response.read() == DOCS[name].read_bytes()


@AUTH.parametrize()
@FUZZ
def test_every_auth_service_operation_conforms(
    case: schemathesis.Case, stack: dict[str, str]
) -> None:
    response = case.call_and_validate(base_url=stack["auth_service"], checks=CHECKS, timeout=10)
    assert response.status_code < 500, response.text  # not_a_server_error, stated here too


@WS.parametrize()
@FUZZ
def test_every_ws_service_operation_conforms(
    case: schemathesis.Case, stack: dict[str, str]
) -> None:
    response = case.call_and_validate(
        base_url=stack["ws_service"],
        headers={"Authorization": f"Bearer {API_KEY}"},
        checks=CHECKS,
        timeout=10,
    )
    assert response.status_code < 500, response.text  # not_a_server_error, stated here too
