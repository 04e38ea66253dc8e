"""Signing and verifying webhook bodies: HMAC-SHA256 over "<timestamp>.<body>", several secrets, a tolerance, and
the same check made by a non-Python receiver (the Node.js and openssl versions the docs show)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dramatiq_ray import ConfigurationError, WebhookSignatureError
from dramatiq_ray.delivery.signing import signature_header
from dramatiq_ray.webhooks import SIGNATURE_HEADER, verify
from tests._services import REPO_ROOT

BODY = json.dumps({"message_id": "m-1", "status": "succeeded", "result": {"value": 5}}).encode()
NOW = 1_767_225_600
EXAMPLE = REPO_ROOT / "examples" / "webhooks"


def signed(body: bytes = BODY, secrets: tuple[str, ...] = ("s3cret",), timestamp: int = NOW) -> dict[str, str]:
    return {SIGNATURE_HEADER: signature_header(body, [s.encode() for s in secrets], timestamp)}


def test_verify_returns_the_payload_of_a_correctly_signed_body() -> None:
    assert verify(BODY, signed(), ["s3cret"], now=NOW) == json.loads(BODY)


def test_verify_accepts_a_body_signed_with_any_of_the_secrets_while_they_rotate() -> None:
    headers = signed(secrets=("old", "new"))

    assert verify(BODY, headers, ["new"], now=NOW)["message_id"] == "m-1"
    assert verify(BODY, headers, ["old"], now=NOW)["message_id"] == "m-1"
    assert verify(BODY, signed(secrets=("new",)), ["old", "new"], now=NOW)["message_id"] == "m-1"


def test_verify_refuses_an_altered_body() -> None:
    with pytest.raises(WebhookSignatureError, match="No signature of the request matches"):
        verify(BODY.replace(b"5", b"6"), signed(), ["s3cret"], now=NOW)


def test_verify_refuses_a_body_signed_with_an_unknown_secret() -> None:
    with pytest.raises(WebhookSignatureError, match="does not have"):
        verify(BODY, signed(secrets=("someone-else",)), ["s3cret"], now=NOW)


def test_verify_refuses_a_timestamp_outside_the_tolerance() -> None:
    with pytest.raises(WebhookSignatureError, match="tolerance 300 s"):
        verify(BODY, signed(timestamp=NOW - 301), ["s3cret"], now=NOW)
    assert verify(BODY, signed(timestamp=NOW - 300), ["s3cret"], now=NOW)["status"] == "succeeded"
    assert verify(BODY, signed(timestamp=NOW - 3600), ["s3cret"], tolerance=None, now=NOW)["status"] == "succeeded"


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=123", "t=abc,v1=def"])
def test_verify_refuses_a_missing_or_malformed_signature_header(header: str | None) -> None:
    headers = {} if header is None else {SIGNATURE_HEADER: header}
    with pytest.raises(WebhookSignatureError):
        verify(BODY, headers, ["s3cret"], now=NOW)


def test_verify_finds_the_header_whatever_its_case_or_given_as_its_value() -> None:
    value = signed()[SIGNATURE_HEADER]

    assert verify(BODY, {SIGNATURE_HEADER.lower(): value}, ["s3cret"], now=NOW)["message_id"] == "m-1"
    assert verify(BODY.decode(), value, ["s3cret"], now=NOW)["message_id"] == "m-1"


def test_verify_refuses_a_signed_body_that_is_not_a_json_object() -> None:
    with pytest.raises(WebhookSignatureError, match="not a JSON object"):
        verify(b"[1]", signed(b"[1]"), ["s3cret"], now=NOW)


def test_verify_needs_a_list_of_secrets() -> None:
    with pytest.raises(ConfigurationError, match="list of strings"):
        verify(BODY, signed(), "s3cret", now=NOW)  # type: ignore[arg-type]


def test_node_receiver_in_the_docs_accepts_a_signed_body_and_refuses_an_altered_one(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    body = tmp_path / "body.json"
    body.write_bytes(BODY)
    header = signed(timestamp=int(time.time()))[SIGNATURE_HEADER]
    env = {"WEBHOOK_SECRET": "s3cret", "PATH": "/usr/bin:/bin"}

    ok = subprocess.run([node, EXAMPLE / "verify.mjs", body, header], env=env, capture_output=True, text=True)
    body.write_bytes(BODY.replace(b"5", b"6"))
    bad = subprocess.run([node, EXAMPLE / "verify.mjs", body, header], env=env, capture_output=True, text=True)

    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "valid: m-1 succeeded"
    assert bad.returncode == 1 and "no signature matches" in bad.stderr


def test_openssl_check_in_the_docs_accepts_a_signed_body_and_refuses_an_altered_one(tmp_path: Path) -> None:
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("openssl or bash is not installed")
    body = tmp_path / "body.json"
    body.write_bytes(BODY)
    header = signed(timestamp=int(time.time()))[SIGNATURE_HEADER]
    env = {"WEBHOOK_SECRET": "s3cret", "SIGNATURE": header, "PATH": "/usr/bin:/bin"}

    ok = subprocess.run(["bash", EXAMPLE / "verify.sh", body], env=env, capture_output=True, text=True)
    body.write_bytes(BODY.replace(b"5", b"6"))
    bad = subprocess.run(["bash", EXAMPLE / "verify.sh", body], env=env, capture_output=True, text=True)

    assert ok.returncode == 0 and ok.stdout.strip() == "valid", ok.stdout + ok.stderr
    assert bad.returncode == 1 and bad.stdout.strip() == "INVALID"


@pytest.mark.parametrize("name", ["verify.mjs", "verify.sh"])
def test_delivery_docs_show_the_verification_scripts_as_they_are(name: str) -> None:
    docs = (REPO_ROOT / "docs" / "delivery.md").read_text()
    assert (EXAMPLE / name).read_text().strip() in docs
