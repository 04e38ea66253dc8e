"""The traced example: a broker with ``Tracing`` whose bodies run on Ray, every process writing the spans it ends
to one file (one JSON object a line, the SDK's ``ConsoleSpanExporter`` format), and an actor that traces and
logs its own steps."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware, Tracing

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
#: The file each process appends its spans to.
SPANS_ENV = "TRACING_EXAMPLE_SPANS"

logger = logging.getLogger("examples.tracing.train")


def export_spans_to(path: str, service_name: str, *, make_global: bool = True) -> Any:
    """A tracer provider that writes each span to ``path`` as it ends, made this process's global one unless
    ``make_global`` is false."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    out = open(path, "a", buffering=1)  # noqa: SIM115 (kept open for the process's life, line-buffered)
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name, "process.pid": os.getpid()}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if make_global:
        trace.set_tracer_provider(provider)
    return provider


def setup() -> None:
    """The setup of Ray's worker processes (``DRAMATIQ_RAY_OTEL_SETUP``)."""
    export_spans_to(os.environ[SPANS_ENV], "ray-worker")


def train(epochs: int) -> float:
    """A body that traces each epoch as a span of its own and logs its loss."""
    from opentelemetry import trace

    tracer = trace.get_tracer(__name__)
    loss = 1.0
    for epoch in range(1, epochs + 1):
        with tracer.start_as_current_span(f"epoch {epoch}"):
            time.sleep(0.02)
            loss /= 2
            logger.info("epoch %d: loss %.3f", epoch, loss)
    return loss


def build(spans_path: str, tracer_provider: Any = None) -> tuple[dramatiq.Broker, dramatiq.Actor[Any, Any]]:
    """A broker traced with ``tracer_provider`` (default: the global one), with ``train`` declared on it, bodies on
    Ray, whose worker processes write their spans to ``spans_path``."""
    broker = StubBroker()
    broker.add_middleware(Tracing(tracer_provider=tracer_provider))
    broker.add_middleware(Results(backend=StubBackend()))
    env_vars = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "DRAMATIQ_RAY_OTEL_SETUP": f"{__name__}:setup",
        SPANS_ENV: spans_path,
    }
    broker.add_middleware(RayExecutionMiddleware(runtime_env={"env_vars": env_vars}))
    return broker, dramatiq.actor(train, broker=broker, store_results=True)


def trace_one_message(
    spans_path: str, *, tracer_provider: Any = None, epochs: int = 3, timeout_ms: int = 300_000
) -> float:
    """Send one ``train`` message through a worker of this process and its body through a Ray task, every span
    written to ``spans_path``; return the body's result once every span of this process is written. Ray must be
    initialized (or startable) in this process."""
    broker, actor = build(spans_path, tracer_provider)
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        message = actor.send(epochs)
        result: float = message.get_result(backend=broker.get_results_backend(), block=True, timeout=timeout_ms)
    finally:
        worker.stop()
    return result
