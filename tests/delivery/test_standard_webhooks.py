"""Real deliveries (a worker POSTs to a real HTTP receiver) verified by the Standard Webhooks reference libraries:
``standardwebhooks`` from PyPI, and ``standardwebhooks`` from npm through the Node.js script the docs show; and the
openssl check the docs show. Signed with two secrets, as while one rotates."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import dramatiq
import pytest
import standardwebhooks
from dramatiq.results.backends import StubBackend

from dramatiq_ray import Results, Webhooks
from dramatiq_ray.webhooks import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests import _services
from tests._services import REPO_ROOT
from tests.delivery.conftest import SECRET, Received, Receiver

OLD = "whsec_ZHJhbWF0aXEtcmF5IG9sZCB0ZXN0IGtleSAwMTIzNA=="
OTHER = "whsec_ZHJhbWF0aXEtcmF5IG90aGVyIGtleSAwMTIzNDU2Nzg="
EXAMPLE = REPO_ROOT / "examples" / "webhooks"


@pytest.fixture
def delivered(stub_broker, start_worker, receiver: Receiver) -> tuple[dramatiq.Message[int], Received]:
    """One message's webhook as the receiver got it, signed with the old and the new secret."""
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(Webhooks(secrets=[OLD, SECRET], allow_http=True))

    @dramatiq.actor(store_results=True, webhook=receiver.url())
    def render(frame: int) -> dict[str, object]:
        return {"frame": frame, "title": "café ☕"}

    start_worker(stub_broker)
    message = render.send(7)
    (request,) = receiver.wait_for(1)
    return message, request


def altered(body: bytes) -> bytes:
    return body.replace(b'"frame": 7', b'"frame": 8').replace(b'"frame":7', b'"frame":8')


def test_delivery_carries_the_standard_webhooks_headers(delivered: tuple[dramatiq.Message[int], Received]) -> None:
    message, request = delivered

    assert request.headers[ID_HEADER] == message.message_id
    assert request.headers[TIMESTAMP_HEADER].isdigit()
    assert [entry[:3] for entry in request.headers[SIGNATURE_HEADER].split(" ")] == ["v1,", "v1,"]
    assert not {"Dramatiq-Ray-Signature", "Idempotency-Key"} & set(request.headers)


@pytest.mark.parametrize("secret", [OLD, SECRET], ids=["old-secret", "new-secret"])
def test_delivery_passes_the_python_reference_verifier_with_either_secret(
    delivered: tuple[dramatiq.Message[int], Received], secret: str
) -> None:
    message, request = delivered

    event = standardwebhooks.Webhook(secret).verify(request.body, request.headers)

    assert (event["message_id"], event["status"]) == (message.message_id, "succeeded")
    assert event["result"] == {"value": {"frame": 7, "title": "café ☕"}}


def test_delivery_altered_or_under_another_secret_fails_the_python_reference_verifier(
    delivered: tuple[dramatiq.Message[int], Received],
) -> None:
    _, request = delivered

    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(altered(request.body), request.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(OTHER).verify(request.body, request.headers)


def run_node_verifier(
    where: Path, body: bytes, headers: dict[str, str], secret: str
) -> subprocess.CompletedProcess[str]:
    """The docs' verify.mjs, next to the installed npm package, on a captured request."""
    node = shutil.which("node")
    assert node is not None
    script = where / "verify.mjs"
    shutil.copyfile(EXAMPLE / "verify.mjs", script)
    (where / "body.json").write_bytes(body)
    (where / "headers.json").write_text(json.dumps(headers))
    env = {"WEBHOOK_SECRET": secret, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [node, script, "body.json", "headers.json"], cwd=where, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("secret", [OLD, SECRET], ids=["old-secret", "new-secret"])
def test_delivery_passes_the_node_reference_verifier_in_the_docs_with_either_secret(
    delivered: tuple[dramatiq.Message[int], Received], node_standardwebhooks: Path, tmp_path: Path, secret: str
) -> None:
    message, request = delivered
    where = tmp_path / "receiver"
    shutil.copytree(node_standardwebhooks, where)

    verified = run_node_verifier(where, request.body, request.headers, secret)

    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == f"valid: {message.message_id} succeeded"


def test_delivery_altered_or_under_another_secret_fails_the_node_reference_verifier(
    delivered: tuple[dramatiq.Message[int], Received], node_standardwebhooks: Path, tmp_path: Path
) -> None:
    _, request = delivered
    where = tmp_path / "receiver"
    shutil.copytree(node_standardwebhooks, where)

    changed = run_node_verifier(where, altered(request.body), request.headers, SECRET)
    foreign = run_node_verifier(where, request.body, request.headers, OTHER)

    assert changed.returncode == 1 and "refused: No matching signature found" in changed.stderr
    assert foreign.returncode == 1 and "refused: No matching signature found" in foreign.stderr


def test_delivery_passes_the_openssl_check_in_the_docs(
    delivered: tuple[dramatiq.Message[int], Received], tmp_path: Path
) -> None:
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        _services.unavailable("openssl and bash are needed to run the docs' openssl check")
    _, request = delivered
    body = tmp_path / "body.json"
    headers = request.headers
    env = {
        "WEBHOOK_ID": headers[ID_HEADER],
        "WEBHOOK_TIMESTAMP": headers[TIMESTAMP_HEADER],
        "WEBHOOK_SIGNATURE": headers[SIGNATURE_HEADER],
        "PATH": "/usr/bin:/bin",
    }

    def check(content: bytes, secret: str) -> subprocess.CompletedProcess[str]:
        body.write_bytes(content)
        return subprocess.run(
            ["bash", EXAMPLE / "verify.sh", body],
            env={**env, "WEBHOOK_SECRET": secret},
            capture_output=True,
            text=True,
            timeout=60,
        )

    results = [check(request.body, OLD), check(request.body, SECRET), check(altered(request.body), SECRET)]

    assert [(r.returncode, r.stdout.strip()) for r in results] == [(0, "valid"), (0, "valid"), (1, "INVALID")]


@pytest.mark.parametrize("name", ["verify.mjs", "verify.sh"])
def test_delivery_docs_show_the_verification_scripts_as_they_are(name: str) -> None:
    docs = (REPO_ROOT / "docs" / "delivery.md").read_text()

    assert (EXAMPLE / name).read_text().strip() in docs
