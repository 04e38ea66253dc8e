"""Tracing: OpenTelemetry spans and W3C trace context from ``send``, through the worker, to where the body runs.

::

    send <queue> (PRODUCER)          the sender; its context goes into message.options["trace_ctx"]
      process <queue> (CONSUMER)     the worker thread, current while the message is processed
        run <actor>                  where the body runs: the worker thread, a Ray task or a Ray job

Needs ``pip install "dramatiq-ray[otel]"`` (the OpenTelemetry API only) and a configured SDK in each process
whose spans should be exported. Nothing is patched: the spans come from middleware hooks and the call path.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from . import _otel
from .errors import ConfigurationError

__all__ = ["Tracing"]


class Tracing(Middleware):
    """Trace messages with OpenTelemetry, following the messaging semantic conventions.

    On send, a PRODUCER span ``send <queue>`` is started (a child of the current span; for a retry with no
    current span, of the message's earlier context) and its W3C context is written to the message option
    ``trace_ctx``. In the worker, a CONSUMER span ``process <queue>`` continues that context and is current
    while the message is processed, so anything the worker thread traces (and messages it sends) joins the
    trace. Where the body runs elsewhere (``RayExecutionMiddleware``), the context travels with the call and a
    span ``run <actor>`` covers the body there.

    Add it first (``broker.add_middleware(Tracing(), before=...)`` or first in the list) so its after-hooks run
    last and the messages that Pipelines and callbacks send from them are in the trace too.

    Parameters:
      tracer_provider: the ``TracerProvider`` of this process's spans; ``None``: the global one.

    Raises:
      ConfigurationError: the OpenTelemetry API is not installed.
    """

    def __init__(self, *, tracer_provider: Any = None) -> None:
        if not _otel.available():
            raise ConfigurationError(
                'Tracing needs the OpenTelemetry API: pip install "dramatiq-ray[otel]" (and configure an SDK).'
            )
        self.tracer_provider = tracer_provider
        self._local = threading.local()

    def _open(self) -> dict[str, list[Any]]:
        opened = getattr(self._local, "opened", None)
        if opened is None:
            opened = self._local.opened = {}
        return opened

    def _start(self, key: str, name: str, kind: str, attributes: dict[str, Any], parent: Any) -> Any:
        from opentelemetry import context, trace

        tracer = _otel.tracer(self.tracer_provider)
        span = tracer.start_span(name, context=parent, kind=getattr(trace.SpanKind, kind), attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        self._open().setdefault(key, []).append((span, token))
        return span

    def _end(self, key: str, exception: BaseException | None = None) -> None:
        from opentelemetry import context, trace

        stack = self._open().get(key)
        if not stack:
            return
        span, token = stack.pop()
        if not stack:
            del self._open()[key]
        if exception is not None:
            span.record_exception(exception)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exception).__name__))
        span.end()
        with contextlib.suppress(Exception):  # detached out of order by someone else: the span is ended all the same
            context.detach(token)

    # --- sending -------------------------------------------------------------------------------------------

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        from opentelemetry import propagate, trace

        sending = self._sending()
        for stale in sending.values():
            stale.end()  # an enqueue of this thread that raised: its after-hook never came
        sending.clear()
        parent = None
        if not trace.get_current_span().get_span_context().is_valid:
            parent = _otel.extract(message.options.get(_otel.TRACE_CTX_OPTION))
        attributes = _otel.attributes_for(message, "send")
        if delay:
            attributes["dramatiq.delay_ms"] = int(delay)
        tracer = _otel.tracer(self.tracer_provider)
        span = tracer.start_span(
            f"send {message.queue_name}", context=parent, kind=trace.SpanKind.PRODUCER, attributes=attributes
        )
        sending[message.message_id] = span
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        message.options[_otel.TRACE_CTX_OPTION] = carrier

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        span = self._sending().pop(message.message_id, None)
        if span is not None:
            span.end()

    def _sending(self) -> dict[str, Any]:
        sending = getattr(self._local, "sending", None)
        if sending is None:
            sending = self._local.sending = {}
        return sending

    # --- processing ----------------------------------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        parent = _otel.extract(message.options.get(_otel.TRACE_CTX_OPTION))
        attributes = _otel.attributes_for(message, "process")
        self._start(f"process:{message.message_id}", f"process {message.queue_name}", "CONSUMER", attributes, parent)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        self._end(f"process:{message.message_id}", exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._end(f"process:{message.message_id}")
