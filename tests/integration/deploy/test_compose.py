"""docker-compose.yml is checked offline: no Docker engine runs on these machines.

Besides the Compose specification's schema, the files are read the way `docker compose` reads
them (``${VAR:-default}`` interpolation from .env, the publish overlay merged on top), and every
service is held to the production rules: no root, read-only, no capabilities, limits, rotating
logs, a healthcheck; the databases out of nginx's reach; secrets only as files.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

from shared.config.env import env_list
from tests.integration.deploy.rules import (
    ROOT,
    SECRET_SETTINGS,
    SERVICE_COMMANDS,
    WS_DRAIN_SECONDS,
    image_user,
)
from tests.lb import NGINX_CONF
from tests.services import unavailable

COMPOSE_FILE = ROOT / "docker-compose.yml"
PUBLISH_FILE = ROOT / "docker-compose.publish.yml"
ENV_EXAMPLE = ROOT / ".env.example"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^{}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}`` and
    ``${VAR:+alt}``, nested ones innermost first, and ``$$`` for a literal dollar."""
    text = text.replace("$$", "\0")

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = env.get(name)
        present = value is not None and (value != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return value if present and value is not None else arg
        if op in (":?", "?"):
            if not present:
                raise ValueError(f"compose would stop: {name}: {arg}")
            return value or ""
        if op in (":+", "+"):
            return arg if present else ""
        return value or ""

    while True:
        text, count = _VARIABLE.subn(one, text)
        if not count:
            return text.replace("\0", "$")


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def _volume_target(volume: str) -> str:
    return volume.split(":")[1]


def _merged(base: Any, override: Any, key: str = "") -> Any:
    """Compose's merge of an override file: mappings merge, volumes by their target, other
    sequences (secrets, networks) as a union."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = _merged(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if key == "volumes":
            targets = {_volume_target(volume): volume for volume in [*base, *override]}
            return list(targets.values())
        return [*base, *(item for item in override if item not in base)]
    return override


def load(*files: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What `docker compose config` would print for these files and this .env (empty: defaults)."""
    result: dict[str, Any] = {}
    for path in files:
        data = YAML(typ="safe").load(path.read_text())
        result = _merged(result, _interpolated(data, env or {}))
    return result


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip().removeprefix("#")
        if re.match(r"^[A-Z_]+=", line):
            name, _, value = line.partition("=")
            values[name] = value
    return values


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    return load(COMPOSE_FILE, PUBLISH_FILE)


@pytest.mark.parametrize("path", [COMPOSE_FILE, PUBLISH_FILE], ids=lambda path: path.name)
def test_compose_files_match_the_compose_specification(path: Path) -> None:
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validation_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert "    command:" in text
    broken.write_text(text.replace("    command:", "    comand:", 1))
    result = validate(broken)
    assert result.returncode != 0
    assert "comand" in result.stdout


def test_our_image_runs_only_the_commands_the_tests_run(compose: dict[str, Any]) -> None:
    ours = {
        name: service
        for name, service in compose["services"].items()
        if service.get("build", {}).get("dockerfile") == "services/Dockerfile"
        or service.get("image") == "realtime-gateway:dev"
    }
    assert set(ours) == set(SERVICE_COMMANDS)
    for name, service in ours.items():
        assert service["command"] == SERVICE_COMMANDS[name]
        assert service["deploy"]["replicas"] == 2
        assert service["user"] == "{}:{}".format(*image_user())


def hardening_problems(compose: Mapping[str, Any]) -> list[str]:
    """Each production rule a service breaks, as ``service: rule``."""
    problems = []
    for name, service in compose["services"].items():
        user = str(service.get("user", ""))
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        nofile = service.get("ulimits", {}).get("nofile", {})
        log_options = service.get("logging", {}).get("options", {})
        rules = {
            "runs as a named non-root user": user.split(":")[0] not in ("", "0", "root"),
            "read_only: true": service.get("read_only") is True,
            "cap_drop: [ALL]": service.get("cap_drop") == ["ALL"],
            "no-new-privileges": "no-new-privileges:true" in service.get("security_opt", []),
            "a CPU limit": bool(limits.get("cpus")),
            "a memory limit": bool(limits.get("memory")),
            "ulimits nofile": bool(nofile.get("soft")) and bool(nofile.get("hard")),
            "rotating logs": bool(log_options.get("max-size"))
            and bool(log_options.get("max-file")),
            "a healthcheck": bool(service.get("healthcheck", {}).get("test")),
            "a restart policy": service.get("restart") == "unless-stopped",
        }
        problems += [f"{name}: {rule}" for rule, kept in rules.items() if not kept]
    return problems


def test_every_service_is_hardened(compose: dict[str, Any], published: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "redis", "auth", "ws", "lb"}
    assert hardening_problems(compose) == []
    assert hardening_problems(published) == []


@pytest.mark.parametrize(
    ("service", "rule", "problem"),
    [
        ("lb", "read_only", "lb: read_only: true"),
        ("postgres", "cap_drop", "postgres: cap_drop: [ALL]"),
        ("redis", "user", "redis: runs as a named non-root user"),
        ("auth", "healthcheck", "auth: a healthcheck"),
        ("ws", "ulimits", "ws: ulimits nofile"),
        ("lb", "logging", "lb: rotating logs"),
        ("postgres", "deploy", "postgres: a memory limit"),
        ("ws", "security_opt", "ws: no-new-privileges"),
    ],
)
def test_the_hardening_check_names_a_service_that_lacks_a_rule(
    compose: dict[str, Any], service: str, rule: str, problem: str
) -> None:
    weakened = copy.deepcopy(compose)
    del weakened["services"][service][rule]
    assert problem in hardening_problems(weakened)


def test_the_databases_sit_on_an_internal_network_nginx_is_not_on(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    internal = {name for name, net in compose["networks"].items() if (net or {}).get("internal")}
    assert services["postgres"]["networks"] == services["redis"]["networks"] == ["backend"]
    assert internal == {"backend"}
    assert not set(services["lb"]["networks"]) & internal
    for name in ("auth", "ws"):
        assert set(services[name]["networks"]) == {"edge", "backend"}
    for name in ("postgres", "redis", "auth", "ws"):
        assert "ports" not in services[name], f"{name} must be reached only through nginx"


def test_nginx_has_descriptors_for_every_proxied_socket(compose: dict[str, Any]) -> None:
    """A proxied connection holds two descriptors (client and replica)."""
    conf = NGINX_CONF.read_text()
    connections = re.search(r"worker_connections (\d+);", conf)
    rlimit = re.search(r"worker_rlimit_nofile (\d+);", conf)
    assert connections and rlimit
    nofile = compose["services"]["lb"]["ulimits"]["nofile"]
    assert int(rlimit.group(1)) <= nofile["soft"] == nofile["hard"]
    assert int(rlimit.group(1)) > 2 * int(connections.group(1))
    assert compose["services"]["ws"]["ulimits"]["nofile"]["soft"] >= 65536


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["auth"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["ws"]["depends_on"]["auth"] == {"condition": "service_healthy"}
    assert services["lb"]["depends_on"] == {
        "auth": {"condition": "service_healthy"},
        "ws": {"condition": "service_healthy"},
    }
    assert services["lb"]["ports"] == ["443:8443"]
    assert "/readyz" in " ".join(services["auth"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["ws"]["healthcheck"]["test"])


def test_ws_gets_time_to_drain_before_it_is_killed(compose: dict[str, Any]) -> None:
    grace = compose["services"]["ws"]["stop_grace_period"]
    assert int(grace.removesuffix("s")) >= WS_DRAIN_SECONDS + 10


def _secret_files(service: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in service.get("environment", {}).items() if k.endswith("_FILE")}


@pytest.mark.parametrize("which", ["base", "publish"])
def test_secrets_reach_the_services_only_as_files(
    compose: dict[str, Any], published: dict[str, Any], which: str
) -> None:
    stack = compose if which == "base" else published
    for name, service in stack["services"].items():
        environment = service.get("environment", {})
        assert not SECRET_SETTINGS & set(environment), f"{name} gets a secret in its environment"
        for value in environment.values():
            assert urlsplit(str(value)).password is None, f"{name}: a password in {value}"
        for variable, path in _secret_files(service).items():
            secret = path.removeprefix("/run/secrets/")
            assert secret in service["secrets"], f"{name}: {variable} names an unmounted secret"
            assert stack["secrets"][secret]["file"] == f"./secrets/{secret}"
    auth = stack["services"]["auth"]["environment"]
    postgres = stack["services"]["postgres"]["environment"]
    assert auth["AUTH_DATABASE_PASSWORD_FILE"] == postgres["POSTGRES_PASSWORD_FILE"]
    assert auth["AUTH_KEY_ENCRYPTION_SECRETS_FILE"] == "/run/secrets/auth_key_encryption_secrets"
    assert "redis_password" in stack["services"]["redis"]["secrets"]
    assert "/run/secrets/redis_password" in " ".join(stack["services"]["redis"]["command"])


def test_publishing_is_off_unless_the_overlay_adds_the_key_and_the_route(
    compose: dict[str, Any], published: dict[str, Any]
) -> None:
    route = "./services/nginx/publish.conf:/etc/nginx/routes/publish.conf:ro"
    ws, lb = compose["services"]["ws"], compose["services"]["lb"]
    assert not [key for key in ws["environment"] if key.startswith("WS_API_KEYS")]
    assert route not in lb["volumes"]
    ws, lb = published["services"]["ws"], published["services"]["lb"]
    assert ws["environment"]["WS_API_KEYS_FILE"] == "/run/secrets/ws_api_keys"
    assert set(ws["secrets"]) == {"redis_password", "ws_api_keys"}
    assert route in lb["volumes"]
    assert len(lb["volumes"]) == len(compose["services"]["lb"]["volumes"]) + 1


def test_every_file_the_stack_mounts_is_in_the_repository(published: dict[str, Any]) -> None:
    for service in published["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and not source.startswith("./secrets"):
                assert (ROOT / source).exists(), source


def test_without_an_env_file_the_stack_is_localhost_with_the_self_signed_certificate(
    compose: dict[str, Any],
) -> None:
    auth = compose["services"]["auth"]["environment"]
    ws = compose["services"]["ws"]["environment"]
    assert auth["AUTH_ISSUER"] == ws["WS_ISSUER"] == "https://localhost/auth"
    assert env_list(ws, "WS_ALLOWED_ORIGINS") == ("https://localhost",)
    assert env_list(auth, "AUTH_CORS_ORIGINS") == ()
    assert "./secrets/tls:/etc/nginx/certs:ro" in compose["services"]["lb"]["volumes"]
    assert ws["WS_JWKS_URL"] == f"http://auth:{auth['AUTH_PORT']}/.well-known/jwks.json"
    assert ws["REDIS_URL"] == auth["REDIS_URL"] == "redis://redis:6379/0"


def test_hosts_origins_and_the_certificate_come_from_the_env_file() -> None:
    env = {
        **env_example(),
        "PUBLIC_ORIGIN": "https://chat.example.com",
        "APP_ORIGINS": "https://app.example.com",
        "HTTPS_PORT": "8443",
        "TLS_CERT_DIR": "/srv/gateway/tls",
        "SECRETS_DIR": "/srv/gateway/secrets",
    }
    stack = load(COMPOSE_FILE, PUBLISH_FILE, env=env)
    auth = stack["services"]["auth"]["environment"]
    ws = stack["services"]["ws"]["environment"]
    assert auth["AUTH_ISSUER"] == ws["WS_ISSUER"] == "https://chat.example.com/auth"
    assert env_list(ws, "WS_ALLOWED_ORIGINS") == (
        "https://chat.example.com",
        "https://app.example.com",
    )
    assert env_list(auth, "AUTH_CORS_ORIGINS") == ("https://app.example.com",)
    lb = stack["services"]["lb"]
    assert lb["ports"] == ["8443:8443"]
    assert "/srv/gateway/tls:/etc/nginx/certs:ro" in lb["volumes"]
    files = {name: secret["file"] for name, secret in stack["secrets"].items()}
    assert files["ws_api_keys"] == "/srv/gateway/secrets/ws_api_keys"
    assert set(files) == {
        "auth_key_encryption_secrets",
        "postgres_password",
        "redis_password",
        "ws_api_keys",
    }


def test_every_variable_the_compose_files_read_is_documented_in_env_example() -> None:
    text = COMPOSE_FILE.read_text() + PUBLISH_FILE.read_text()
    read = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert read == set(env_example()) - {"COMPOSE_FILE"}


def test_interpolation_follows_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", env) == "value|d||d"
    assert interpolate("${UNSET:-${SET:-x}/tls}|$${SET}", env) == "value/tls|${SET}"
    assert interpolate("${SET:+on}|${EMPTY:+on}", env) == "on|"
    with pytest.raises(ValueError, match="UNSET: needed"):
        interpolate("${UNSET:?needed}", env)


def test_make_secrets_generates_each_secret_once(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        unavailable("openssl", "the binary is not installed (Debian package openssl)")
    directory = tmp_path / "secrets"
    first = make_secrets(ROOT, dict(os.environ), f"SECRETS_DIR={directory}")
    compose = load(COMPOSE_FILE, PUBLISH_FILE)
    values = {}
    for name in compose["secrets"]:
        path = directory / name
        assert f"created {path}" in first
        values[name] = path.read_text()
        assert re.fullmatch(r"[0-9a-f]{64}\n", values[name])
        assert path.stat().st_mode & 0o777 == 0o644
    assert len(set(values.values())) == len(values)
    assert directory.stat().st_mode & 0o777 == 0o700
    context = ssl.create_default_context()
    context.check_hostname = False
    context.load_cert_chain(directory / "tls" / "fullchain.pem", directory / "tls" / "privkey.pem")
    san = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", "fullchain.pem"],
        cwd=directory / "tls",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:localhost" in san
    assert make_secrets(ROOT, dict(os.environ), f"SECRETS_DIR={directory}") == "", (
        "a second run keeps every file"
    )
    assert {name: (directory / name).read_text() for name in values} == values


def test_make_secrets_makes_them_where_env_tells_compose_to_look(tmp_path: Path) -> None:
    """``SECRETS_DIR`` in .env is where compose reads the secret files (the operations guide lists
    it among .env's settings), yet `make secrets`, which `make up` runs, made them in ./secrets
    whatever .env said (an outside probe): compose then found none. Make runs here beside a .env
    of its own, as an operator's checkout would; the command line still wins."""
    if shutil.which("openssl") is None:
        unavailable("openssl", "the binary is not installed (Debian package openssl)")
    (tmp_path / ".env").write_text(
        "# the operator's settings\nPUBLIC_ORIGIN=https://chat.example.com\n"
        "SECRETS_DIR='./kept/secrets'  # beside the checkout\n"
    )
    make_secrets(tmp_path, _without_secrets_dir())
    assert (tmp_path / "kept" / "secrets" / "redis_password").is_file()
    assert not (tmp_path / "secrets").exists()
    make_secrets(tmp_path, _without_secrets_dir(), f"SECRETS_DIR={tmp_path / 'given'}")
    assert (tmp_path / "given" / "redis_password").is_file()


def _without_secrets_dir() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"SECRETS_DIR", "MAKEFLAGS"}}


def make_secrets(cwd: Path, environ: dict[str, str], *arguments: str) -> str:
    """`make secrets` run from ``cwd`` (beside a .env of its own); its output."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "secrets", *arguments],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("where", ["environment", "command line"])
def test_make_secrets_takes_an_empty_secrets_dir_for_secrets_as_compose_does(
    tmp_path: Path, where: str
) -> None:
    """Compose reads ``${SECRETS_DIR:-./secrets}``: set but empty, it is ./secrets. `make secrets`
    took the empty value as it was and ran ``mkdir -p /tls`` (a directory at the root of the
    filesystem) and ``chmod 700`` with no operand, and stopped (outside probe K). A dry run here:
    the commands must name ./secrets."""
    (tmp_path / ".env").write_text("SECRETS_DIR=./from-env-file\n")
    environ = _without_secrets_dir()
    arguments = ["-n"]
    if where == "environment":
        environ["SECRETS_DIR"] = ""
    else:
        arguments.append("SECRETS_DIR=")
    output = make_secrets(tmp_path, environ, *arguments)
    assert "mkdir -p secrets/tls" in output, output
    assert " /tls" not in output, output
