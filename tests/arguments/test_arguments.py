"""Big inputs by reference (``max_inline_arg_bytes``): offloaded at send, read where the body runs, released when
the message is done for good. Stub broker and a real filesystem store; other brokers and stores in sibling files."""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import ResultFailure, ResultMissing
from dramatiq.results.backends import StubBackend

from dramatiq_ray import (
    BlobWriteError,
    ConfigurationError,
    DigestStore,
    FilesystemStore,
    MissingArgumentError,
    Results,
    Retries,
    current_message,
    gc_blobs,
)
from dramatiq_ray.payloads.arguments import held_pointers
from dramatiq_ray.payloads.plan import SpillPlan
from tests._services import wait_until

KIB = 1024
BIG = os.urandom(256 * KIB)


def arg_blobs(root: Path) -> list[Path]:
    """The argument blobs under a filesystem store's root (not the references)."""
    return sorted(p for p in (root / "args").rglob("*.*") if "named" not in p.parts and ".tmp-" not in p.name)


def references(root: Path) -> list[Path]:
    return sorted(p for p in (root / "args" / "named" / "refs").rglob("*") if p.is_file())


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def broker(stub_broker: StubBroker, store_root: Path) -> Iterator[StubBroker]:
    for middleware in list(stub_broker.middleware):
        if type(middleware).__name__ == "Retries":
            stub_broker.middleware.remove(middleware)
    stub_broker.add_middleware(Retries(max_retries=1, min_backoff=10, max_backoff=20))
    stub_broker.add_middleware(
        Results(backend=StubBackend(), store=FilesystemStore(store_root), max_inline_arg_bytes=64 * KIB)
    )
    yield stub_broker


def drain(broker: StubBroker, queue: str, message: Any) -> Any:
    """Run a worker on ``queue`` only until it is empty and acked; return ``message``'s result."""
    worker = dramatiq.Worker(broker, queues={queue}, worker_timeout=100)
    worker.start()
    try:
        result = message.get_result(block=True, timeout=10_000)
        broker.join(queue)
        worker.join()
    finally:
        worker.stop()
    return result


def queued_bodies(broker: StubBroker, queue: str = "default") -> list[bytes]:
    return list(broker.queues[queue].queue)


def test_big_bytes_argument_is_sent_by_reference_and_arrives_as_bytes(broker, start_worker, store_root) -> None:
    @dramatiq.actor(store_results=True)
    def measure(data: bytes, *, label: str) -> list[Any]:
        return [type(data).__name__, len(data), data[:4].hex(), label]

    # When a 256 KiB bytes argument is sent (Dramatiq's JSON encoder alone refuses bytes)
    message = measure.send(BIG, label="x")

    # Then the broker holds a small message and the bytes are in the store's args child
    [body] = queued_bodies(broker)
    assert len(body) < KIB
    assert len(arg_blobs(store_root)) == 1
    # And the body receives the bytes
    start_worker(broker)
    assert message.get_result(block=True, timeout=10_000) == ["bytes", len(BIG), BIG[:4].hex(), "x"]


def test_argument_blob_is_deleted_when_the_message_succeeds(broker, start_worker, store_root) -> None:
    @dramatiq.actor(store_results=True)
    def size(data: bytes) -> int:
        return len(data)

    message = size.send(BIG)
    assert len(arg_blobs(store_root)) == 1
    worker = start_worker(broker)
    assert message.get_result(block=True, timeout=10_000) == len(BIG)
    broker.join(size.queue_name)
    worker.join()
    assert arg_blobs(store_root) == []
    assert references(store_root) == []


def test_small_arguments_stay_in_the_message(broker, store_root) -> None:
    @dramatiq.actor
    def echo(text: str, data: bytes) -> None: ...

    echo.send("hello", b"\x00\x01")
    [body] = queued_bodies(broker)
    assert b"hello" in body
    assert arg_blobs(store_root) == []


def test_small_bytes_argument_arrives_as_bytes(broker, start_worker) -> None:
    @dramatiq.actor(store_results=True)
    def kind(data: bytes) -> str:
        return f"{type(data).__name__}:{data.hex()}"

    message = kind.send(b"\x00\xff")
    start_worker(broker)
    assert message.get_result(block=True, timeout=10_000) == "bytes:00ff"


