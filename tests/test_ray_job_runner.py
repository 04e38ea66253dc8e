"""The durable ``ray_job`` runner, against a real ``ray start --head`` with its dashboard (the Ray Jobs API).

The actors' functions live in ``tests/apps/ray_jobs.py``; every job imports that module. Each job's input and
outcome live in a FilesystemStore shared by the test and the job (same machine).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import ResultFailure, Results
from dramatiq.results.backends import StubBackend

from dramatiq_ray import (
    ConfigurationError,
    DigestStore,
    EncryptionKeys,
    FilesystemStore,
    RayExecutionMiddleware,
    SpillingBackend,
    gc_blobs,
    get_pointer,
)
from dramatiq_ray.execution.runners.job_entry import decode_plan, encode_plan
from dramatiq_ray.execution.runners.ray_job import job_address_for, submission_id
from dramatiq_ray.payloads.plan import SpillPlan
from tests._services import free_port, wait_until
from tests.apps import ray_jobs

pytestmark = pytest.mark.timeout(300)

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
RESULT_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def jobs_head() -> Iterator[Any]:
    """A Ray head with its dashboard on free ports, stopped by pid; ready once the Jobs API answers."""
    from ray.job_submission import JobSubmissionClient

    from dramatiq_ray.execution.connection import prepare_auth
    from dramatiq_ray.execution.local_head import LocalHead

    temp_dir = tempfile.mkdtemp(prefix="drj-")
    head = LocalHead(temp_dir=temp_dir, num_cpus=2, dashboard=True)
    head.start()
    prepare_auth(head.address)
    clients: list[Any] = []

    def connected() -> bool:
        try:
            clients.append(JobSubmissionClient(head.dashboard_url))
        except Exception:
            return False
        return True

    try:
        wait_until(connected, timeout=120, what="the Ray Jobs API of the test head")
        head.jobs = clients[-1]
        yield head
    finally:
        head.stop()
        leftovers = head.pids()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftovers, f"Ray head processes left behind: {sorted(leftovers)}"


def make_broker(
    head: Any,
    store_dir: Path,
    *,
    store: Any = None,
    stuck_timeout: float = 300,
    job_address: str | None = None,
    results: type[Any] = Results,
    env_vars: dict[str, str] | None = None,
    first: Any = None,
) -> StubBroker:
    """A stub broker with ``results`` (Dramatiq's own by default) over a SpillingBackend, and the ray_job runner;
    ``first``: a middleware added before them."""
    broker = StubBroker()
    broker.emit_after("process_boot")
    if first is not None:
        broker.add_middleware(first)
    backend = SpillingBackend(StubBackend(), store=store or FilesystemStore(store_dir))
    broker.add_middleware(results(backend=backend, store_results=True))
    broker.add_middleware(
        RayExecutionMiddleware(
            runner="ray_job",
            address=head.address,
            job_address=job_address or head.dashboard_url,
            job_python=sys.executable,
            runtime_env={"env_vars": {"PYTHONPATH": REPO_ROOT, **(env_vars or {})}},
            wait_slice=0.2,
            stuck_timeout=stuck_timeout,
        )
    )
    dramatiq.set_broker(broker)
    return broker


def declare(broker: StubBroker, fn: Any, **options: Any) -> dramatiq.Actor[Any, Any]:
    return dramatiq.actor(fn, broker=broker, max_retries=0, **options)


def job_status(head: Any, message: dramatiq.Message[Any]) -> str:
    return str(head.jobs.get_job_status(submission_id(message)).value)


def test_ray_job_runner_returns_the_result_through_get_result(
    jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    broker = make_broker(jobs_head, tmp_path / "store")
    add = declare(broker, ray_jobs.add)
    start_worker(broker, threads=1)

    message = add.send(2, 3)

    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 5
    assert job_status(jobs_head, message) == "SUCCEEDED"


def test_ray_job_runner_deletes_the_jobs_spec_once_collected_and_gc_collects_its_outcome(
    jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    broker = make_broker(jobs_head, tmp_path / "store")
    add = declare(broker, ray_jobs.add)
    start_worker(broker, threads=1)

    message = add.send(2, 3)
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 5

    job_dir = f"jobs/{submission_id(message)}"
    store = broker.get_results_backend().store
    assert store.get_named(f"{job_dir}/spec.json") is None
    # The outcome stays for a concurrent delivery that adopted the job, until gc collects it by age
    assert store.get_named(f"{job_dir}/outcome.json") is not None
    gc_blobs(store, older_than=60, now=time.time() + 3600)
    assert store.get_named(f"{job_dir}/outcome.json") is None


def test_ray_job_runner_spills_a_large_result_inside_the_job(jobs_head: Any, tmp_path: Path, start_worker: Any) -> None:
    broker = make_broker(jobs_head, tmp_path / "store")
    repeat = declare(broker, ray_jobs.repeat)
    start_worker(broker, threads=1)

    message = repeat.send("x", 2 * 1024 * 1024)

    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "x" * (2 * 1024 * 1024)
    assert get_pointer(message) is not None


def test_ray_job_runner_failure_comes_back_with_its_original_type(
    jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    broker = make_broker(jobs_head, tmp_path / "store")
    fail = declare(broker, ray_jobs.fail)
    start_worker(broker, threads=1)

    message = fail.send("bad input")

    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "ValueError"
    assert failure.value.orig_exc_msg == "bad input"


def test_ray_job_runner_redelivery_adopts_the_running_job(
    jobs_head: Any, tmp_path: Path, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a message whose job is running (its body waits for a release file)
    caplog.set_level(logging.INFO, logger="dramatiq_ray.execution.runners.ray_job")
    broker = make_broker(jobs_head, tmp_path / "store")
    actor = declare(broker, ray_jobs.count_then_wait)
    counter, release = tmp_path / "counter", tmp_path / "release"
    start_worker(broker, threads=2)
    message = actor.send(str(counter), str(release), "once")
    wait_until(counter.exists, timeout=120, what="the job's body to start")

    # When the same message (same id, same attempt) is delivered again, as after its worker died
    broker.enqueue(message)
    wait_until(lambda: "Adopting Ray job" in caplog.text, timeout=60, what="the redelivery to adopt the job")
    release.touch()
    broker.join(actor.queue_name, timeout=RESULT_TIMEOUT_MS)

    # Then the body ran once and both deliveries got its result
    assert counter.read_text() == "ran\n"
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "once"
    assert caplog.text.count("runs as Ray job") == 1


def test_ray_job_runner_time_limit_stops_the_job(jobs_head: Any, tmp_path: Path, start_worker: Any) -> None:
    broker = make_broker(jobs_head, tmp_path / "store")
    actor = declare(broker, ray_jobs.count_then_wait, time_limit=3_000)
    counter = tmp_path / "counter"
    start_worker(broker, threads=1)

    message = actor.send(str(counter), str(tmp_path / "never"), "unused")

    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "TimeLimitExceeded"
    wait_until(lambda: job_status(jobs_head, message) == "STOPPED", timeout=60, what="the job to stop")


def test_ray_job_runner_stops_a_stuck_job_and_fails_it_retryably(
    jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    # Given a body that prints nothing and never finishes, and a 3 s stuck timeout
    broker = make_broker(jobs_head, tmp_path / "store", stuck_timeout=3)
    actor = declare(broker, ray_jobs.count_then_wait)
    start_worker(broker, threads=1)

    message = actor.send(str(tmp_path / "counter"), str(tmp_path / "never"), "unused")

    # Then it fails with a Ray system error (which the retry policy retries) and the job is stopped
    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "RayJobStuckError"
    wait_until(lambda: job_status(jobs_head, message) == "STOPPED", timeout=60, what="the stuck job to stop")


def test_ray_job_runner_worker_with_a_digest_store_does_not_start(jobs_head: Any, tmp_path: Path) -> None:
    broker = make_broker(jobs_head, tmp_path / "store", store=DigestStore())
    add = declare(broker, ray_jobs.add)
    message = add.send(1, 1)

    with pytest.raises(ConfigurationError, match=r"DigestStore.* keeps no blobs: pass store=FilesystemStore"):
        dramatiq.Worker(broker, worker_timeout=100).start()
    assert broker.queues[message.queue_name].qsize() == 1  # nothing was consumed


def test_ray_job_runner_worker_without_a_jobs_api_address_does_not_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    broker = StubBroker()
    broker.add_middleware(Results(backend=SpillingBackend(StubBackend(), store=FilesystemStore(tmp_path))))
    broker.add_middleware(RayExecutionMiddleware(runner="ray_job"))

    with pytest.raises(ConfigurationError, match="job_address"):
        dramatiq.Worker(broker, worker_timeout=100).start()


def test_ray_job_runner_worker_with_an_unreachable_jobs_api_does_not_start(tmp_path: Path, caplog) -> None:
    broker = StubBroker()
    broker.add_middleware(Results(backend=SpillingBackend(StubBackend(), store=FilesystemStore(tmp_path))))
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    broker.add_middleware(RayExecutionMiddleware(runner="ray_job", job_address=address))

    with caplog.at_level(logging.ERROR), pytest.raises(ConfigurationError, match="cannot reach"):
        dramatiq.Worker(broker, worker_timeout=100).start()
    assert [r for r in caplog.records if r.levelno == logging.ERROR and address in r.getMessage()]


@pytest.mark.parametrize(
    ("job_address", "job_python", "expected"),
    [
        ("http://127.0.0.1:8265", None, sys.executable),
        ("http://localhost:8265", None, sys.executable),
        ("http://head.example:8265", None, "python"),
        ("http://head.example:8265", "/srv/app/venv/bin/python", "/srv/app/venv/bin/python"),
    ],
)
def test_ray_job_entrypoint_python_defaults_to_this_interpreter_for_a_local_head(
    job_address: str, job_python: str | None, expected: str
) -> None:
    middleware = RayExecutionMiddleware(runner="ray_job", job_address=job_address, job_python=job_python)
    assert middleware._runner.entrypoint_python() == expected  # type: ignore[attr-defined]


# --- without a Ray head --------------------------------------------------------------------------------------


def test_submission_id_is_stable_for_a_redelivery_and_new_for_a_retry() -> None:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={}, message_id="m1"
    )
    retried = message.copy(options={"retries": 1})

    assert submission_id(message) == submission_id(message.copy()) == "dramatiq-m1-0"
    assert submission_id(retried) == "dramatiq-m1-1"


class _Encoder(dramatiq.JSONEncoder):
    """A custom encoder, as a job receives one."""


def _same(crossed: Any, sent: Any) -> bool:
    return crossed == sent or (type(crossed) is type(sent) and vars(crossed) == vars(sent))


def test_ray_job_carries_the_spill_plan_with_every_field(tmp_path: Path) -> None:
    """The job applies the plan every runner applies: each field crosses as it was set (a new field too)."""
    sent = SpillPlan(
        FilesystemStore(tmp_path / "store"),
        _Encoder(),
        max_inline_bytes=123,
        on_store_error="digest",
        allow_pickle=True,
        compression="gzip",
        compression_level=5,
        max_inline_arg_bytes=7,
    )
    unset = [f.name for f in dataclasses.fields(SpillPlan) if f.default is not dataclasses.MISSING]
    assert [name for name in unset if getattr(sent, name) == getattr(SpillPlan, name)] == ["encryption"]

    crossed = decode_plan(encode_plan(sent))

    assert [
        f.name for f in dataclasses.fields(SpillPlan) if not _same(getattr(crossed, f.name), getattr(sent, f.name))
    ] == []


def test_ray_job_refuses_a_plan_that_encrypts(tmp_path: Path) -> None:
    keys = EncryptionKeys({"k1": bytes(range(32))}, current="k1")
    plan = SpillPlan(FilesystemStore(tmp_path), dramatiq.JSONEncoder(), None, encryption=keys)

    with pytest.raises(ConfigurationError, match="encryption keys must not go"):
        encode_plan(plan)


def test_job_address_is_derived_from_a_ray_address() -> None:
    assert job_address_for("10.0.0.5:6379") == "http://10.0.0.5:8265"
    assert job_address_for("ray://head:10001") == "http://head:8265"
    assert job_address_for("auto") is None


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"job_address": "head:8265"}, "job_address"),
        ({"job_python": ""}, "job_python"),
        ({"stuck_timeout": 0}, "stuck_timeout"),
        ({"runner": "ray_jobs"}, "runner"),
    ],
)
def test_ray_job_runner_options_are_validated(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        RayExecutionMiddleware(**{"runner": "ray_job", **options})


@pytest.mark.parametrize("kind", ["filesystem", "s3", "gcs"])
def test_store_named_objects_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store: Any = FilesystemStore(tmp_path) if kind == "filesystem" else request.getfixturevalue(f"{kind}_bucket")
    if kind != "filesystem":
        from dramatiq_ray import GCSStore, S3Store

        bucket = store
        server = request.getfixturevalue(f"{kind}_server")
        if kind == "s3":
            store = S3Store(bucket, endpoint_url=server.endpoint_url, region="us-east-1")
        else:
            store = GCSStore(bucket, endpoint_url=server.endpoint_url)

    assert store.get_named("jobs/x/outcome.json") is None
    store.put_named("jobs/x/outcome.json", b"first")
    store.put_named("jobs/x/outcome.json", b"second")

    assert store.get_named("jobs/x/outcome.json") == b"second"
    # Garbage collection sees them (it collects them by age, as on S3 and GCS), and delete_named removes them
    assert any(info.name.endswith("jobs/x/outcome.json") for info in store.list_blobs())
    store.delete_named("jobs/x/outcome.json")
    store.delete_named("jobs/x/outcome.json")  # deleting what is not there is not an error
    assert store.get_named("jobs/x/outcome.json") is None


def test_store_named_objects_refuse_bad_names_and_digest_stores(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Invalid blob name"):
        FilesystemStore(tmp_path).put_named("../escape", b"x")
    with pytest.raises(ConfigurationError, match="cannot hold named objects"):
        DigestStore().put_named("jobs/x/spec.json", b"x")


@pytest.mark.cli
def test_ray_job_runner_killed_worker_is_replaced_and_the_job_adopted(
    jobs_head: Any,
    tmp_path: Path,
    dramatiq_cli: Any,
    rabbitmq_url: str,
    redis_url: str,
    redis_namespace: str,
    queue_name: str,
) -> None:
    import os
    import signal

    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.results.backends import RedisBackend

    from tests.faults.conftest import cli_worker_pids

    env = {
        "JOBS_APP_RABBITMQ_URL": rabbitmq_url,
        "JOBS_APP_REDIS_URL": redis_url,
        "JOBS_APP_REDIS_NAMESPACE": redis_namespace,
        "JOBS_APP_STORE": str(tmp_path / "store"),
        "JOBS_APP_RAY_ADDRESS": jobs_head.address,
        "JOBS_APP_JOBS_ADDRESS": jobs_head.dashboard_url,
        "JOBS_APP_PYTHONPATH": REPO_ROOT,
        "JOBS_APP_QUEUE": queue_name,
    }
    counter, release = tmp_path / "counter", tmp_path / "release"
    producer = RabbitmqBroker(url=rabbitmq_url)
    producer.declare_queue(queue_name)
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue_name,
        actor_name="count_then_wait",
        args=(str(counter), str(release), "survived"),
        kwargs={},
        options={},
    )

    # Given a CLI worker whose message runs as a Ray job (the body waits for a release file)
    first = dramatiq_cli("tests.apps.ray_jobs_cli", "--processes", "1", "--threads", "1", env=env)
    first.wait_ready(processes=1)
    [worker_pid] = cli_worker_pids(first)
    producer.enqueue(message)
    wait_until(counter.exists, timeout=120, what="the job's body to start")

    # When that worker process is killed with SIGKILL mid-job and a new worker takes the redelivered message
    os.kill(worker_pid, signal.SIGKILL)
    first.proc.wait(timeout=120)
    second = dramatiq_cli("tests.apps.ray_jobs_cli", "--processes", "1", "--threads", "1", env=env)
    second.wait_ready(processes=1)
    wait_until(lambda: "Adopting Ray job" in second.output(), timeout=120, what="the new worker to adopt the job")
    release.touch()

    # Then the body ran once, in one job, and its result is stored
    results = SpillingBackend(RedisBackend(url=redis_url, namespace=redis_namespace), store=FilesystemStore("/"))
    assert results.get_result(message, block=True, timeout=RESULT_TIMEOUT_MS) == "survived"
    assert counter.read_text() == "ran\n"
    jobs = [
        job
        for job in jobs_head.jobs.list_jobs()
        if (job.metadata or {}).get("dramatiq_message_id") == message.message_id
    ]
    assert [job.submission_id for job in jobs] == [submission_id(message)]
    assert second.stop() == 0, second.output()
    producer.close()


@pytest.mark.cli
def test_ray_job_runner_runs_on_the_embedded_default_head_of_the_cli(
    tmp_path: Path, dramatiq_cli: Any, rabbitmq_url: str, redis_url: str, redis_namespace: str, queue_name: str
) -> None:
    import os

    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.results.backends import RedisBackend

    # Given a CLI worker with the ray_job runner and no Ray or Jobs API address anywhere
    env = {
        "JOBS_APP_RABBITMQ_URL": rabbitmq_url,
        "JOBS_APP_REDIS_URL": redis_url,
        "JOBS_APP_REDIS_NAMESPACE": redis_namespace,
        "JOBS_APP_STORE": str(tmp_path / "store"),
        "JOBS_APP_QUEUE": queue_name,
    }
    assert "RAY_ADDRESS" not in os.environ
    cli = dramatiq_cli("tests.apps.ray_jobs_cli", "--processes", "1", "--threads", "1", env=env)
    cli.wait_ready(processes=1)
    producer = RabbitmqBroker(url=rabbitmq_url)
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue_name, actor_name="add", args=(20, 22), kwargs={}, options={}
    )
    try:
        producer.enqueue(message)
        # Then the CLI's shared head runs its dashboard, and the message runs as a Ray job there
        backend = SpillingBackend(
            RedisBackend(url=redis_url, namespace=redis_namespace), store=FilesystemStore(tmp_path / "store")
        )
        assert message.get_result(backend=backend, block=True, timeout=RESULT_TIMEOUT_MS) == 42
        assert "runs as Ray job" in cli.output()
    finally:
        producer.close()
    assert cli.stop() == 0, cli.output()


def test_ray_job_runner_returns_bytes_spilled_raw_inside_the_job(
    jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    broker = make_broker(jobs_head, tmp_path / "store")
    raw = declare(broker, ray_jobs.raw_bytes)
    start_worker(broker, threads=1)

    message = raw.send(3 * 1024 * 1024)

    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == b"\x07" * (3 * 1024 * 1024)
    assert "codec=raw" in str(get_pointer(message))


# --- a Jobs API that fails or hangs --------------------------------------------------------------------------


@pytest.fixture
def pickle_encoder() -> Iterator[None]:
    previous = dramatiq.get_encoder()
    dramatiq.set_encoder(dramatiq.PickleEncoder())
    yield
    dramatiq.set_encoder(previous)


def test_ray_job_runner_works_with_a_custom_encoder(
    pickle_encoder: None, jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    # Given a worker whose Dramatiq encoder (and so the job's spec and outcome) is not JSON
    broker = make_broker(jobs_head, tmp_path / "store")
    add = declare(broker, ray_jobs.add)
    start_worker(broker, threads=1)

    message = add.send(2, 3)

    # Then the job reads its spec and writes its outcome with that encoder
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 5


def test_ray_job_runner_result_that_goes_nowhere_need_not_be_json(
    jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    # Given an actor that returns a set, and whose result is not stored, piped or passed on
    broker = make_broker(jobs_head, tmp_path / "store")
    a_set = declare(broker, ray_jobs.a_set, store_results=False)
    start_worker(broker, threads=1)

    a_set.send()

    # Then its message succeeds
    broker.join(a_set.queue_name, fail_fast=True, timeout=RESULT_TIMEOUT_MS)


class FlakyJobsAPI:
    """An HTTP proxy in front of a real Jobs API that answers the first ``failures`` reads of a job's status with
    503, as a dashboard that is restarting does."""

    def __init__(self, upstream: str, failures: int) -> None:
        import http.server
        import threading

        self.upstream = upstream.removeprefix("http://")
        self.failures = failures
        self.failed = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None: ...

            def forward(self) -> None:
                import http.client

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status_read = self.command == "GET" and self.path.startswith("/api/jobs/dramatiq-")
                if status_read and "/logs" not in self.path and proxy.failed < proxy.failures:
                    proxy.failed += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ray_job_runner_survives_a_failed_status_read_without_a_second_job(
    jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    # Given a Jobs API whose first two status reads fail
    proxy = FlakyJobsAPI(jobs_head.dashboard_url, failures=2)
    try:
        broker = make_broker(jobs_head, tmp_path / "store", job_address=proxy.address)
        add = declare(broker, ray_jobs.add)
        start_worker(broker, threads=1)

        message = add.send(20, 22)

        # Then the message still gets its job's result, from that one job
        assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 42
        assert proxy.failed == 2
        jobs = [
            job
            for job in jobs_head.jobs.list_jobs()
            if (job.metadata or {}).get("dramatiq_message_id") == message.message_id
        ]
        assert [(job.submission_id, str(job.status.value)) for job in jobs] == [(submission_id(message), "SUCCEEDED")]
    finally:
        proxy.close()


@pytest.fixture
def hung_jobs_api() -> Iterator[str]:
    """The address of a "Jobs API" that accepts connections and never answers (a hung dashboard)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()  # resets the connections still waiting, so nothing stays blocked on it


def make_hung_broker(store_dir: Path, job_address: str) -> tuple[StubBroker, RayExecutionMiddleware]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.add_middleware(Results(backend=SpillingBackend(StubBackend(), store=FilesystemStore(store_dir))))
    middleware = RayExecutionMiddleware(runner="ray_job", job_address=job_address, wait_slice=0.2)
    broker.add_middleware(middleware)
    return broker, middleware


def test_ray_job_runner_hung_jobs_api_does_not_hold_the_worker_past_its_time_limit(
    tmp_path: Path, start_worker: Any, hung_jobs_api: str
) -> None:
    broker, _ = make_hung_broker(tmp_path / "store", hung_jobs_api)
    add = declare(broker, ray_jobs.add, time_limit=2_000, store_results=True)
    start_worker(broker, threads=1)

    message = add.send(1, 2)

    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "TimeLimitExceeded"


def test_ray_job_runner_hung_jobs_api_call_fails_retryably(
    tmp_path: Path, start_worker: Any, hung_jobs_api: str
) -> None:
    broker, middleware = make_hung_broker(tmp_path / "store", hung_jobs_api)
    middleware._runner.api_timeout = 1  # type: ignore[attr-defined]
    add = declare(broker, ray_jobs.add, store_results=True)
    start_worker(broker, threads=1)

    message = add.send(1, 2)

    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "RayUnavailableError"


def test_ray_job_runner_cancel_stops_the_running_job(
    jobs_head: Any, tmp_path: Path, redis_url: str, redis_namespace: str, start_worker: Any
) -> None:
    from dramatiq.results.backends import RedisBackend

    from dramatiq_ray import CancelOutcome, cancel
    from dramatiq_ray import Results as SpillingResults

    broker = StubBroker()
    broker.emit_after("process_boot")
    backend = SpillingBackend(
        RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results"), store=FilesystemStore(tmp_path / "store")
    )
    broker.add_middleware(SpillingResults(backend=backend, store_results=True))
    broker.add_middleware(
        RayExecutionMiddleware(
            runner="ray_job",
            address=jobs_head.address,
            job_address=jobs_head.dashboard_url,
            job_python=sys.executable,
            runtime_env={"env_vars": {"PYTHONPATH": REPO_ROOT}},
            wait_slice=0.2,
        )
    )
    dramatiq.set_broker(broker)
    actor = dramatiq.actor(ray_jobs.count_then_wait, broker=broker, max_retries=3)
    counter = tmp_path / "counter"
    start_worker(broker, threads=1)
    message = actor.send(str(counter), str(tmp_path / "never"), "unused")
    wait_until(counter.exists, timeout=120, what="the job's body to start")

    assert cancel(message, broker=broker) is CancelOutcome.REQUESTED

    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "MessageCancelledError"
    wait_until(lambda: job_status(jobs_head, message) == "STOPPED", timeout=60, what="the job to stop")
    assert counter.read_text() == "ran\n"  # not retried


def make_logs_broker(
    head: Any, store_dir: Path, *, env_vars: dict[str, str] | None = None, first: Any = None
) -> StubBroker:
    """A broker with dramatiq-ray's Results (which plans where the body runs) and the ray_job runner."""
    from dramatiq_ray import Results as SpillingResults

    return make_broker(head, store_dir, results=SpillingResults, env_vars=env_vars, first=first)


def job_body_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "tests.apps.job_body"]


