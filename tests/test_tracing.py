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