def test_same_value_sent_twice_is_stored_once_and_kept_until_the_last_message_is_done(broker, store_root) -> None:
    @dramatiq.actor(queue_name="first", store_results=True)
    def first(data: bytes) -> int:
        return len(data)

    @dramatiq.actor(queue_name="second", store_results=True)
    def second(data: bytes) -> int:
        return len(data)

    one, two = first.send(BIG), second.send(BIG)
    # One blob, two references
    assert len(arg_blobs(store_root)) == 1
    assert len(references(store_root)) == 2

    # When only the first message is done, the blob stays for the second
    assert drain(broker, "first", one) == len(BIG)
    assert len(arg_blobs(store_root)) == 1
    assert len(references(store_root)) == 1

    # When the second is done too, the blob is gone
    assert drain(broker, "second", two) == len(BIG)
    assert arg_blobs(store_root) == []


def test_a_retry_keeps_the_blob_and_the_last_attempt_releases_it(broker, start_worker, store_root) -> None:
    seen: list[int] = []

    @dramatiq.actor(store_results=True)
    def flaky(data: bytes) -> int:
        seen.append(len(arg_blobs(store_root)))
        if len(seen) == 1:
            raise RuntimeError("first attempt fails")
        return len(data)

    message = flaky.send(BIG)
    worker = start_worker(broker)
    assert message.get_result(block=True, timeout=10_000) == len(BIG)
    broker.join(flaky.queue_name)
    worker.join()
    # The blob was there for both attempts, and is gone after the successful one
    assert seen == [1, 1]
    assert arg_blobs(store_root) == []


def test_a_requeue_from_another_thread_keeps_the_blob_for_the_next_run(broker, start_worker, store_root) -> None:
    # Given a body that puts its own message back on the queue from a thread of its own (as a watchdog does)
    seen: list[int] = []

    @dramatiq.actor(store_results=True, max_retries=0)
    def again(data: bytes) -> int:
        seen.append(len(arg_blobs(store_root)))
        if len(seen) == 1:
            running = current_message()
            assert running is not None
            requeue = threading.Thread(target=broker.enqueue, args=(running,), kwargs={"delay": 10})
            requeue.start()
            requeue.join()
            return 0
        return len(data)

    message = again.send(BIG)
    start_worker(broker)

    def final() -> str | None:
        try:
            return "read" if message.get_result() == len(BIG) else None
        except ResultMissing:
            return None
        except ResultFailure as failure:
            return f"failed: {failure}"

    # Then the run it requeued still reads its argument, and the blob goes once that run is done
    assert wait_until(final, timeout=30, what="the requeued run") == "read"
    wait_until(lambda: not arg_blobs(store_root), timeout=30, what="the argument blob to be released")
    assert seen == [1, 1]


def test_a_message_failed_for_good_releases_its_blob(broker, start_worker, store_root) -> None:
    @dramatiq.actor(store_results=True, max_retries=0)
    def broken(data: bytes) -> None:
        raise ValueError("always")

    message = broken.send(BIG)
    worker = start_worker(broker)
    with pytest.raises(ResultFailure):
        message.get_result(block=True, timeout=10_000)
    broker.join(broken.queue_name, fail_fast=False)
    worker.join()
    assert arg_blobs(store_root) == []


def test_a_missing_argument_blob_fails_the_message_at_once_naming_the_argument(
    broker, start_worker, store_root
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(store_results=True, max_retries=5)
    def needs(text: str, *, image: bytes) -> int:
        attempts.append(1)
        return len(image)

    message = needs.send("small", image=BIG)
    [blob] = arg_blobs(store_root)
    blob.unlink()
    start_worker(broker)
    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=10_000)
    assert failure.value.orig_exc_type == MissingArgumentError.__name__
    assert "kwargs['image']" in failure.value.orig_exc_msg
    # Never ran, and was not retried
    assert attempts == []
    assert broker.dead_letters and len(broker.dead_letters) == 1


