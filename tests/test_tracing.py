"""Tracing: one W3C trace from send, through the worker, into the Ray task that runs the body, exported over
OTLP/HTTP by the real OpenTelemetry SDK exporter to a receiver on this machine (``tests/_otlp.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware, Tracing
from tests._otlp import OTLPReceiver
from tests._services import REPO_ROOT, wait_until

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

RESULT_TIMEOUT_MS = 120_000


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def provider(receiver: OTLPReceiver) -> Iterator[Any]:
    """This process's spans (producer and worker), exported as each ends."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "dramatiq-worker", "process.pid": os.getpid()}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint)))
    yield provider
    provider.shutdown()


def spans_named(receiver: OTLPReceiver, *names: str) -> list[dict[str, Any]] | None:
    """All spans received, once every one of ``names`` is among them."""
    spans = receiver.spans()
    return spans if set(names) <= {span["name"] for span in spans} else None


def by_name(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [span for span in spans if span["name"] == name]
    return found


def test_tracing_one_trace_spans_producer_worker_and_ray_worker(
    stub_broker, ray_local, start_worker, receiver, provider
) -> None:
    # Given a broker traced with Tracing, bodies on Ray whose worker processes export to the same receiver
    stub_broker.add_middleware(Tracing(tracer_provider=provider))
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(
        RayExecutionMiddleware(
            runtime_env={
                "env_vars": {
                    "PYTHONPATH": str(REPO_ROOT),
                    "DRAMATIQ_RAY_OTEL_SETUP": "tests.apps.otel_setup:setup",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
                },
            }
        )
    )

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def traced(value: int) -> int:
        return value * 2

    # When a message is sent and processed
    start_worker(stub_broker)
    message = traced.send(21)
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 42
    spans = wait_until(lambda: spans_named(receiver, "process default", "run traced"), timeout=60, what="spans")

    # Then one trace holds send (PRODUCER) -> process (CONSUMER) -> run (in the Ray worker process)
    send, process, run = by_name(spans, "send default"), by_name(spans, "process default"), by_name(spans, "run traced")
    assert send["trace_id"] == process["trace_id"] == run["trace_id"]
    assert (send["kind"], process["kind"], run["kind"]) == ("PRODUCER", "CONSUMER", "INTERNAL")
    assert process["parent_span_id"] == send["span_id"]
    assert run["parent_span_id"] == process["span_id"]
    assert run["resource"]["service.name"] == "ray-worker"
    assert run["resource"]["process.pid"] != os.getpid()
    assert run["attributes"]["ray.task_id"]
    # with the messaging semantic conventions
    for span, operation in ((send, "send"), (process, "process")):
        assert span["attributes"]["messaging.system"] == "dramatiq"
        assert span["attributes"]["messaging.message.id"] == message.message_id
        assert span["attributes"]["messaging.destination.name"] == "default"
        assert span["attributes"]["messaging.operation.type"] == operation
    assert message.options["trace_ctx"]["traceparent"].split("-")[1] == send["trace_id"]


def test_tracing_failed_body_marks_the_process_span_as_an_error(stub_broker, start_worker, receiver, provider) -> None:
    stub_broker.add_middleware(Tracing(tracer_provider=provider))

    @dramatiq.actor(broker=stub_broker, max_retries=0)
    def fails() -> None:
        raise ValueError("no")

    start_worker(stub_broker)
    fails.send()
    stub_broker.join(fails.queue_name, fail_fast=False)
    spans = wait_until(lambda: [s for s in receiver.spans() if s["name"] == "process default"], timeout=30, what="span")

    assert spans[0]["status"] == "ERROR"
    assert spans[0]["events"] == ["exception"]


def test_tracing_send_with_a_current_span_is_its_child(stub_broker, receiver, provider) -> None:
    stub_broker.add_middleware(Tracing(tracer_provider=provider))

    @dramatiq.actor(broker=stub_broker)
    def noop() -> None: ...

    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        noop.send()
    spans = wait_until(lambda: [s for s in receiver.spans() if s["name"] == "send default"], timeout=30, what="span")

    assert spans[0]["parent_span_id"] == format(request.get_span_context().span_id, "016x")


@pytest.fixture(scope="module")
def global_spans() -> Any:
    """The global TracerProvider (set once per process: OpenTelemetry refuses to replace it), recording in memory;
    the spans of the payload and delivery steps go to it."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another global TracerProvider is set in this process")
    return exporter


def test_tracing_spill_write_is_a_span_of_the_process_span(stub_broker, start_worker, tmp_path, global_spans) -> None:
    from dramatiq_ray import FilesystemStore
    from dramatiq_ray import Results as SpillingResults

    global_spans.clear()
    stub_broker.add_middleware(Tracing())
    stub_broker.add_middleware(
        SpillingResults(backend=StubBackend(), store=FilesystemStore(tmp_path), max_inline_bytes=1024)
    )

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def big() -> str:
        return "x" * 10_000

    start_worker(stub_broker)
    assert big.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "x" * 10_000

    spans = {span.name: span for span in global_spans.get_finished_spans()}
    write, read = spans["spill write"], spans["spill read"]
    assert write.parent is not None and write.parent.span_id == spans["process default"].context.span_id
    assert write.attributes["dramatiq_ray.store"] == "FilesystemStore"
    assert write.attributes["dramatiq_ray.payload.bytes"] > 10_000
    assert read.attributes["dramatiq_ray.payload.bytes"] == write.attributes["dramatiq_ray.payload.bytes"]


def test_tracing_webhook_post_is_a_client_span_whose_context_reaches_the_receiver(global_spans) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry import trace

    from dramatiq_ray.delivery.http import HttpSender

    received: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None: ...

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(self.headers.get("traceparent"))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    global_spans.clear()
    try:
        sender = HttpSender(connect_timeout=5, read_timeout=5, allow_http=True)
        with trace.get_tracer("test").start_as_current_span("process"):
            answer = sender.post(f"http://127.0.0.1:{server.server_port}/hook", b"{}", {})
    finally:
        server.shutdown()
        server.server_close()

    assert answer.kind == "delivered"
    (post,) = [span for span in global_spans.get_finished_spans() if span.name == "POST"]
    assert post.kind == trace.SpanKind.CLIENT
    assert post.attributes["http.response.status_code"] == 204
    assert post.attributes["server.address"] == "127.0.0.1"
    ((_version, trace_id, span_id, _flags),) = [header.split("-") for header in received if header]
    assert (trace_id, span_id) == (f"{post.context.trace_id:032x}", f"{post.context.span_id:016x}")


def test_tracing_argument_offload_is_a_span_in_the_senders_trace(stub_broker, tmp_path, global_spans) -> None:
    from opentelemetry import trace

    from dramatiq_ray import FilesystemStore
    from dramatiq_ray import Results as SpillingResults

    global_spans.clear()
    stub_broker.add_middleware(Tracing())
    stub_broker.add_middleware(
        SpillingResults(backend=StubBackend(), store=FilesystemStore(tmp_path), max_inline_arg_bytes=1024)
    )

    @dramatiq.actor(broker=stub_broker)
    def takes(text: str) -> None: ...

    with trace.get_tracer("test").start_as_current_span("request") as request:
        takes.send("y" * 10_000)

    spans = {span.name: span for span in global_spans.get_finished_spans()}
    offload = spans["argument offload"]
    assert offload.context.trace_id == request.get_span_context().trace_id
    assert offload.attributes["dramatiq_ray.payload.bytes"] > 10_000
    assert spans["send default"].context.trace_id == request.get_span_context().trace_id


@pytest.mark.cli
def test_tracing_cli_one_trace_spans_producer_process_worker_process_and_ray_worker_process(
    dramatiq_cli, redis_url, redis_namespace, queue_name, ray_head, receiver, provider
) -> None:
    from dramatiq.brokers.redis import RedisBroker

    # Given a dramatiq CLI worker and its Ray workers exporting to the receiver, and a traced producer
    cli = dramatiq_cli(
        "tests.apps.ray_traced_cli",
        "--processes",
        "1",
        "--threads",
        "1",
        env={
            "DRAMATIQ_RAY_TEST_BROKER_URL": redis_url,
            "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace,
            "DRAMATIQ_RAY_TEST_QUEUE": queue_name,
            "RAY_ADDRESS": ray_head.address,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
        },
    )
    cli.wait_ready(processes=1)
    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    producer.add_middleware(Tracing(tracer_provider=provider))
    try:
        # When the producer sends a message
        message = producer.enqueue(
            dramatiq.Message(queue_name=queue_name, actor_name="traced", args=(21,), kwargs={}, options={})
        )
        send_name, process_name = f"send {queue_name}", f"process {queue_name}"
        spans = wait_until(
            lambda: spans_named(receiver, send_name, process_name, "run traced"), timeout=240, what="spans"
        )
    finally:
        producer.close()

    # Then one trace runs through three processes: producer -> dramatiq worker -> Ray worker
    send, process, run = by_name(spans, send_name), by_name(spans, process_name), by_name(spans, "run traced")
    assert send["trace_id"] == process["trace_id"] == run["trace_id"]
    assert process["parent_span_id"] == send["span_id"]
    assert run["parent_span_id"] == process["span_id"]
    services = [span["resource"]["service.name"] for span in (send, process, run)]
    assert services == ["dramatiq-worker", "dramatiq-worker", "ray-worker"]
    pids = {span["resource"]["process.pid"] for span in (send, process, run)}
    assert len(pids) == 3
    assert process["attributes"]["messaging.message.id"] == message.message_id
    assert cli.stop() == 0, cli.output()


def test_tracing_first_on_the_broker_keeps_a_pipeline_in_one_trace(stub_broker, start_worker, global_spans) -> None:
    from dramatiq.middleware import AgeLimit

    global_spans.clear()
    stub_broker.add_middleware(Tracing(), before=AgeLimit)

    @dramatiq.actor(broker=stub_broker)
    def first() -> int:
        return 1

    @dramatiq.actor(broker=stub_broker)
    def second(value: int) -> None: ...

    start_worker(stub_broker)
    dramatiq.pipeline([first.message(), second.message()], broker=stub_broker).run()
    stub_broker.join(first.queue_name)

    def processed_twice() -> list[Any] | None:
        spans = [span for span in global_spans.get_finished_spans() if span.name == "process default"]
        return spans if len(spans) == 2 else None

    wait_until(processed_twice, timeout=30, what="both steps processed")
    spans = global_spans.get_finished_spans()
    assert len({span.context.trace_id for span in spans}) == 1
    sends = [span for span in spans if span.name == "send default"]
    assert len(sends) == 2
    processes = {span.context.span_id for span in spans if span.name == "process default"}
    assert any(send.parent is not None and send.parent.span_id in processes for send in sends)


def test_tracing_rendered_tree_of_real_exported_spans_nests_send_process_run_and_the_bodys_spans(
    ray_local, tmp_path
) -> None:
    # Given the tracing example's broker, this process and its Ray workers writing their spans to one file
    from examples.tracing.render import load_spans, render
    from examples.tracing.tasks import export_spans_to, trace_one_message

    spans_path = str(tmp_path / "spans.jsonl")
    provider = export_spans_to(spans_path, "dramatiq-worker", make_global=False)

    # When one message is traced through a Ray task, and its exported spans are rendered
    try:
        assert trace_one_message(spans_path, tracer_provider=provider, epochs=2) == 0.25
        spans = wait_until(
            lambda: (
                (found := load_spans(spans_path))
                and {"process default", "epoch 2"} <= {s.name for s in found}
                and found
            ),
            timeout=60,
            what="the spans of both processes",
        )
    finally:
        provider.shutdown()
    lines = render(spans).splitlines()

    # Then the tree nests send -> process -> run -> the body's spans, each with its kind, duration and process
    assert lines[0].split() == ["span", "kind", "duration", "process"]
    rows = [_row(line) for line in lines[1:]]
    assert [name for name, _ in rows] == [
        "send default",
        "└─ process default",
        "   └─ run train",
        "      ├─ epoch 1",
        "      └─ epoch 2",
    ]
    kinds_and_processes = [(columns[0], columns[3]) for _, columns in rows]
    assert kinds_and_processes == [
        ("PRODUCER", "dramatiq-worker"),
        ("CONSUMER", "dramatiq-worker"),
        ("INTERNAL", "ray-worker"),
        ("INTERNAL", "ray-worker"),
        ("INTERNAL", "ray-worker"),
    ]
    for _, (_, duration, unit, _) in rows:
        assert float(duration) >= 0 and unit == "ms"


def _row(line: str) -> tuple[str, list[str]]:
    """A rendered line as (the tree and name, [kind, duration, unit, process])."""
    columns = line.split()[-4:]
    return line[: line.index(f" {columns[0]} ")].rstrip(), columns
