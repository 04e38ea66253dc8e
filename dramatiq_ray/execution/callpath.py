"""The call path: one wrapper around every actor's function, in one direction.

::

    message -> the wrapper (options looked up once: message -> actor -> middleware default)
            -> runner.run(call)             local | ray_task | ray_job
            -> where the body runs: read piped inputs -> body -> SpillPlan -> value or marker
            -> Results -> SpillingBackend stores the value or the marker's pointer, still inside the call

Whichever of dramatiq-ray's middleware is on the broker (``RayExecutionMiddleware``, ``Results``, or both, in
any order) installs the same wrapper once per actor and marks the message a worker thread is about to run. The
wrapper claims that mark on entry, so a direct call (``add(1, 2)``, from a test or inside another actor) stays a
plain local call. The wrapper asks the broker's ``RayExecutionMiddleware`` for a runner and its Results for a
spill plan; it never changes what Dramatiq does around the call.

The outcome is stored before the wrapper returns, so before any after-hook (Pipelines, Callbacks, Webhooks)
sees the message succeed: when it cannot be stored, the call raises ``ResultBackendError`` and the attempt fails
like any other, so nothing downstream is sent for it and the retry policy runs it again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.results import Results as DramatiqResults

from .._lookup import lookup_option
from ..results.backend import SpillingBackend
from ..results.plan import CODEC_OPTIONS, MAX_INLINE_BYTES_OPTION, SpillPlan, check_threshold
from .body import WRAPPED_ATTR, run_body

if TYPE_CHECKING:
    from .middleware import RayExecutionMiddleware

__all__ = ["Call", "Runner", "begin", "end", "install"]


@dataclass(frozen=True)
class Call:
    """One message's body, ready to run: everything a runner needs, looked up once."""

    actor: dramatiq.Actor[Any, Any]
    message: MessageProxy
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: The function Dramatiq would have called in the worker (for the local runner).
    local_fn: Callable[..., Any]
    plan: SpillPlan | None

    def run_here(self) -> Any:
        """Run the body in this thread, as the local runner does."""
        return run_body(self.local_fn, self.args, self.kwargs, self.message._message, self.plan)


class Runner(Protocol):
    """Runs a message's body somewhere and returns its result (or marker), or raises what the body raised.

    A runner stops its remote work itself when the waiting thread is interrupted (time limit, shutdown).
    """

    def run(self, call: Call) -> Any: ...


class LocalRunner:
    """Runs the body in the worker thread, as Dramatiq does."""

    def run(self, call: Call) -> Any:
        return call.run_here()


LOCAL = LocalRunner()

# The message a worker thread is about to run, set by a middleware's before_process_message and claimed by the
# wrapper of that message's actor.
_pending: ContextVar[tuple[dramatiq.Broker, MessageProxy] | None] = ContextVar("dramatiq_ray_pending", default=None)


def install(actor: dramatiq.Actor[Any, Any]) -> None:
    """Wrap ``actor.fn`` with the call path, unless it already is (by either of our middleware)."""
    if hasattr(actor.fn, WRAPPED_ATTR):
        return
    original = actor.fn

    @functools.wraps(original)
    def run(*args: Any, **kwargs: Any) -> Any:
        pending = _pending.get()
        if pending is None or pending[1].actor_name != actor.actor_name:
            return original(*args, **kwargs)
        _pending.set(None)
        broker, message = pending
        call = Call(actor, message, args, kwargs, original, spill_plan(broker, actor, message))
        outcome = runner_for(broker, actor, message).run(call)
        store_outcome(broker, message, outcome)
        return outcome

    setattr(run, WRAPPED_ATTR, original)
    actor.fn = run


def begin(broker: dramatiq.Broker, message: MessageProxy) -> None:
    """Mark ``message`` as the one this worker thread runs next."""
    _pending.set((broker, message))


def end() -> None:
    """Clear the mark (the message was processed or skipped)."""
    _pending.set(None)


def runner_for(broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any], message: MessageProxy) -> Runner:
    """The runner of the broker's ``RayExecutionMiddleware`` for this message, else the local runner."""
    from .middleware import RayExecutionMiddleware

    execution: RayExecutionMiddleware | None = next(
        (m for m in broker.middleware if isinstance(m, RayExecutionMiddleware)), None
    )
    runner = execution.runner_for(actor, message) if execution is not None else None
    return runner or LOCAL


def store_outcome(broker: dramatiq.Broker, message: MessageProxy, outcome: Any) -> None:
    """Have the broker's ``dramatiq_ray.Results`` store ``outcome`` now, when it stores this message's result.

    Raises:
      ResultBackendError: the outcome could not be stored.
    """
    from ..results.middleware import Results

    results = next((m for m in broker.middleware if isinstance(m, DramatiqResults)), None)
    if isinstance(results, Results):
        results.store_from_call(broker, message, outcome)


def spill_plan(broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any], message: MessageProxy) -> SpillPlan | None:
    """The broker's spill plan for this message: ``None`` without a SpillingBackend; a threshold of ``None`` when
    the result goes nowhere (not stored, not piped, no ``on_success``).

    Raises:
      ConfigurationError: the ``max_inline_bytes`` option is invalid.
    """
    results = next((m for m in broker.middleware if isinstance(m, DramatiqResults)), None)
    if results is None or not isinstance(results.backend, SpillingBackend):
        return None
    backend = results.backend
    forwarded = (
        lookup_option(message.options, actor.options, ("store_results",), results.store_results)
        or message.options.get("pipe_target") is not None
        or lookup_option(message.options, actor.options, ("on_success",), None)
    )
    codec_options = {
        name: lookup_option(message.options, actor.options, (name,), getattr(backend, name)) for name in CODEC_OPTIONS
    }
    if not forwarded:
        return backend.plan(None, **codec_options)
    threshold = lookup_option(message.options, actor.options, (MAX_INLINE_BYTES_OPTION,), backend.max_inline_bytes)
    return backend.plan(check_threshold(threshold, f"Actor {actor.actor_name!r}:"), **codec_options)