def test_a_pipeline_sends_every_big_argument_by_reference(broker, start_worker, store_root) -> None:
    @dramatiq.actor
    def head(data: bytes) -> int:
        return len(data)

    @dramatiq.actor(store_results=True)
    def tail(data: bytes, previous: int) -> list[int]:
        return [len(data), previous]

    other = BIG[::-1]
    pipe = dramatiq.pipeline([head.message(BIG), tail.message(other)])
    pipe.run()
    [body] = queued_bodies(broker)
    assert len(body) < 2 * KIB
    assert len(arg_blobs(store_root)) == 2
    start_worker(broker)
    assert pipe.get_result(block=True, timeout=10_000) == [len(other), len(BIG)]


def test_a_message_option_sends_arguments_by_reference_without_a_middleware_default(
    stub_broker, start_worker, store_root
) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend(), store=FilesystemStore(store_root)))

    @dramatiq.actor(store_results=True)
    def size(data: bytes) -> int:
        return len(data)

    message = size.send_with_options(args=(BIG,), max_inline_arg_bytes=1024)
    [body] = queued_bodies(stub_broker)
    assert len(body) < KIB
    start_worker(stub_broker)
    assert message.get_result(block=True, timeout=10_000) == len(BIG)


def test_the_message_carries_one_reference_per_big_argument(broker, store_root) -> None:
    @dramatiq.actor
    def two(a: bytes, b: bytes, *, c: bytes) -> None: ...

    message = two.send(BIG, b"small", c=BIG[::-1])
    decoded = dramatiq.Message.decode(queued_bodies(broker)[0])
    assert decoded.message_id == message.message_id
    assert len(held_pointers(decoded.args, decoded.kwargs)) == 2


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "1024", 1.5, True])
def test_results_refuses_an_invalid_max_inline_arg_bytes(tmp_path, value) -> None:
    with pytest.raises(ConfigurationError, match="max_inline_arg_bytes"):
        Results(backend=StubBackend(), store=FilesystemStore(tmp_path), max_inline_arg_bytes=value)


def test_results_refuses_max_inline_arg_bytes_without_a_store_that_keeps_blobs() -> None:
    with pytest.raises(ConfigurationError, match="keeps no blobs"):
        Results(backend=StubBackend(), store=DigestStore(), max_inline_arg_bytes=1024)


#: The advice of the one check that a store keeps blobs (payloads.options.require_blob_store).
KEEPS_NO_BLOBS = r"DigestStore.* keeps no blobs: pass store=FilesystemStore\(\.\.\.\), S3Store\(\.\.\.\) or GCSStore"


@pytest.mark.parametrize(
    "refuse",
    [
        lambda: Results(backend=StubBackend(), store=DigestStore(), max_inline_arg_bytes=1024),
        lambda: DigestStore().child("args"),
        lambda: SpillPlan(DigestStore(), dramatiq.JSONEncoder(), None, max_inline_arg_bytes=0).offload(
            {"message_id": "m-1", "args": [BIG], "kwargs": {}}
        ),
    ],
    ids=["results", "child-store", "plan-offload"],
)
def test_a_store_that_keeps_no_blobs_is_refused_with_the_one_message(refuse) -> None:
    with pytest.raises(ConfigurationError, match=KEEPS_NO_BLOBS):
        refuse()


def test_an_invalid_actor_option_fails_the_declaration(broker) -> None:
    with pytest.raises(ConfigurationError, match="max_inline_arg_bytes"):

        @dramatiq.actor(max_inline_arg_bytes=-5)
        def bad(data: bytes) -> None: ...


