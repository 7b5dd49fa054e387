"""Each service serves HTTPS itself when given a certificate (a throwaway trustme CA here)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.services import free_port
from tests.system.procs import service

pytestmark = pytest.mark.system


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca, cert_path, key_path


async def test_auth_service_serves_https(
    tls_files: tuple[trustme.CA, Path, Path], tmp_path: Path
) -> None:
    ca, cert, key = tls_files
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    port = free_port()
    env = {
        "AUTH_DEV": "1",
        "AUTH_DATA_DIR": str(tmp_path),
        "AUTH_PORT": str(port),
        "AUTH_HOST": "localhost",
        "AUTH_TLS_CERT": str(cert),
        "AUTH_TLS_KEY": str(key),
    }
    with service("auth_service", env, port, tmp_path, tls=client_ctx):
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"https://localhost:{port}/.well-known/oauth-authorization-server", ssl=client_ctx
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["issuer"] == f"https://localhost:{port}"
                assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(
                    f"https://localhost:{port}/healthz", ssl=ssl.create_default_context()
                )
