"""What runs inside the Ray worker: find the actor's function, run it, keep a large result out of the reply.

Nothing here runs in the Dramatiq worker except building :class:`Target` and :func:`entry_for`.
"""

from __future__ import annotations

import asyncio
import copyreg
import importlib
import inspect
import pickle
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.asyncio import async_to_sync

from .. import context
from ..errors import RemoteExceptionError

#: The attribute under which the middleware's wrapper keeps the function it wraps.
WRAPPED_ATTR = "__dramatiq_ray_wrapped__"


async def _probe() -> None:  # pragma: no cover - never awaited, only used for its wrapper's code object
    return None


_ASYNC_WRAPPER_CODE = async_to_sync(_probe).__code__


@dataclass(frozen=True)
class Target:
    """How a Ray worker finds an actor's function: by importing ``module`` and looking up ``qualname``, or, when
    that cannot work (``__main__``, a function defined inside another), the function itself pickled by value."""

    actor_name: str
    module: str | None = None
    qualname: str | None = None
    fn: Callable[..., Any] | None = None

    @property
    def by_value(self) -> bool:
        return self.fn is not None


def underlying_function(actor_fn: Callable[..., Any]) -> Callable[..., Any]:
    """The user's own function behind ``actor.fn``: without our wrapper, and the coroutine function itself
    rather than Dramatiq's ``async_to_sync`` wrapper (which needs the worker's event loop thread)."""
    fn = actor_fn
    while hasattr(fn, WRAPPED_ATTR):
        fn = getattr(fn, WRAPPED_ATTR)
    if getattr(fn, "__code__", None) is _ASYNC_WRAPPER_CODE:
        fn = fn.__wrapped__  # type: ignore[attr-defined]
    return fn


def actor_function(obj: object) -> Callable[..., Any] | None:
    """The function an actor object (``Actor`` or class-based ``GenericActor`` instance) runs, else ``None``."""
    if isinstance(obj, dramatiq.Actor):
        return underlying_function(obj.fn)
    actor = getattr(obj, "__actor__", None)
    if isinstance(actor, dramatiq.Actor):
        return underlying_function(actor.fn)
    return None


def resolve(target: Target) -> Callable[..., Any]:
    """Find the function a target names. Raises ``ImportError`` or ``AttributeError`` with a hint."""
    if target.fn is not None:
        return target.fn
    assert target.module is not None and target.qualname is not None
    obj: Any = importlib.import_module(target.module)
    for part in target.qualname.split("."):
        obj = getattr(obj, part)
    fn = actor_function(obj)
    if fn is None:
        raise AttributeError(
            f"{target.module}.{target.qualname} is not a Dramatiq actor in the Ray worker, so actor "
            f"{target.actor_name!r} cannot run there. Make sure the Ray workers run the same code as the "
            "Dramatiq workers (same image, or runtime_env working_dir/py_modules)."
        )
    return fn


def execute(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any], message: Any, spill_plan: Any) -> Any:
    """Run one message's actor body inside a Ray task and return what goes back to the worker."""
    fn = resolve(target)
    token = context._current.set(message)
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except Exception as error:
        if _crosses(error):
            raise
        raise RemoteExceptionError(
            f"Actor {target.actor_name!r} raised {_type_name(error)}: {error}. It could not be sent back from Ray "
            "as itself (it does not pickle); make it picklable, or raise one that is.",
            type_name=_type_name(error),
            remote_traceback=traceback.format_exc(),
        ) from None
    finally:
        context._current.reset(token)
    if spill_plan is not None:
        result = spill_plan.apply(result)
    return result


def _crosses(error: BaseException) -> bool:
    """Whether ``error`` survives the trip back to the worker; exceptions whose constructor takes other arguments
    than their message are taught to pickle without calling it (type, args and attributes are kept)."""
    if _round_trips(error):
        return True
    copyreg.pickle(type(error), _reduce_exception)
    return _round_trips(error)


def _round_trips(error: BaseException) -> bool:
    from ray import cloudpickle

    try:
        pickle.loads(cloudpickle.dumps(error))  # type: ignore[no-untyped-call]
    except Exception:
        return False
    return True


def _reduce_exception(error: BaseException) -> tuple[Any, ...]:
    return (_rebuild_exception, (type(error), error.args, dict(vars(error))))


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


def _type_name(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


async def _await(awaitable: Any) -> Any:
    return await awaitable


def entry_for(target: Target) -> Callable[..., Any]:
    """A function for ``ray.remote`` that carries its target, so a by-value function is shipped once, when Ray
    exports the remote function, rather than with every call."""

    def run_actor(args: tuple[Any, ...], kwargs: dict[str, Any], message: Any, spill_plan: Any) -> Any:
        return execute(target, args, kwargs, message, spill_plan)

    return run_actor