def test_an_unwritable_store_fails_the_send_and_enqueues_nothing(stub_broker, tmp_path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("a file where the store's directory should be")
    stub_broker.add_middleware(
        Results(backend=StubBackend(), store=FilesystemStore(blocked), max_inline_arg_bytes=1024)
    )

    @dramatiq.actor
    def size(data: bytes) -> None: ...

    with pytest.raises(BlobWriteError):
        size.send(BIG)
    assert queued_bodies(stub_broker) == []


# --- gc --------------------------------------------------------------------------------------------------------


def test_gc_keeps_referenced_argument_blobs_and_collects_orphans(broker, store_root) -> None:
    @dramatiq.actor
    def size(data: bytes) -> None: ...

    size.send(BIG)  # queued: its reference holds the blob
    store = FilesystemStore(store_root)
    kept = gc_blobs(store, older_than=3600)
    assert kept.deleted == [] and len(arg_blobs(store_root)) == 1

    # Far in the future, its reference is an orphan (the message waited longer than older_than): both go
    report = gc_blobs(store, older_than=3600, now=__import__("time").time() + 7200)
    assert len(report.deleted) == 2
    assert arg_blobs(store_root) == [] and references(store_root) == []


# --- settings --------------------------------------------------------------------------------------------------


def test_setup_reads_max_arg_size_bytes_into_results(stub_broker, tmp_path) -> None:
    from dramatiq_ray import setup

    installed = setup(
        stub_broker,
        settings={
            "MAX_ARG_SIZE_BYTES": 4096,
            "RESULT_STORAGE_BACKEND": "filesystem",
            "RESULT_STORAGE_FILESYSTEM_PATH": str(tmp_path),
        },
        result_backend=StubBackend(),
    )
    assert installed.results.max_inline_arg_bytes == 4096


def test_max_arg_size_bytes_with_the_digest_store_is_refused_naming_both_settings() -> None:
    from dramatiq_ray import load_settings

    with pytest.raises(ConfigurationError) as error:
        load_settings({"MAX_ARG_SIZE_BYTES": 4096}, environ={})
    assert "MAX_ARG_SIZE_BYTES" in str(error.value) and "RESULT_STORAGE_BACKEND" in str(error.value)


def test_arguments_are_compressed_and_encrypted_like_results(stub_broker, start_worker, tmp_path) -> None:
    from dramatiq_ray import EncryptionKeys

    stub_broker.add_middleware(
        Results(
            backend=StubBackend(),
            store=FilesystemStore(tmp_path),
            max_inline_arg_bytes=1024,
            compression="gzip",
            encryption=EncryptionKeys({"k1": bytes(range(32))}, current="k1"),
        )
    )

    @dramatiq.actor(store_results=True)
    def count(text: bytes) -> int:
        return text.count(b"secret")

    plaintext = b"secret words " * 100_000
    message = count.send(plaintext)
    decoded = dramatiq.Message.decode(queued_bodies(stub_broker)[0])
    [pointer] = held_pointers(decoded.args, decoded.kwargs)
    assert "&z=gzip&k=k1" in pointer
    [blob] = arg_blobs(tmp_path)
    assert blob.stat().st_size < len(plaintext) // 10
    assert b"secret" not in blob.read_bytes()
    start_worker(stub_broker)
    assert message.get_result(block=True, timeout=10_000) == 100_000


def test_missing_argument_error_pickles_with_its_pointer_and_argument() -> None:
    # Given the error a body raises when an argument's blob is gone
    error = MissingArgumentError("gone", pointer="resultfs://sha256/" + "ab" * 32, argument="kwargs['image']")
    # When it crosses a process boundary
    copy = pickle.loads(pickle.dumps(error))
    # Then it arrives whole
    assert (type(copy), str(copy), copy.pointer, copy.argument) == (
        MissingArgumentError,
        "gone",
        error.pointer,
        "kwargs['image']",
    )


# --- one plan for arguments and results ----------------------------------------------------------------------


def test_plan_stores_an_argument_as_it_stores_the_same_result(tmp_path) -> None:
    """Arguments and results go through one SpillPlan: the same value is serialized, compressed and stored alike
    whichever way it travels."""
    from dramatiq_ray.payloads.pointers import parse_pointer

    plan = SpillPlan(
        FilesystemStore(tmp_path / "store"),
        dramatiq.JSONEncoder(),
        max_inline_bytes=KIB,
        compression="gzip",
        max_inline_arg_bytes=KIB,
    )
    value = bytes(64 * KIB)

    argument = plan.offload({"message_id": "m-1", "args": [value], "kwargs": {}})["args"][0]
    result = plan.apply(value)

    by_reference, spilled = parse_pointer(argument.pointer), parse_pointer(result.pointer)
    assert (by_reference.codec, by_reference.compression) == ("raw", "gzip")
    assert (by_reference.digest, by_reference.size) == (spilled.digest, spilled.size)
    assert plan.read_inputs((argument,), {})[0] == (value,)
