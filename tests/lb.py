"""The deployment's nginx config, rendered onto loopback ports, and the nginx binary to run it."""

from __future__ import annotations

import getpass
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import trustme

from tests.services import free_port, unavailable

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "services" / "nginx" / "nginx.conf"
PUBLISH_ROUTE = NGINX_CONF.with_name("publish.conf")
VENV_NGINX = ROOT / ".venv" / "nginx" / "usr" / "sbin" / "nginx"


def find_nginx() -> str:
    """NGINX_BIN, nginx on PATH, or the copy `make test` unpacks into the venv."""
    for candidate in (os.environ.get("NGINX_BIN"), shutil.which("nginx"), str(VENV_NGINX)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unavailable("nginx", "no binary: `make test` unpacks Debian's nginx into .venv/nginx")
    raise AssertionError("unreachable")


def render(
    conf: str,
    tmp_path: Path,
    ports: Mapping[str, Sequence[int]],
    listen_port: int,
    health_port: int,
) -> str:
    """The compose config on loopback ports, with every file it reads or writes in tmp_path.

    ``ports`` maps an upstream (``auth``, ``ws``) to its replicas' ports. Their DNS names and the
    ``resolve`` parameter go together (Debian's nginx also predates ``resolve``). The optional
    routes are read from ``tmp_path/routes``, where :func:`write_config` puts what compose mounts.
    """

    def servers(match: re.Match[str]) -> str:
        params = match.group(2) or ""
        return "\n        ".join(
            f"server 127.0.0.1:{port}{params};" for port in ports[match.group(1)]
        )

    temp_paths = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    replacements: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
        (r"server (auth|ws):\d+ resolve( [^;]*)?;", servers),
        (r"listen 8443 ssl backlog=4096;", f"listen 127.0.0.1:{listen_port} ssl backlog=4096;"),
        (r"listen 127\.0\.0\.1:8080;", f"listen 127.0.0.1:{health_port};"),
        (r"/etc/nginx/certs/", f"{tmp_path}/"),
        (r"/etc/nginx/routes/", f"{tmp_path}/routes/"),
        # Workers run as this user: a root master would drop them to nobody, who cannot read a
        # checkout under a private directory (mktemp -d is 0700), and the page would be a 404.
        (r"(?m)^pid .*;$", f"pid {tmp_path}/nginx.pid;\nuser {getpass.getuser()};"),
        (r"/usr/share/nginx/html", str(ROOT / "services" / "web")),
        (r"/usr/share/nginx/client", str(ROOT / "clients" / "js")),
        (r"/etc/nginx/page_headers\.conf", str(NGINX_CONF.with_name("page_headers.conf"))),
        (r"(?m)^http \{$", "http {\n" + temp_paths),
        (r"access_log /dev/stdout", f"access_log {tmp_path}/access.log"),
    ]
    for pattern, replacement in replacements:
        conf, count = re.subn(pattern, replacement, conf)
        assert count, f"nginx.conf no longer contains {pattern!r}"
    return conf


def write_config(
    tmp_path: Path,
    ca: trustme.CA,
    ports: Mapping[str, Sequence[int]],
    listen_port: int,
    *,
    publish: bool = False,
    health_port: int = 0,
) -> Path:
    """``publish``: route /v1/publish, as docker-compose.publish.yml does by mounting its route."""
    issued = ca.issue_cert("localhost", "127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "fullchain.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
    if publish:  # without it the routes directory does not exist, as in the container
        (tmp_path / "routes").mkdir()
        shutil.copy(PUBLISH_ROUTE, tmp_path / "routes" / PUBLISH_ROUTE.name)
    rendered = tmp_path / "nginx.conf"
    conf = render(NGINX_CONF.read_text(), tmp_path, ports, listen_port, health_port or free_port())
    rendered.write_text(conf)
    return rendered


def nginx_args(binary: str, tmp_path: Path, conf: Path) -> list[str]:
    return [binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)]
