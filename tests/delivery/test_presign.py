"""Presigned download URLs: get_result_url(message) and store.presign(pointer) on S3 (moto's server, a real GET
of the URL whose bytes match the pointer's SHA-256), GCS (a V4 URL signed with a locally made service-account
key; the emulator serves it without checking signatures) and a clear error from the stores that cannot sign."""

from __future__ import annotations

import gzip
import hashlib
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dramatiq
import pytest
from dramatiq.results import ResultMissing
from dramatiq.results.backends import StubBackend

from dramatiq_ray import (
    ConfigurationError,
    DigestOnlyResultError,
    DigestStore,
    FilesystemStore,
    ForeignPointerError,
    GCSStore,
    PresignError,
    Results,
    S3Store,
    SpillingBackend,
    Webhooks,
    get_pointer,
    get_result_url,
)
from dramatiq_ray.payloads.pointers import parse_pointer
from dramatiq_ray.webhooks import verify
from tests.delivery.conftest import SECRET, Receiver

VALUE = {"rows": [f"row {i:05d}" for i in range(2000)]}


def message_for(actor_name: str = "render") -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name="default", actor_name=actor_name, args=(), kwargs={}, options={})


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


@pytest.fixture
def s3_store(s3_server: Any, s3_bucket: str) -> S3Store:
    return S3Store(s3_bucket, "results", endpoint_url=s3_server.endpoint_url)


def test_s3_presigned_url_downloads_bytes_whose_sha256_is_the_pointers(s3_store: S3Store) -> None:
    # Given a result spilled to S3
    backend = SpillingBackend(StubBackend(), store=s3_store, max_inline_bytes=100)
    message = message_for()
    backend.store_result(message, VALUE, 60_000)

    # When a client downloads it by URL, without credentials
    url = get_result_url(message, expires_in=600, backend=backend)
    assert url is not None
    data = download(url)

    # Then the bytes are those the pointer names, and they are the result's JSON
    pointer = parse_pointer(get_pointer(message, backend=backend) or "")
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (pointer.digest, pointer.size)
    assert json.loads(data) == VALUE
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["600"]


def test_s3_presigned_url_of_a_compressed_result_downloads_the_stored_bytes(s3_store: S3Store) -> None:
    backend = SpillingBackend(StubBackend(), store=s3_store, max_inline_bytes=100, compression="gzip")
    message = message_for()
    backend.store_result(message, VALUE, 60_000)

    url = get_result_url(message, backend=backend)
    assert url is not None
    data = download(url)

    # The URL serves what is stored (compressed): the pointer says so with &z=gzip, and its digest is of those bytes
    pointer = parse_pointer(get_pointer(message, backend=backend) or "")
    assert pointer.compression == "gzip"
    assert hashlib.sha256(data).hexdigest() == pointer.digest
    assert json.loads(gzip.decompress(data)) == VALUE


def test_s3_presign_refuses_a_pointer_of_another_bucket(s3_store: S3Store) -> None:
    foreign = f"s3://another-bucket/results/ab/cd/ab{'cd' * 31}.json?bytes=3"
    with pytest.raises(ForeignPointerError):
        s3_store.presign(foreign, 60)


@pytest.mark.parametrize("expires_in", [0, -1, 7 * 24 * 3600 + 1, 1.5, True])
def test_get_result_url_with_an_expiry_out_of_range_is_refused(s3_store: S3Store, expires_in: Any) -> None:
    backend = SpillingBackend(StubBackend(), store=s3_store, max_inline_bytes=0)
    message = message_for()
    backend.store_result(message, "spilled", 60_000)
    with pytest.raises(ConfigurationError, match="expires_in must be a whole number of seconds"):
        get_result_url(message, expires_in=expires_in, backend=backend)


def test_get_result_url_of_an_inline_result_is_none(tmp_path: Any) -> None:
    backend = SpillingBackend(StubBackend(), store=FilesystemStore(str(tmp_path)))
    message = message_for()
    backend.store_result(message, 5, 60_000)

    assert get_result_url(message, backend=backend) is None


def test_get_result_url_before_the_result_exists_raises_result_missing(s3_store: S3Store) -> None:
    backend = SpillingBackend(StubBackend(), store=s3_store)
    with pytest.raises(ResultMissing):
        get_result_url(message_for("not-run-yet"), backend=backend)


def test_filesystem_store_cannot_presign_and_says_what_to_use(tmp_path: Any) -> None:
    backend = SpillingBackend(StubBackend(), store=FilesystemStore(str(tmp_path)), max_inline_bytes=0)
    message = message_for()
    backend.store_result(message, "spilled", 60_000)

    with pytest.raises(PresignError, match="use S3Store or GCSStore"):
        get_result_url(message, backend=backend)


def test_digest_only_result_has_nothing_to_download() -> None:
    backend = SpillingBackend(StubBackend(), store=DigestStore(), max_inline_bytes=0)
    message = message_for()
    backend.store_result(message, "spilled", 60_000)

    with pytest.raises(DigestOnlyResultError, match="nothing to download"):
        get_result_url(message, backend=backend)
    with pytest.raises(PresignError, match="S3Store or GCSStore"):
        DigestStore().presign(get_pointer(message, backend=backend) or "")


