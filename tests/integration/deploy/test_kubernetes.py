"""deploy/kubernetes: each kustomize overlay is rendered by kubectl's kustomize, every object is
validated against the API schemas of current Kubernetes minors (kubernetes-validate, strict: an
unknown field fails), and the rendered manifests are held to the deployment's rules."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from tests.integration.deploy.rules import (
    ROOT,
    SECRET_SETTINGS,
    SERVICE_COMMANDS,
    WS_DRAIN_SECONDS,
    WS_HEARTBEAT,
    image_user,
)
from tests.services import unavailable
from ws_service.api import ROUTES as SERVER_API

KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["production", "local"]
KUBERNETES_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
"""The oldest minor still supported upstream when this was written, and the newest the schemas
know."""
CLOSE_HANDSHAKES = 5
"""ws_service's close_timeout: the closing handshakes after the drain."""
AFFINITY_ANNOTATIONS = ("affinity", "session-cookie", "upstream-hash-by")
AUTH_PATH = "/auth(/|$)((?!(?:metrics|readyz)$).*)"
"""Everything under /auth but the operator's /metrics and /readyz (docs/operations.md)."""


def find_kubectl() -> str:
    """KUBECTL, the copy `make test` unpacks into the venv, or kubectl on PATH."""
    venv = ROOT / ".venv" / "kubectl" / "kubectl"
    for candidate in (os.environ.get("KUBECTL"), str(venv), shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unavailable("kubectl", "no binary for kustomize: `make test` unpacks one into .venv/kubectl")
    raise AssertionError("unreachable")


def render(target: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [find_kubectl(), "kustomize", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in YAML(typ="safe").load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(KUSTOMIZE / "overlays" / request.param)


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env(deployment: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(deployment)["env"]}


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config_map,) = objects(docs, "ConfigMap").values()
    return dict(config_map["data"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_api(
    overlay: tuple[str, list[dict[str, Any]]], version: str
) -> None:
    _, docs = overlay
    assert {doc["kind"] for doc in docs} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
        "NetworkPolicy",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_rejects_an_unknown_field(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    deployment = next(iter(objects(docs, "Deployment").values()))
    container(deployment)  # one container, patched below
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_both_services_are_probed_hardened_and_sized(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    deployments = objects(docs, "Deployment")
    assert set(deployments) == set(SERVICE_COMMANDS)
    uid, gid = image_user()
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        main = container(deployment)
        assert main["command"] == SERVICE_COMMANDS[name]
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
        for kind in ("requests", "limits"):
            assert set(main["resources"][kind]) == {"cpu", "memory"}, f"{name} {kind}"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
            uid,
            gid,
        )
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert main["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        mounts = {mount["mountPath"] for mount in main["volumeMounts"]}
        assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"  # noqa: S108
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def prestop_seconds(deployment: dict[str, Any]) -> int:
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


def test_the_grace_period_covers_the_prestop_the_drain_and_the_closing_handshakes(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    ws = objects(docs, "Deployment")["ws"]
    drain = int(env(ws)["WS_DRAIN_SECONDS"])
    assert drain == WS_DRAIN_SECONDS
    grace = ws["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > prestop_seconds(ws) + drain + CLOSE_HANDSHAKES
    auth = objects(docs, "Deployment")["auth"]
    assert auth["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > prestop_seconds(auth)


def test_disruption_budgets_services_and_the_autoscaler_select_the_pods(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    deployments = objects(docs, "Deployment")
    budgets = objects(docs, "PodDisruptionBudget")
    services = objects(docs, "Service")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert services[name]["spec"]["selector"].items() <= labels.items()
        (port,) = container(deployment)["ports"]
        assert services[name]["spec"]["ports"][0]["targetPort"] == port["name"]
    (hpa,) = objects(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ws",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    assert budgets["ws"]["spec"]["maxUnavailable"] == 1
    (policy,) = objects(docs, "NetworkPolicy").values()
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def ingress_paths(docs: list[dict[str, Any]]) -> dict[str, tuple[str, str, dict[str, str]]]:
    """path -> (service, host, annotations of its Ingress)."""
    paths = {}
    for ingress in objects(docs, "Ingress").values():
        (rule,) = ingress["spec"]["rules"]
        assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]
        for path in rule["http"]["paths"]:
            service = path["backend"]["service"]["name"]
            paths[path["path"]] = (service, rule["host"], ingress["metadata"]["annotations"])
    return paths


def test_the_ingress_routes_without_stickiness_and_outlasts_the_heartbeat(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, docs = overlay
    paths = ingress_paths(docs)
    publish = {"production": True, "local": False}[name]
    metadata = r"/\.well-known/oauth-authorization-server/auth$"
    # Every path of the server API, not only /v1/publish (an outside probe: a backend's
    # /v1/disconnect got the ingress's 404 on Kubernetes, while Compose's nginx routed it).
    server_api = {route.path for route in SERVER_API}
    assert len(server_api) == 8
    expected = {AUTH_PATH, "/ws", metadata} | (server_api if publish else set())
    assert set(paths) == expected
    service, _, annotations = paths[AUTH_PATH]
    assert service == "auth"
    assert annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    # ingress-nginx matches the path as a case-insensitive PCRE regex from the start.
    routed = re.compile(AUTH_PATH, re.IGNORECASE)
    for path in ("/auth", "/auth/", "/auth/v1/token", "/auth/.well-known/jwks.json"):
        assert routed.match(path), path
    for inside in ("/auth/metrics", "/auth/readyz", "/auth/METRICS"):
        assert not routed.match(inside), f"{inside} is the operator's, not routed"
    assert routed.match("/auth/v1/token").expand(r"/\2") == "/v1/token"
    service, _, annotations = paths[metadata]  # RFC 8414 section 3.1
    assert service == "auth"
    rewrite = annotations["nginx.ingress.kubernetes.io/rewrite-target"]
    assert rewrite == "/.well-known/oauth-authorization-server"
    service, _, annotations = paths["/ws"]
    assert service == "ws"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) > WS_HEARTBEAT
    for _, _, annotations in paths.values():
        assert not [key for key in annotations if key.endswith(AFFINITY_ANNOTATIONS)]


def test_the_public_host_is_the_same_everywhere(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, docs = overlay
    settings = config(docs)
    assert settings["AUTH_ISSUER"] == settings["WS_ISSUER"]
    issuer = urlsplit(settings["AUTH_ISSUER"])
    assert issuer.scheme == "https" and issuer.path == "/auth"
    assert f"https://{issuer.hostname}" in settings["WS_ALLOWED_ORIGINS"].split(",")
    assert {host for _, host, _ in ingress_paths(docs).values()} == {issuer.hostname}
    assert issuer.hostname == {"production": "chat.example.com", "local": "localhost"}[name]


def mounted_secrets(deployment: dict[str, Any]) -> dict[str, str]:
    """mount path -> Secret name."""
    volumes = {
        volume["name"]: volume["secret"]["secretName"]
        for volume in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
    }
    return {
        mount["mountPath"]: volumes[mount["name"]]
        for mount in container(deployment)["volumeMounts"]
        if mount["name"] in volumes
    }


def secrets_used(docs: list[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """(deployment, variable, Secret name) for every ``_FILE`` variable."""
    for name, deployment in objects(docs, "Deployment").items():
        mounts = mounted_secrets(deployment)
        for variable, path in env(deployment).items():
            if variable.endswith("_FILE"):
                directory = str(Path(path).parent)
                assert directory in mounts, f"{name}: {variable} names an unmounted path"
                yield name, variable, mounts[directory]


def test_secrets_reach_the_pods_only_as_files(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    settings = config(docs)
    for deployment in objects(docs, "Deployment").values():
        assert not SECRET_SETTINGS & set(env(deployment))
    assert not SECRET_SETTINGS & set(settings)
    for value in settings.values():
        assert urlsplit(value).password is None, value
    used = {(service, variable): secret for service, variable, secret in secrets_used(docs)}
    expected = {
        ("auth", "AUTH_KEY_ENCRYPTION_SECRETS_FILE"): "gateway-key-encryption",
        ("auth", "AUTH_DATABASE_PASSWORD_FILE"): "gateway-database",
        ("auth", "REDIS_PASSWORD_FILE"): "gateway-redis",
        ("ws", "REDIS_PASSWORD_FILE"): "gateway-redis",
    }
    if name == "production":
        expected["ws", "WS_API_KEYS_FILE"] = "gateway-api-keys"
    assert used == expected


def test_the_docs_name_every_secret_the_manifests_need() -> None:
    docs = render(KUSTOMIZE / "overlays" / "production")
    names = {secret for _, _, secret in secrets_used(docs)}
    names |= {
        tls["secretName"] for ing in objects(docs, "Ingress").values() for tls in ing["spec"]["tls"]
    }
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name in names:
        assert re.search(rf"`{name}`", operations), f"docs/operations.md does not name {name}"
