"""OpenTelemetry, when it is installed: spans and W3C trace context through the API only, imported lazily.

Without ``opentelemetry-api`` (the ``otel`` extra) every helper here is a no-op. With the API but no SDK
configured in a process, the API's own no-op tracer makes them cost next to nothing. Nothing here configures
OpenTelemetry: the application does (a ``TracerProvider`` with an exporter), in the worker process and, for the
spans of bodies on Ray, in Ray's worker processes (``runtime_env={"worker_process_setup_hook": ...}``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "SETUP_ENV",
    "TRACE_CTX_OPTION",
    "attributes_for",
    "available",
    "current_carrier",
    "extract",
    "payload_attributes",
    "setup_once",
    "span",
    "tracer",
]

#: The message option that carries the W3C trace context (``traceparent``, ``tracestate``) from the sender.
TRACE_CTX_OPTION = "trace_ctx"
#: The instrumentation scope of every span.
SCOPE = "dramatiq_ray"
#: The environment variable naming a function (``package.module:function``) that configures OpenTelemetry in a
#: process where bodies run (a Ray worker, a Ray job), called once per process before its first traced body. Set
#: it in the ``runtime_env``'s ``env_vars``: Ray's own ``worker_process_setup_hook`` applies only to the
#: ``runtime_env`` given to ``ray.init``, not to a task's.
SETUP_ENV = "DRAMATIQ_RAY_OTEL_SETUP"
#: ``messaging.system`` of every messaging span.
MESSAGING_SYSTEM = "dramatiq"


logger = logging.getLogger(__name__)

_setup_lock = threading.Lock()
_setup_done: set[str] = set()


def setup_once() -> None:
    """Call the function :data:`SETUP_ENV` names, once per process and name; a failure is logged, not raised
    (a body does not fail because its spans cannot be exported)."""
    name = os.environ.get(SETUP_ENV, "").strip()
    if not name or name in _setup_done:
        return
    with _setup_lock:
        if name in _setup_done:
            return
        _setup_done.add(name)
        module, _, function = name.partition(":") if ":" in name else name.rpartition(".")
        try:
            getattr(importlib.import_module(module), function)()
        except Exception as error:
            logger.warning("The OpenTelemetry setup %s=%s failed: %s: %s", SETUP_ENV, name, type(error).__name__, error)


@functools.cache
def available() -> bool:
    """Whether ``opentelemetry-api`` can be imported (asked once per process)."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def tracer(provider: Any = None) -> Any:
    """The tracer of this package (from ``provider``, else the global one), or ``None`` without the API."""
    if not available():
        return None
    from opentelemetry import trace

    from ._version import __version__

    return trace.get_tracer(SCOPE, __version__, tracer_provider=provider)


def attributes_for(message: Any, operation: str) -> dict[str, Any]:
    """The messaging semantic-convention attributes of ``message`` (a Dramatiq ``Message`` or proxy)."""
    return {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": str(message.queue_name),
        "messaging.message.id": str(message.message_id),
        "dramatiq.actor": str(message.actor_name),
        "dramatiq.retries": int(message.options.get("retries", 0) or 0),
    }


def payload_attributes(store: Any, size: int | None, codec: str | None) -> dict[str, Any]:
    """The attributes of a span that writes or reads a payload: the store's kind, the size and codec."""
    attributes: dict[str, Any] = {"dramatiq_ray.store": type(store).__name__}
    if size is not None:
        attributes["dramatiq_ray.payload.bytes"] = int(size)
    if codec:
        attributes["dramatiq_ray.payload.codec"] = str(codec)
    return attributes


def current_carrier() -> dict[str, str] | None:
    """The W3C trace context of the current span, as a carrier dict; ``None`` without the API or a span."""
    if not available():
        return None
    from opentelemetry import propagate, trace

    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def extract(carrier: Any) -> Any:
    """An OpenTelemetry context from a carrier dict (``None`` or not a dict: an empty context)."""
    from opentelemetry import propagate

    return propagate.extract(dict(carrier) if isinstance(carrier, Mapping) else {})


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: str = "INTERNAL",
    attributes: dict[str, Any] | None = None,
    parent: Any = None,
    provider: Any = None,
) -> Iterator[Any]:
    """A span made current for the block (``None`` is yielded without the API); ``parent`` is a carrier dict to
    continue, else the current context. An exception leaving the block is recorded and sets status ERROR."""
    tracer_ = tracer(provider)
    if tracer_ is None:
        yield None
        return
    from opentelemetry import trace

    context = extract(parent) if parent else None
    with tracer_.start_as_current_span(
        name, context=context, kind=getattr(trace.SpanKind, kind), attributes=attributes
    ) as current:
        yield current