def test_ray_job_runner_body_log_records_reach_the_worker_with_actor_and_message_id(
    jobs_head: Any, tmp_path: Path, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    broker = make_logs_broker(jobs_head, tmp_path / "store")
    add = declare(broker, ray_jobs.log_and_add)
    start_worker(broker, threads=1)

    message = add.send(2, 3)
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 5

    (record,) = job_body_lines(caplog)
    assert record.getMessage().startswith(f"[log_and_add {message.message_id} on Ray pid ")
    assert record.getMessage().endswith("] adding 2 and 3")
    assert record.message_id == message.message_id  # type: ignore[attr-defined]


def test_ray_job_runner_body_that_raises_still_brings_its_log_records_back(
    jobs_head: Any, tmp_path: Path, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    broker = make_logs_broker(jobs_head, tmp_path / "store")
    fail = declare(broker, ray_jobs.log_then_fail)
    start_worker(broker, threads=1)

    message = fail.send("bad input")
    with pytest.raises(ResultFailure):
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    (record,) = job_body_lines(caplog)
    assert record.getMessage().endswith("] logged before failing: bad input")
    assert record.message_id == message.message_id  # type: ignore[attr-defined]


def test_ray_job_runner_body_runs_in_a_span_of_the_workers_trace(
    jobs_head: Any, tmp_path: Path, start_worker: Any
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from dramatiq_ray import Tracing
    from tests._otlp import OTLPReceiver

    receiver = OTLPReceiver()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint)))
    try:
        broker = make_logs_broker(
            jobs_head,
            tmp_path / "store",
            first=Tracing(tracer_provider=provider),
            env_vars={
                "DRAMATIQ_RAY_OTEL_SETUP": "tests.apps.otel_setup:setup",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
            },
        )
        add = declare(broker, ray_jobs.add)
        start_worker(broker, threads=1)

        message = add.send(2, 3)
        assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 5

        def both() -> list[dict[str, Any]] | None:
            spans = receiver.spans()
            return spans if {"process default", "run add"} <= {span["name"] for span in spans} else None

        spans = wait_until(both, timeout=60, what="the worker's and the job's spans")
        (process,) = [span for span in spans if span["name"] == "process default"]
        (run,) = [span for span in spans if span["name"] == "run add"]
        assert run["trace_id"] == process["trace_id"]
        assert run["parent_span_id"] == process["span_id"]
        assert run["resource"]["service.name"] == "ray-worker"
    finally:
        provider.shutdown()
        receiver.close()
