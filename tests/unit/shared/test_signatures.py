"""Gateway-Signature: what the gateway sends, what an app backend accepts."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from realtime_gateway_protocol.signatures import TOLERANCE, sign, verify

BODY = b'{"action":"subscribe","channel":"doc:1"}'
NOW = 1_800_000_000


def test_a_signature_verifies_with_its_secret_and_nothing_else() -> None:
    header = sign(BODY, ["s3cret"], now=NOW)
    assert verify(header, BODY, ["s3cret"], now=NOW)
    assert not verify(header, BODY, ["other"], now=NOW)
    assert not verify(header, BODY + b" ", ["s3cret"], now=NOW)
    assert not verify(header.replace(f"t={NOW}", f"t={NOW + 1}"), BODY, ["s3cret"], now=NOW)


def test_the_header_is_the_documented_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"k", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, ["k"], now=NOW) == f"t={NOW},v1={expected}"


@pytest.mark.parametrize("skew", [-TOLERANCE - 1, TOLERANCE + 1])
def test_a_stale_or_future_signature_is_refused(skew: int) -> None:
    assert not verify(sign(BODY, ["k"], now=NOW + skew), BODY, ["k"], now=NOW)


def test_during_a_rotation_either_secret_verifies() -> None:
    header = sign(BODY, ["new", "old"], now=NOW)
    assert verify(header, BODY, ["old"], now=NOW)
    assert verify(header, BODY, ["new"], now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "t=1",
        "v1=ab",
        "t=x,v1=ab",
        f"t={NOW},v1=\udcff",
        "t=" + "9" * 20 + ",v1=a",
        "t=\u00b2,v1=ab",  # a digit to str.isdigit, not to int
        f"t={NOW}\u0661,v1=ab",  # an Arabic-Indic digit, which int would read
        "x" * 5000,
    ],
)
def test_malformed_headers_are_refused(header: str | None) -> None:
    assert not verify(header, BODY, ["k"], now=NOW)


def test_signing_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        sign(BODY, [], now=NOW)
