"""Arguments by reference on the real brokers (Redis, RabbitMQ), S3 (moto's server) and Ray."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.results.backends import RedisBackend, StubBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results, S3Store, current_message, gc_blobs
from dramatiq_ray.payloads.marker import is_argument_shape

MIB = 1024 * 1024
TIMEOUT_MS = 120_000


def arg_blobs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "args").rglob("*.*") if "named" not in p.parts and ".tmp-" not in p.name)


def test_a_64_mib_argument_leaves_a_redis_broker_message_under_1_kib(
    redis_broker, redis_client, redis_namespace, start_worker, tmp_path
) -> None:
    redis_broker.add_middleware(
        Results(
            backend=RedisBackend(client=redis_client, namespace=redis_namespace + "-results"),
            store=FilesystemStore(tmp_path),
            max_inline_arg_bytes=MIB,
        )
    )

    @dramatiq.actor(store_results=True)
    def checksum(data: bytes) -> list[int]:
        return [len(data), data[-1]]

    payload = os.urandom(64 * MIB)
    message = checksum.send(payload)

    # Then the message Redis holds is small
    [stored] = redis_client.hvals(f"{redis_namespace}:{checksum.queue_name}.msgs")
    assert len(stored) < 1024
    # And the body gets the 64 MiB back; the blob goes when the message is done
    worker = start_worker(redis_broker)
    assert message.get_result(block=True, timeout=TIMEOUT_MS) == [len(payload), payload[-1]]
    redis_broker.join(checksum.queue_name)
    worker.join()
    assert arg_blobs(tmp_path) == []


def test_a_group_of_delayed_messages_on_rabbitmq_reads_its_arguments(rabbitmq_broker, start_worker, tmp_path) -> None:
    rabbitmq_broker.add_middleware(
        Results(backend=StubBackend(), store=FilesystemStore(tmp_path), max_inline_arg_bytes=1024)
    )

    @dramatiq.actor(store_results=True)
    def head(data: bytes) -> int:
        return data[0]

    payloads = [bytes([index]) * MIB for index in range(3)]
    messages = [head.message_with_options(args=(payload,), delay=50) for payload in payloads]
    group = dramatiq.group(messages).run()
    assert len(arg_blobs(tmp_path)) == 3
    worker = start_worker(rabbitmq_broker)
    assert sorted(group.get_results(block=True, timeout=TIMEOUT_MS)) == [0, 1, 2]
    rabbitmq_broker.join(head.queue_name)
    worker.join()
    assert arg_blobs(tmp_path) == []


def test_arguments_go_under_the_s3_prefix_args_and_results_gc_leaves_them(
    stub_broker, start_worker, s3_server, s3_bucket
) -> None:
    store = S3Store(s3_bucket, "results", endpoint_url=s3_server.endpoint_url, client=s3_server.client())
    stub_broker.add_middleware(Results(backend=StubBackend(), store=store, max_inline_arg_bytes=1024))
    client = s3_server.client()

    @dramatiq.actor(store_results=True)
    def size(data: bytes) -> int:
        return len(data)

    message = size.send(os.urandom(MIB))
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert any(key.startswith("results/args/") and key.endswith(".bin") for key in keys)
    assert any(key.startswith("results/args/named/refs/") for key in keys)
    # A results gc of the whole store, far in the future, collects only unreferenced argument blobs: none here
    # (the message's reference is young).
    report = gc_blobs(store, older_than=60)
    assert report.deleted == []

    worker = start_worker(stub_broker)
    assert message.get_result(block=True, timeout=TIMEOUT_MS) == MIB
    stub_broker.join(size.queue_name)
    worker.join()
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert not [key for key in keys if key.startswith("results/args/")]


def test_an_actor_on_ray_reads_its_argument_inside_the_ray_task(stub_broker, ray_local, start_worker, tmp_path) -> None:
    stub_broker.add_middleware(
        Results(backend=StubBackend(), store=FilesystemStore(tmp_path), max_inline_arg_bytes=1024)
    )
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(store_results=True)
    def where(data: bytes) -> list[Any]:
        # The message the worker decoded still carries the reference: the bytes were read here, in Ray.
        carried = current_message().args[0]
        return [len(data), is_argument_shape(carried), os.getpid()]

    message = where.send(os.urandom(2 * MIB))
    start_worker(stub_broker)
    size, carried_reference, pid = message.get_result(block=True, timeout=TIMEOUT_MS)
    assert size == 2 * MIB
    assert carried_reference is True
    assert pid != os.getpid()


def test_arguments_go_under_the_gcs_prefix_args_and_are_released(
    stub_broker, start_worker, gcs_server, gcs_bucket
) -> None:
    from dramatiq_ray import GCSStore

    store = GCSStore(gcs_bucket, "results", endpoint_url=gcs_server.endpoint_url)
    stub_broker.add_middleware(Results(backend=StubBackend(), store=store, max_inline_arg_bytes=1024))
    client = gcs_server.client()

    @dramatiq.actor(store_results=True)
    def size(data: bytes) -> int:
        return len(data)

    message = size.send(os.urandom(MIB))
    names = [blob.name for blob in client.list_blobs(gcs_bucket)]
    assert any(name.startswith("results/args/") and name.endswith(".bin") for name in names)
    assert store.child("args").list_named("refs") == [
        name.removeprefix("results/args/named/") for name in names if "/named/refs/" in name
    ]
    worker = start_worker(stub_broker)
    assert message.get_result(block=True, timeout=TIMEOUT_MS) == MIB
    stub_broker.join(size.queue_name)
    worker.join()
    assert not [blob.name for blob in client.list_blobs(gcs_bucket) if blob.name.startswith("results/args/")]
