"""Fault case 4: the blob store goes away while a worker runs (moto's S3 server or the GCS emulator stopped, the
filesystem store's root replaced by a file, as an unmounted volume would be).

While storing: the message fails (retryably, the retry policy decides), or, with ``on_store_error="digest"``, the
result falls back to a digest with a WARNING and the message succeeds. While reading: the documented
``BlobReadError``. After recovery: the value. A worker that boots during the outage does not start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.results import ResultFailure
from dramatiq.results.backends import StubBackend

from dramatiq_ray import (
    BlobNotFoundError,
    BlobReadError,
    DigestOnlyResultError,
    FilesystemStore,
    GCSStore,
    RayExecutionMiddleware,
    Results,
    S3Store,
    StoreUnavailableError,
)

RESULT_TIMEOUT_MS = 120_000
BIG = 200  # characters: over the 64-byte threshold


class Outage:
    def __init__(self, store: Any, stop: Callable[[], None], start: Callable[[], None]) -> None:
        self.store = store
        self.stop = stop
        self.start = start


@pytest.fixture(params=["filesystem", "s3", "gcs"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    if request.param == "filesystem":
        root = tmp_path / "blobs"
        away = tmp_path / "blobs-away"

        def unmount() -> None:
            root.rename(away)
            root.write_text("not a directory")

        def mount() -> None:
            root.unlink()
            away.rename(root)

        yield Outage(FilesystemStore(root), unmount, mount)
        return
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        store: Any = S3Store(request.getfixturevalue("s3_bucket"), endpoint_url=server.endpoint_url)
    else:
        server = request.getfixturevalue("gcs_server")
        store = GCSStore(request.getfixturevalue("gcs_bucket"), endpoint_url=server.endpoint_url, retry_timeout=1.0)
    yield Outage(store, server.stop, server.start)


def test_store_outage_falls_back_to_a_digest_while_storing_and_raises_a_read_error_while_reading(
    stub_broker, ray_local, start_worker, outage: Outage, caplog
) -> None:
    # Given a worker running bodies on Ray, spilling results over 64 bytes to the store
    if isinstance(outage.store, FilesystemStore):
        Path(outage.store.path).mkdir(parents=True, exist_ok=True)
    stub_broker.add_middleware(
        Results(backend=StubBackend(), store=outage.store, max_inline_bytes=64, on_store_error="digest")
    )
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(broker=stub_broker, store_results=True, max_retries=0)
    def render(value: int) -> str:
        return f"{value}:" + "x" * BIG

    start_worker(stub_broker, threads=2)
    before = render.send(1)
    assert before.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "1:" + "x" * BIG

    outage.stop()
    try:
        # When a big result is produced during the outage, the message still succeeds, with a WARNING
        with caplog.at_level(logging.WARNING, logger="dramatiq_ray"):
            during = render.send(2)
            stub_broker.join(render.queue_name, fail_fast=True, timeout=RESULT_TIMEOUT_MS)
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and "keeping only its digest" in r.message
        ]
        assert warnings and outage.store.describe() in warnings[0].getMessage()
        # And reading it says only its digest was kept
        with pytest.raises(DigestOnlyResultError) as digest_only:
            during.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        assert digest_only.value.size == len(f'"2:{"x" * BIG}"')
        # And reading a result stored before the outage raises the read error, not "missing" or "not found"
        with pytest.raises(BlobReadError) as unreadable:
            before.get_result()
        if not isinstance(outage.store, FilesystemStore):
            # (An unmounted filesystem volume cannot be told from deleted blobs: BlobNotFoundError says both.)
            assert not isinstance(unreadable.value, BlobNotFoundError)
    finally:
        outage.start()

    # Then after the recovery the earlier value reads again, and new results spill normally
    assert before.get_result() == "1:" + "x" * BIG
    after = render.send(3)
    assert after.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "3:" + "x" * BIG


def test_store_outage_fails_the_message_naming_the_store_and_recovers(
    stub_broker, ray_local, start_worker, outage: Outage
) -> None:
    # Given a worker running bodies on Ray with the default on_store_error ("fail")
    if isinstance(outage.store, FilesystemStore):
        Path(outage.store.path).mkdir(parents=True, exist_ok=True)
    stub_broker.add_middleware(Results(backend=StubBackend(), store=outage.store, max_inline_bytes=64))
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(broker=stub_broker, store_results=True, max_retries=0)
    def render(value: int) -> str:
        return f"{value}:" + "x" * BIG

    start_worker(stub_broker, threads=2)
    outage.stop()
    try:
        # When a big result is produced during the outage, the message fails with the store's error
        during = render.send(2)
        with pytest.raises(ResultFailure, match="BlobWriteError") as failure:
            during.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        assert "on_store_error" in str(failure.value)
    finally:
        outage.start()
    # Then after the recovery the same work succeeds
    assert render.send(2).get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "2:" + "x" * BIG


def test_store_outage_at_worker_boot_stops_the_worker_before_it_consumes(stub_broker, outage: Outage, caplog) -> None:
    # Given a store that is down when a worker boots
    if isinstance(outage.store, FilesystemStore):
        Path(outage.store.path).mkdir(parents=True, exist_ok=True)
    stub_broker.add_middleware(Results(backend=StubBackend(), store=outage.store, max_inline_bytes=64))

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def render(value: int) -> str:
        return str(value)

    message = render.send(1)
    outage.stop()
    try:
        worker = dramatiq.Worker(stub_broker, worker_timeout=100)
        # Then the worker refuses to start, with one ERROR naming the store
        with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailableError):
            worker.start()
    finally:
        outage.start()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "probe" in r.getMessage()]
    assert len(errors) == 1 and outage.store.describe() in errors[0]
    # And the message is still queued, untouched
    assert stub_broker.queues[message.queue_name].qsize() == 1
