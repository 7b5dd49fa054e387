"""The load-balancer config: its routing promises, and ``nginx -t`` where nginx is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme

ROOT = Path(__file__).resolve().parents[3]
NGINX_CONF = ROOT / "services" / "nginx" / "nginx.conf"
UPSTREAM_RESOLVE_SINCE = (1, 27, 3)
"""Open-source nginx accepts ``server ... resolve`` in an upstream from this version on."""


def nginx_version(binary: str) -> tuple[int, ...]:
    output = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", output)
    assert match, output
    return tuple(int(part) for part in match.groups())


def render(conf: str, tmp_path: Path, cert: Path, key: Path, version: tuple[int, ...]) -> str:
    """The compose config with loopback upstreams and every file it writes moved into tmp_path."""
    replacements = [
        (r"server (auth|ws):(\d+)", r"server 127.0.0.1:\2"),
        (r"/etc/nginx/certs/dev\.crt", str(cert)),
        (r"/etc/nginx/certs/dev\.key", str(key)),
        (r"(?m)^pid .*;$", f"pid {tmp_path}/nginx.pid;"),
        (
            r"(?m)^http \{$",
            "http {\n"
            + "".join(
                f"    {kind}_temp_path {tmp_path}/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
        ),
    ]
    if version < UPSTREAM_RESOLVE_SINCE:
        replacements.append((r" resolve;", ";"))
    for pattern, replacement in replacements:
        conf, count = re.subn(pattern, replacement, conf)
        assert count, f"nginx.conf no longer contains {pattern!r}"
    return conf


def test_routes_and_timeouts_match_the_deployment() -> None:
    conf = NGINX_CONF.read_text()
    assert "listen 443 ssl;" in conf
    assert re.search(r"location /auth/ \{\s*proxy_pass http://auth/;", conf), "prefix not stripped"
    assert re.search(r"location = /ws \{\s*proxy_pass http://ws;", conf)
    assert re.search(r"location = /v1/publish \{\s*proxy_pass http://ws;", conf)
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", conf)
    assert read_timeout and int(read_timeout.group(1)) > 30, "must outlast the 30 s heartbeat"


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    binary = shutil.which("nginx")
    if binary is None:
        pytest.skip(
            "nginx is not installed (Debian package nginx); the config text is still checked"
        )
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    cert, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    rendered = tmp_path / "nginx.conf"
    rendered.write_text(render(NGINX_CONF.read_text(), tmp_path, cert, key, nginx_version(binary)))

    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(rendered)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
