"""Where an actor's body runs, wherever that is (the worker thread, a Ray task, a Ray job): find the actor's
function, read piped inputs, run it, apply the spill plan, and carry its exception back intact (in the form
:mod:`.crossing` owns).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq

from .. import _otel
from ..errors import ConfigurationError
from ..payloads.plan import SpillPlan
from . import context, crossing, logs
from .steering import Steering, _steered

__all__ = ["WRAPPED_ATTR", "Target", "actor_function", "run_body", "target_for", "underlying_function"]

logger = logging.getLogger(__name__)

#: The attribute under which the call path's wrapper keeps the function it wraps.
WRAPPED_ATTR = "__dramatiq_ray_wrapped__"


# --- finding an actor's function -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How another process finds an actor's function: by importing ``module`` and looking up ``qualname``, or,
    when that cannot work (``__main__``, a function defined inside another), the function itself pickled by
    value."""

    actor_name: str
    module: str | None = None
    qualname: str | None = None
    fn: Callable[..., Any] | None = None

    @property
    def by_value(self) -> bool:
        return self.fn is not None

    def resolve(self) -> Callable[..., Any]:
        """The function this target names. Raises ``ImportError`` or ``AttributeError`` with a hint."""
        if self.fn is not None:
            return self.fn
        assert self.module is not None and self.qualname is not None
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        fn = actor_function(obj)
        if fn is None and callable(obj) and not isinstance(obj, type):
            fn = obj  # the plain function an actor was declared from
        if fn is None:
            raise AttributeError(
                f"{self.module}.{self.qualname} is not a Dramatiq actor where the body runs, so actor "
                f"{self.actor_name!r} cannot run there. Make sure Ray runs the same code as the Dramatiq workers "
                "(same image, or runtime_env working_dir/py_modules)."
            )
        return fn


def underlying_function(actor_fn: Callable[..., Any]) -> Callable[..., Any]:
    """The user's own function behind ``actor.fn``: without our wrapper, and the coroutine function itself
    rather than Dramatiq's synchronous wrapper of it (which needs the worker's event loop thread)."""
    fn = actor_fn
    while hasattr(fn, WRAPPED_ATTR):
        fn = getattr(fn, WRAPPED_ATTR)
    wrapped = getattr(fn, "__wrapped__", None)
    if not inspect.iscoroutinefunction(fn) and inspect.iscoroutinefunction(wrapped):
        assert wrapped is not None
        fn = wrapped
    return fn


def actor_function(obj: object) -> Callable[..., Any] | None:
    """The function an actor object (``Actor`` or class-based ``GenericActor`` instance) runs, else ``None``."""
    actor = obj if isinstance(obj, dramatiq.Actor) else getattr(obj, "__actor__", None)
    return underlying_function(actor.fn) if isinstance(actor, dramatiq.Actor) else None


def target_for(actor: dramatiq.Actor[Any, Any], *, by_value: bool = True) -> Target:
    """Import the actor's module where the body runs when that finds this very actor; else ship the function by
    value (or, with ``by_value=False``, refuse: a Ray job can only import).

    Raises:
      ConfigurationError: ``by_value`` is false and the actor cannot be imported by module path.
    """
    fn = underlying_function(actor.fn)
    owner = fn if callable(fn) and hasattr(fn, "__code__") else type(fn)
    module = getattr(owner, "__module__", None)
    qualname = getattr(owner, "__qualname__", None)
    if module and qualname and module != "__main__" and "<locals>" not in qualname and module in sys.modules:
        obj: Any = sys.modules[module]
        with contextlib.suppress(AttributeError):
            for part in qualname.split("."):
                obj = getattr(obj, part)
            if actor_function(obj) is fn or obj is fn:
                return Target(actor.actor_name, module=module, qualname=qualname)
    if not by_value:
        raise ConfigurationError(
            f"Actor {actor.actor_name!r} cannot run as a Ray job: the job imports it by module path, so define it "
            "at module level in an importable module (not __main__ or inside a function), or use runner='ray_core'."
        )
    logger.debug("Actor %r cannot be imported by Ray workers; its function is pickled by value.", actor.actor_name)
    return Target(actor.actor_name, fn=fn)


# --- running it ----------------------------------------------------------------------------------------------


