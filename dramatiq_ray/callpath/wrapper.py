"""The call path: one wrapper around every actor's function, in one direction, and its owner per broker.

::

    message -> owner.begin -> the wrapper -> runner.run(call)        local | ray_task | ray_job | replicas
            -> where the body runs: read piped inputs -> body -> SpillPlan -> value or marker
            -> the plan source (Results) stores the value or the marker's pointer, still inside the call
            -> owner.end

Whichever of dramatiq-ray's middleware is on the broker (``RayExecutionMiddleware``, ``Results``, or both, in
any order) installs the same wrapper once per actor. When a worker boots, each of them joins the broker's
:class:`CallPath` (its owner) in its role: the one that runs bodies elsewhere is the *runner source*, the one that
keeps results is the *plan source*. The first to join begins and ends each message, once: it marks the message
a worker thread is about to run, and the wrapper claims that mark on entry, so a direct call (``add(1, 2)``,
from a test or inside another actor) stays a plain local call. Nothing here imports the middleware: they reach
the owner, the owner never looks for them.

The outcome is stored before the wrapper returns, so before any after-hook (Pipelines, Callbacks, Webhooks) sees
the message succeed: when it cannot be stored, the call raises ``ResultBackendError`` and the attempt fails like
any other, so nothing downstream is sent for it and the retry policy runs it again.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.results import Results as DramatiqResults

from .. import metrics
from ..errors import MessageCancelledError
from ..payloads.plan import MAX_INLINE_BYTES_OPTION, SpillPlan, check_threshold
from .body import WRAPPED_ATTR, run_body
from .lookup import codec_options_for, lookup_option
from .steering import Steering

__all__ = [
    "Call",
    "CallPath",
    "LocalRunner",
    "PlanSource",
    "Runner",
    "RunnerSource",
    "install",
    "join",
    "spill_plan_for",
]


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
    #: Where the message's cancel mark and progress live (``None``: nowhere). Runners ask
    #: :meth:`cancel_requested` between their wait slices and stop their remote work when it says so.
    steering: Steering | None = None

    def run_here(self) -> Any:
        """Run the body in this thread, as the local runner does."""
        return run_body(self.local_fn, self.args, self.kwargs, self.message._message, self.plan, self.steering)

    def cancel_requested(self) -> bool:
        """Whether this message was cancelled (``dramatiq_ray.cancel``); reads the mark at most once a second."""
        return self.steering is not None and self.steering.cancel_requested()

    def cancelled(self, where: str) -> MessageCancelledError:
        """The error a runner raises after it stopped the remote work of a cancelled message."""
        assert self.steering is not None
        return self.steering.cancelled_error(self.actor.actor_name, where)


class Runner(Protocol):
    """Runs a message's body somewhere and returns its result (or marker), or raises what the body raised.

    A runner stops its remote work itself when the waiting thread is interrupted (time limit, shutdown).
    """

    def run(self, call: Call) -> Any: ...


class RunnerSource(Protocol):
    """Chooses where a message's body runs (``RayExecutionMiddleware``); ``None``: in the worker thread."""

    def runner_for(self, actor: dramatiq.Actor[Any, Any], message: MessageProxy) -> Runner | None: ...


class PlanSource(Protocol):
    """Says what happens to a message's result where the body runs (``Results``); ``None``: nothing."""

    def spill_plan(self, actor: dramatiq.Actor[Any, Any], message: MessageProxy) -> SpillPlan | None: ...

    def store_from_call(self, broker: dramatiq.Broker, message: MessageProxy, outcome: Any) -> None: ...

    def steering_for(self, message: MessageProxy) -> Steering | None:
        """Where the message's cancel mark and progress live, or ``None`` (the result backend keeps none)."""
        ...


class LocalRunner:
    """Runs the body in the worker thread, as Dramatiq does."""

    def run(self, call: Call) -> Any:
        return call.run_here()


LOCAL = LocalRunner()


class CallPath:
    """The owner of one broker's call path: who chooses the runner, who plans the result, who begins and ends.

    Reached with :func:`join`, once per middleware, when the worker boots.
    """

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = weakref.ref(broker)
        self.runners: RunnerSource | None = None
        self.plans: PlanSource | None = None
        self._driver: object | None = None

    def drives(self, member: object) -> bool:
        """Whether ``member`` is the middleware that begins and ends each message (the first that joined)."""
        return self._driver is member

    def begin(self, message: MessageProxy) -> None:
        """Mark ``message`` as the one this worker thread runs next."""
        _pending.set((self, message))

    def end(self) -> None:
        """Clear the mark (the message was processed or skipped)."""
        _pending.set(None)

    def call_for(
        self,
        actor: dramatiq.Actor[Any, Any],
        message: MessageProxy,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Runner, Call]:
        plan = self.plans.spill_plan(actor, message) if self.plans is not None else None
        runner = self.runners.runner_for(actor, message) if self.runners is not None else None
        steering = self.plans.steering_for(message) if self.plans is not None else None
        return runner or LOCAL, Call(actor, message, args, kwargs, original, plan, steering)

    def store(self, message: MessageProxy, outcome: Any) -> None:
        """Have the plan source store ``outcome`` now, before the after-hooks run.

        Raises:
          ResultBackendError: the outcome could not be stored.
        """
        broker = self._broker()
        if self.plans is not None and broker is not None:
            self.plans.store_from_call(broker, message, outcome)