def signing_client(gcs_server: Any) -> Any:
    """A GCS client whose credentials can sign: a service-account key made here (never sent anywhere)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.cloud import storage
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    credentials = service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "dramatiq-ray-test",
            "private_key_id": "test-key",
            "private_key": pem,
            "client_email": "signer@dramatiq-ray-test.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )
    return storage.Client(
        project="dramatiq-ray-test", credentials=credentials, client_options={"api_endpoint": gcs_server.endpoint_url}
    )


def test_gcs_presign_with_a_service_account_key_makes_a_v4_url_that_downloads_the_blob(
    gcs_server: Any, gcs_bucket: str
) -> None:
    # Given a result spilled to GCS, and a store whose credentials hold a private key
    writer = GCSStore(gcs_bucket, "results", client=gcs_server.client())
    backend = SpillingBackend(StubBackend(), store=writer, max_inline_bytes=100)
    message = message_for()
    backend.store_result(message, VALUE, 60_000)
    pointer = get_pointer(message, backend=backend) or ""
    signer = GCSStore(gcs_bucket, "results", client=signing_client(gcs_server))

    url = signer.presign(pointer, expires_in=900)

    query = parse_qs(urlsplit(url).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"] and query["X-Goog-Expires"] == ["900"]
    assert query["X-Goog-Credential"][0].startswith("signer@dramatiq-ray-test.iam.gserviceaccount.com/")
    # the emulator serves the object without checking the signature
    data = download(url)
    assert hashlib.sha256(data).hexdigest() == parse_pointer(pointer).digest


def test_gcs_presign_with_credentials_that_cannot_sign_says_how_to_fix_it(gcs_server: Any, gcs_bucket: str) -> None:
    store = GCSStore(gcs_bucket, "results", client=gcs_server.client())  # anonymous credentials
    backend = SpillingBackend(StubBackend(), store=store, max_inline_bytes=0)
    message = message_for()
    backend.store_result(message, "spilled", 60_000)

    with pytest.raises(PresignError, match=r"credentials cannot sign.*service-account key"):
        get_result_url(message, backend=backend)


def test_webhook_of_a_result_spilled_to_s3_carries_its_pointer_and_a_url_that_downloads_it(
    stub_broker, start_worker, receiver: Receiver, s3_store: S3Store
) -> None:
    # Given an actor whose result spills to S3, and a webhook for it
    stub_broker.add_middleware(Results(backend=StubBackend(), store=s3_store, max_inline_bytes=1024))
    stub_broker.add_middleware(Webhooks(secrets=[SECRET], allow_http=True, presign_expires_in=300))

    @dramatiq.actor(store_results=True, webhook=receiver.url())
    def report() -> dict[str, Any]:
        return VALUE

    start_worker(stub_broker)
    message = report.send()

    # Then the webhook names the pointer, and its URL downloads bytes with the pointer's SHA-256
    (request,) = receiver.wait_for(1)
    result = verify(request.body, request.headers, [SECRET])["result"]
    pointer = parse_pointer(result["pointer"])
    assert result["pointer"] == get_pointer(message, block=True)
    assert (result["sha256"], result["bytes"]) == (pointer.digest, pointer.size)
    assert result["url_expires_at"].endswith("Z") and "value" not in result
    data = download(result["url"])
    assert hashlib.sha256(data).hexdigest() == result["sha256"]
    assert json.loads(data) == VALUE


def test_webhook_of_a_result_spilled_to_a_filesystem_says_why_it_has_no_url(
    stub_broker, start_worker, receiver: Receiver, tmp_path: Any
) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend(), store=FilesystemStore(str(tmp_path)), max_inline_bytes=0))
    stub_broker.add_middleware(Webhooks(secrets=[SECRET], allow_http=True))

    @dramatiq.actor(store_results=True, webhook=receiver.url())
    def report() -> str:
        return "spilled"

    start_worker(stub_broker)
    report.send()

    (request,) = receiver.wait_for(1)
    result = verify(request.body, request.headers, [SECRET])["result"]
    assert result["pointer"].startswith("resultfs://sha256/") and "url" not in result
    assert "cannot make download URLs" in result["url_error"]


def test_presigned_url_of_a_deleted_blob_answers_404(s3_server: Any, s3_bucket: str, s3_store: S3Store) -> None:
    backend = SpillingBackend(StubBackend(), store=s3_store, max_inline_bytes=0)
    message = message_for()
    backend.store_result(message, "gone soon", 60_000)
    pointer = parse_pointer(get_pointer(message, backend=backend) or "")
    url = s3_store.presign(pointer, 60)
    s3_server.client().delete_object(Bucket=s3_bucket, Key=pointer.location)

    with pytest.raises(urllib.error.HTTPError) as answer:
        download(url)
    assert answer.value.code == 404
