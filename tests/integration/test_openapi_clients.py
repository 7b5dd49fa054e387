"""Clients generated from the two OpenAPI documents, as a team would make them, calling the real
services (the app factories on real ports): openapi-python-client's package for each document,
imported and used for register, login (token and cookie modes), refresh and revoke (form bodies),
and publish (the API key, sent to ws_service); and openapi-generator's typescript-fetch clients,
compiled by the locked TypeScript and run in Node for register, login, refresh and publish.

Without Java, Node or the locked TypeScript (`make test` installs it with npm ci) the TypeScript
test is skipped with the reason, and fails under CI=true."""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from tests.integration.stack import API_KEY, PASSWORD, MakeStack
from tests.services import unavailable
from tests.support.js_package import TOOLS, run, tool

ROOT = Path(__file__).resolve().parents[2]
DOCS = {name: ROOT / f"{name}_service" / "openapi.json" for name in ("auth", "ws")}
BIN = Path(sys.executable).parent
"""The venv's scripts: both generators come from the dev lock."""
FORM = "application/x-www-form-urlencoded"
USER = "gen-alice"


def generate_python(name: str, folder: Path) -> None:
    """openapi-python-client, offline, into ``folder/<name>_api``; no formatter hooks, so the
    code runs as generated."""
    config = folder / f"{name}.json"
    config.write_text(json.dumps({"package_name_override": f"{name}_api", "post_hooks": []}))
    command = [
        str(BIN / "openapi-python-client"),
        "generate",
        *("--path", str(DOCS[name]), "--meta", "none", "--config", str(config)),
        *("--output-path", str(folder / f"{name}_api"), "--fail-on-warning"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Both packages, importable as ``auth_api`` and ``ws_api`` for this module's tests."""
    folder = tmp_path_factory.mktemp("generated")
    for name in DOCS:
        generate_python(name, folder)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for module in [m for m in sys.modules if m.split(".")[0] in {"auth_api", "ws_api"}]:
            del sys.modules[module]


def api(module: str) -> ModuleType:
    return importlib.import_module(module)


def operation(package: str, name: str) -> Any:
    return api(f"{package}.api.default.{name}")


@dataclass
class Recorder:
    """What the generated client put on the wire (an httpx request hook)."""

    sent: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> None:
        self.sent.append(request)

    def form(self) -> dict[str, list[str]]:
        """The last request's body, which must be a form."""
        request = self.sent[-1]
        assert request.headers["Content-Type"] == FORM
        return parse_qs(request.content.decode(), strict_parsing=True)


@dataclass
class Auth:
    url: str
    ws_url: str
    client: Any
    recorder: Recorder
    models: Any


def test_each_package_has_its_services_operations_only(generated: Path) -> None:
    operations = {
        name: {p.stem for p in (generated / f"{name}_api" / "api" / "default").glob("[!_]*.py")}
        for name in DOCS
    }
    auth = {"register", "login", "token", "revoke", "revoke_sessions", "logout", "ws_ticket"}
    assert auth <= operations["auth"]
    assert {"publish", "broadcast", "disconnect", "presence"} <= operations["ws"]
    assert operations["auth"] & operations["ws"] == {"healthz", "readyz", "metrics", "openapi"}


@pytest.fixture
async def auth(generated: Path, make_stack: MakeStack) -> AsyncIterator[Auth]:
    """A generated auth_service client on the real service, gen-alice registered through it."""
    stack = await make_stack()
    models, recorder, url = api("auth_api.models"), Recorder(), stack.auth_url.rstrip("/")
    async with api("auth_api.client").Client(
        base_url=url, httpx_args={"event_hooks": {"request": [recorder]}}
    ) as client:
        created = await operation("auth_api", "register").asyncio_detailed(
            client=client, body=models.Credentials(username=USER, password=PASSWORD)
        )
        assert created.status_code == 201, created.content
        assert isinstance(created.parsed, models.User) and created.parsed.username == USER
        yield Auth(url, str(stack.ws.make_url("")).rstrip("/"), client, recorder, models)


async def login(auth: Auth) -> Any:
    tokens = await operation("auth_api", "login").asyncio(
        client=auth.client, body=auth.models.Credentials(username=USER, password=PASSWORD)
    )
    assert isinstance(tokens, auth.models.TokenResponse), tokens
    return tokens


async def refresh(auth: Auth, refresh_token: str) -> Any:
    grant = auth.models.TokenRequestGrantType.REFRESH_TOKEN
    return await operation("auth_api", "token").asyncio_detailed(
        client=auth.client,
        body=auth.models.TokenRequest(grant_type=grant, refresh_token=refresh_token),
    )


async def test_login_answers_one_token_response_in_either_mode(auth: Auth) -> None:
    unset = api("auth_api.types").Unset
    tokens = await login(auth)
    assert tokens.token_type == "Bearer" and tokens.access_token
    assert isinstance(tokens.refresh_token, str) and isinstance(tokens.csrf_token, unset)

    async with api("auth_api.client").Client(
        base_url=auth.url, headers={"Origin": auth.url}
    ) as browser:
        cookie = await operation("auth_api", "login").asyncio(
            client=browser,
            body=auth.models.Credentials(username=USER, password=PASSWORD, session="cookie"),
        )
    assert isinstance(cookie, auth.models.TokenResponse), cookie
    assert isinstance(cookie.csrf_token, str) and cookie.csrf_token
    assert isinstance(cookie.refresh_token, unset)


async def test_refresh_sends_a_form_and_rotates(auth: Auth) -> None:
    tokens = await login(auth)
    refreshed = await refresh(auth, tokens.refresh_token)
    assert auth.recorder.form() == {
        "grant_type": ["refresh_token"],
        "refresh_token": [tokens.refresh_token],
    }
    assert refreshed.status_code == 200, refreshed.content
    assert isinstance(refreshed.parsed, auth.models.TokenResponse)
    assert refreshed.parsed.refresh_token != tokens.refresh_token


async def test_revoke_sends_a_form_and_ends_the_session(auth: Auth) -> None:
    tokens = await login(auth)
    revoked = await operation("auth_api", "revoke").asyncio_detailed(
        client=auth.client, body=auth.models.Revoke(token=tokens.refresh_token)
    )
    assert auth.recorder.form() == {"token": [tokens.refresh_token]}
    assert revoked.status_code == 200, revoked.content
    again = await refresh(auth, tokens.refresh_token)
    assert again.status_code == 400
    assert isinstance(again.parsed, auth.models.Error) and again.parsed.error == "invalid_grant"


async def test_publish_goes_to_ws_service_with_the_api_key(auth: Auth) -> None:
    models = api("ws_api.models")
    async with api("ws_api.client").AuthenticatedClient(base_url=auth.ws_url, token=API_KEY) as ws:
        published = await operation("ws_api", "publish").asyncio_detailed(
            client=ws, body=models.Publish(channel=f"user:{USER}", data={"note": "hello"})
        )
    assert published.status_code == 202, published.content
    assert published.parsed == models.Published(published=True, channel=f"user:{USER}")


@pytest.fixture(scope="module")
def typescript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """openapi-generator's typescript-fetch for each document (offline, on the machine's Java),
    and a script calling both, compiled by the locked TypeScript under --strict without
    skipLibCheck."""
    for binary, what in (
        ("java", "Java (openapi-generator is a JVM program)"),
        ("node", "Node.js"),
    ):
        if shutil.which(binary) is None:
            unavailable(what, f"no {binary} on PATH")
    tsc = tool("tsc")
    folder = tmp_path_factory.mktemp("typescript")
    for name in DOCS:
        command = [
            str(BIN / "openapi-generator-cli"),
            "generate",
            *("-g", "typescript-fetch", "-i", str(DOCS[name]), "-o", str(folder / name)),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    shutil.copy(Path(__file__).with_name("openapi_calls.ts"), folder / "calls.ts")
    options = {
        "strict": True,
        "target": "es2022",
        "module": "commonjs",
        "moduleResolution": "node10",
        "lib": ["es2022", "dom"],
        "types": ["node"],
        "typeRoots": [str(TOOLS / "@types")],
        "outDir": "out",
    }
    (folder / "tsconfig.json").write_text(
        json.dumps({"compilerOptions": options, "files": ["calls.ts"]})
    )
    run([tsc, "-p", "tsconfig.json"], folder)
    return folder / "out" / "calls.js"


async def test_the_typescript_fetch_clients_work_against_the_services(
    typescript: Path, make_stack: MakeStack
) -> None:
    stack = await make_stack()
    node = await asyncio.create_subprocess_exec(
        "node",
        str(typescript),
        stack.auth_url.rstrip("/"),
        str(stack.ws.make_url("")).rstrip("/"),
        API_KEY,
        PASSWORD,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, stderr.decode()
    answers = json.loads(stdout)
    assert answers["user"]["username"] == "ts-alice"
    assert answers["tokens"]["tokenType"] == "Bearer"
    assert answers["refreshed"]["refreshToken"] not in ("", answers["tokens"]["refreshToken"])
    assert answers["bodies"]["/v1/token"] == "form"
    assert answers["published"] == {"published": True, "channel": "user:ts-alice"}