def spill_plan_for(
    backend: Any, store_results: bool, actor: dramatiq.Actor[Any, Any], message: MessageProxy
) -> SpillPlan:
    """The spill plan ``backend`` (a SpillingBackend) makes for ``message``: a threshold of ``None`` when the result
    goes nowhere (not stored, not piped, no ``on_success``), else ``max_inline_bytes`` looked up message -> actor ->
    backend; the codec options likewise. Serves ``dramatiq_ray.Results`` and Dramatiq's own Results alike.

    Raises:
      ConfigurationError: the ``max_inline_bytes`` option is invalid.
    """
    forwarded = (
        lookup_option(message.options, actor.options, ("store_results",), store_results)
        or message.options.get("pipe_target") is not None
        or lookup_option(message.options, actor.options, ("on_success",), None)
    )
    codec_options = codec_options_for(message.options, actor.options, backend)
    if not forwarded:
        return backend.plan(None, **codec_options)  # type: ignore[no-any-return]
    threshold = lookup_option(message.options, actor.options, (MAX_INLINE_BYTES_OPTION,), backend.max_inline_bytes)
    return backend.plan(check_threshold(threshold, f"Actor {actor.actor_name!r}:"), **codec_options)  # type: ignore[no-any-return]


class StockResultsPlans:
    """The plan source of a broker whose Results is Dramatiq's own with a SpillingBackend (the documented way to
    spill without dramatiq_ray.Results): the spill plan comes from that backend; the stock middleware stores the
    outcome itself, after the call."""

    def __init__(self, results: DramatiqResults) -> None:
        self.results = results

    def spill_plan(self, actor: dramatiq.Actor[Any, Any], message: MessageProxy) -> SpillPlan | None:
        return spill_plan_for(self.results.backend, self.results.store_results, actor, message)

    def store_from_call(self, broker: dramatiq.Broker, message: MessageProxy, outcome: Any) -> None:
        return None

    def steering_for(self, message: MessageProxy) -> Steering | None:
        return None  # cancel and progress need dramatiq_ray.Results


def _stock_results_plans(broker: dramatiq.Broker) -> StockResultsPlans | None:
    """Dramatiq's own Results on ``broker`` when its backend spills (it has a ``plan``), looked for once."""
    for middleware in broker.middleware:
        if type(middleware) is DramatiqResults and callable(getattr(middleware.backend, "plan", None)):
            return StockResultsPlans(middleware)
    return None


_owners: weakref.WeakKeyDictionary[dramatiq.Broker, CallPath] = weakref.WeakKeyDictionary()
_owners_lock = threading.Lock()


def join(
    broker: dramatiq.Broker, member: object, *, runners: RunnerSource | None = None, plans: PlanSource | None = None
) -> CallPath:
    """The call path of ``broker``, with ``member`` joined in its role(s); the first member to join drives it."""
    with _owners_lock:
        owner = _owners.get(broker)
        if owner is None:
            owner = _owners[broker] = CallPath(broker)
            owner.plans = _stock_results_plans(broker)  # replaced when dramatiq_ray.Results joins
        if owner._driver is None:
            owner._driver = member
        if runners is not None:
            owner.runners = runners
        if plans is not None:
            owner.plans = plans
        return owner


# The message a worker thread is about to run, set by the owner's begin and claimed by that actor's wrapper.
_pending: ContextVar[tuple[CallPath, MessageProxy] | None] = ContextVar("dramatiq_ray_pending", default=None)


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
        owner, message = pending
        runner, call = owner.call_for(actor, message, original, args, kwargs)
        try:
            outcome = runner.run(call)
        except MessageCancelledError:
            # A SkipMessage that fails the message: Dramatiq skips it (no retry, no pipeline step) and nacks it,
            # and the result middleware stores the cancellation as its failure.
            message.fail()
            metrics.record_cancellation(actor.actor_name, "stopped")
            raise
        owner.store(message, outcome)
        return outcome

    setattr(run, WRAPPED_ATTR, original)
    actor.fn = run
