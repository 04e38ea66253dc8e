"""Fixtures of the results area: stores on real services and result backends owned by one test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.results.backends import RedisBackend, StubBackend

from dramatiq_ray import FilesystemStore, GCSStore, S3Store


def make_message(actor_name: str = "render", **options: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name="default", actor_name=actor_name, args=(), kwargs={}, options=options)


@pytest.fixture
def fs_store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "blobs")


@pytest.fixture
def stub_backend() -> Iterator[StubBackend]:
    backend = StubBackend(namespace=f"dramatiq-ray-test-{uuid.uuid4().hex[:12]}", use_namespace_prefix_keys=True)
    yield backend
    for key in [key for key in StubBackend.results if key.startswith(backend.namespace)]:
        StubBackend.results.pop(key, None)


@pytest.fixture
def redis_backend(redis_client: Any, redis_namespace: str) -> RedisBackend:
    return RedisBackend(client=redis_client, namespace=redis_namespace, use_namespace_prefix_keys=True)


@pytest.fixture(params=["redis", "stub"])
def any_backend(request: pytest.FixtureRequest) -> Any:
    """Each test using this runs once on the Redis backend and once on the Stub backend."""
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture
def s3_store(s3_server: Any, s3_bucket: str) -> S3Store:
    return S3Store(s3_bucket, endpoint_url=s3_server.endpoint_url, region="us-east-1")


@pytest.fixture
def gcs_store(gcs_server: Any, gcs_bucket: str) -> GCSStore:
    # A short retry window keeps the outage tests quick; it is the same code path as the default.
    return GCSStore(gcs_bucket, endpoint_url=gcs_server.endpoint_url, retry_timeout=1.0)
