"""Fixtures on real services: Redis, RabbitMQ, a local Ray, S3 (moto server), GCS (emulator), the dramatiq CLI.

Session-scoped fixtures start or find a service once; function-scoped ones give each test its own namespace,
queue or bucket and remove only what that test created.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from tests import _services
from tests._services import REPO_ROOT, DramatiqCLI, GCSEmulator, MotoS3Server

# Fake credentials for moto; set before any boto3 client exists so that Ray workers inherit them too.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ.setdefault(_name, _value)
# Nothing in the suite may wander off to a real cloud or to another Ray cluster by accident.
os.environ.pop("RAY_ADDRESS", None)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- Redis ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with _services.redis_server() as url:
        yield url


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix owned by one test; every key under it is deleted afterwards."""
    import redis

    namespace = unique("dramatiq-ray-test")
    yield namespace
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --- RabbitMQ ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return _services.rabbitmq_url()


# --- Dramatiq brokers and workers ----------------------------------------------------------------------------


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses (RabbitMQ queues outlive the broker object)."""
    return unique("dramatiq-ray-q").replace("-", "_")


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def redis_broker(redis_url: str, redis_namespace: str) -> Iterator[Any]:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url, namespace=redis_namespace)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def rabbitmq_broker(rabbitmq_url: str) -> Iterator[Any]:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=rabbitmq_url)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    queues = set(broker.get_declared_queues())
    broker.close()
    _services.delete_rabbitmq_queues(rabbitmq_url, queues)


@pytest.fixture
def start_worker() -> Iterator[Callable[..., dramatiq.Worker]]:
    """Start an in-process ``dramatiq.Worker`` on a broker; every worker started is stopped afterwards."""
    workers: list[dramatiq.Worker] = []

    def start(broker: dramatiq.Broker, *, threads: int = 4, timeout_ms: int = 100) -> dramatiq.Worker:
        worker = dramatiq.Worker(broker, worker_timeout=timeout_ms, worker_threads=threads)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


# --- Ray -----------------------------------------------------------------------------------------------------

RAY_TEST_RESOURCE = "dramatiq_ray_test_node"


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """One local Ray for the whole test session, started by this process and shut down at the end.

    It advertises a custom resource that only this test node has, so tests can prove resources are passed.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=4,
            resources={RAY_TEST_RESOURCE: 4},
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
        )
    yield ray
    ray.shutdown()


# --- Ray head ------------------------------------------------------------------------------------------------

RAY_HEAD_RESOURCE = "dramatiq_ray_test_head"


@pytest.fixture
def ray_head() -> Iterator[Any]:
    """A Ray head started with ``ray start --head`` on free ports and its own temp dir, for other processes to
    attach to by address. Stopped by pid (never ``ray stop``, which would stop every Ray on the machine); the
    test fails if any of its processes outlives it. It advertises a custom resource only it has."""
    import tempfile

    from dramatiq_ray.execution.local_head import LocalHead

    temp_dir = tempfile.mkdtemp(prefix="drh-")
    head = LocalHead(temp_dir=temp_dir, num_cpus=2, resources={RAY_HEAD_RESOURCE: 2})
    head.start()
    yield head
    head.stop()
    leftovers = head.pids()
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, f"Ray head processes left behind: {sorted(leftovers)}"


# --- PostgreSQL ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database URL (see ``_services.postgres_server``); tests keep their tables apart with a
    table prefix of their own (``tests/sql/conftest.py``)."""
    with _services.postgres_server() as url:
        yield url


# --- S3 and GCS ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    try:
        server = MotoS3Server()
        server.start()
    except ImportError as error:
        _services.unavailable(f"moto's server cannot start: {error}")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: MotoS3Server) -> Iterator[str]:
    client = s3_server.client()
    bucket = unique("dramatiq-ray-test")
    client.create_bucket(Bucket=bucket)
    yield bucket
    with contextlib.suppress(Exception):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSEmulator]:
    try:
        server = GCSEmulator()
        server.start()
    except ImportError as error:
        _services.unavailable(f"the GCS emulator cannot start: {error}")
    yield server
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_server: GCSEmulator) -> Iterator[str]:
    client = gcs_server.client()
    bucket = client.create_bucket(unique("dramatiq-ray-test"))
    yield bucket.name
    with contextlib.suppress(Exception):
        for blob in client.list_blobs(bucket.name):
            blob.delete()
        bucket.delete()


# --- the real dramatiq CLI -----------------------------------------------------------------------------------


@pytest.fixture
def dramatiq_cli(tmp_path: Path) -> Iterator[Callable[..., DramatiqCLI]]:
    """Run ``dramatiq <args>`` in a subprocess; stopped with SIGTERM (then SIGKILL) at the end of the test.

    ``env`` entries are added to this process's environment; the repository root is on ``PYTHONPATH`` so
    that modules under ``tests/apps`` and ``examples`` import.
    """
    runs: list[DramatiqCLI] = []

    def run(*args: str, env: dict[str, str] | None = None) -> DramatiqCLI:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [full_env.get("PYTHONPATH")])])
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        cli = DramatiqCLI(list(args), env=full_env, log_path=tmp_path / f"dramatiq-{len(runs)}.log")
        runs.append(cli)
        return cli

    yield run
    for cli in runs:
        if cli.returncode is None:
            cli.stop(timeout=30)


@pytest.fixture
def python_subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


#: Test modules whose tests run subprocesses, Ray heads or whole applications for tens of seconds each: collected
#: first, so that parallel workers start on them and the short tests fill in around them.
SLOW_FIRST = (
    "test_benchmarks_quick.py",
    "test_conformance.py",
    "test_execution_cli.py",
    "test_examples.py",
    "test_execution_runtime.py",
    "test_demo.py",
    "faults/",
    "test_ray_job_runner.py",
    "test_replicas_nodes.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def slow_rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return next((rank for rank, part in enumerate(SLOW_FIRST) if part in path), len(SLOW_FIRST))

    items.sort(key=slow_rank)  # stable: the order within a module is kept


def pytest_report_header() -> list[str]:
    return [f"dramatiq-ray tests: python {sys.version.split()[0]}, services required: {_services.services_required()}"]