def run_body(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: dramatiq.Message[Any] | None,
    plan: SpillPlan | None,
    steering: Steering | None = None,
    *,
    run_awaitable: Callable[[Any], Any] | None = None,
) -> Any:
    """Read piped inputs, run the body with ``message`` as :func:`~dramatiq_ray.current_message` (and
    ``steering`` as where :func:`~dramatiq_ray.report_progress` writes), and return its result after the spill
    plan: a marker when it was spilled. An ``async def`` body's awaitable runs with ``run_awaitable`` (default: a
    new event loop, ``asyncio.run``)."""
    if plan is not None:
        args, kwargs = plan.read_inputs(args, kwargs)
    actor_name = message.actor_name if message is not None else "?"
    with context._processing(message), _steered(steering, actor_name):
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = run_awaitable(result) if run_awaitable is not None else asyncio.run(_await(result))
    return plan.apply(result) if plan is not None else result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def execute(
    target: Target,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: Any,
    plan: SpillPlan | None,
    steering: Steering | None = None,
    *,
    run_awaitable: Callable[[Any], Any] | None = None,
    log_level: int | None = None,
    trace_ctx: dict[str, str] | None = None,
) -> Any:
    """Run one message's body in another process (a Ray task, a replica or a Ray job) and return what goes back
    to the worker; an exception that could not cross back as itself becomes :class:`RemoteExceptionError` (see
    :mod:`.crossing`).

    With ``log_level``, the records the body logs at that level or above come back too: when there are any, the
    value is wrapped in :class:`~dramatiq_ray.callpath.logs.WithLogs`, and an exception carries them (see
    :mod:`.logs`). With ``trace_ctx`` (the worker's W3C trace context), the body runs in a span ``run <actor>``
    continuing it."""
    if trace_ctx:
        _otel.setup_once()
        with _otel.span(f"run {target.actor_name}", parent=trace_ctx, attributes=_body_attributes(target, message)):
            return execute(
                target, args, kwargs, message, plan, steering, run_awaitable=run_awaitable, log_level=log_level
            )
    if log_level is None:
        return _execute(target, args, kwargs, message, plan, steering, run_awaitable)
    with logs.capture(log_level) as captured:
        try:
            value = _execute(target, args, kwargs, message, plan, steering, run_awaitable)
        except Exception as error:
            logs.attach(error, captured.taken())
            raise
    taken = captured.taken()
    # Nothing logged (the usual case): the value alone goes back, which is cheaper to serialize.
    return logs.WithLogs(value, taken) if taken.records or taken.dropped else value


def _body_attributes(target: Target, message: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"dramatiq.actor": target.actor_name}
    if message is not None:
        attributes["messaging.message.id"] = str(message.message_id)
    with contextlib.suppress(Exception):
        import ray

        context = ray.get_runtime_context()
        attributes["ray.task_id"] = str(context.get_task_id())
        attributes["ray.node_id"] = str(context.get_node_id())
        attributes["ray.job_id"] = str(context.get_job_id())
    return attributes


def _execute(
    target: Target,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: Any,
    plan: SpillPlan | None,
    steering: Steering | None,
    run_awaitable: Callable[[Any], Any] | None,
) -> Any:
    try:
        return run_body(target.resolve(), args, kwargs, message, plan, steering, run_awaitable=run_awaitable)
    except Exception as error:
        crossed = crossing.portable(error, target.actor_name)
        if crossed is error:
            raise
        raise crossed from None


def entry_for(target: Target) -> Callable[..., Any]:
    """A function for ``ray.remote`` that carries its target, so a by-value function is shipped once, when Ray
    exports the remote function, rather than with every call.

    It takes the whole call as one argument, ``(args, kwargs, message, plan, steering, log_level, trace_ctx)``
    (see :func:`pack_call`): Ray serializes, ships and deserializes each argument of a task on its own, and one
    argument instead of seven costs measurably less CPU per message on both sides."""

    def run_actor(call: tuple[Any, ...]) -> Any:
        args, kwargs, message, plan, steering, log_level, trace_ctx = call
        return execute(target, args, kwargs, message, plan, steering, log_level=log_level, trace_ctx=trace_ctx)

    return run_actor


def pack_call(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: Any,
    plan: SpillPlan | None,
    steering: Steering | None,
    log_level: int | None,
    trace_ctx: dict[str, str] | None,
) -> tuple[Any, ...]:
    """The one argument the function of :func:`entry_for` takes."""
    return (args, kwargs, message, plan, steering, log_level, trace_ctx)
