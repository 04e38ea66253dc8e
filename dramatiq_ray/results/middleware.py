"""dramatiq_ray.Results: Dramatiq's Results middleware with spilling, a per-actor threshold and piped markers."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import dramatiq
import dramatiq.worker
from dramatiq.results import ResultBackend
from dramatiq.results import Results as DramatiqResults

from ..errors import ConfigurationError
from .backend import SpillingBackend
from .plan import DEFAULT_MAX_INLINE_BYTES, MAX_INLINE_BYTES_OPTION
from .stores.base import BlobStore

__all__ = ["Results"]

_WRAPPED = "__dramatiq_ray_results__"
_rewrap_lock = threading.Lock()


@dataclass(frozen=True)
class _Processing:
    middleware: Results
    broker: dramatiq.Broker
    message: dramatiq.MessageProxy


# Set by before_process_message in the worker thread; consumed by the actor wrapper on entry, so a direct call
# (``render(1)``, in tests or from inside another actor) stays a plain local call.
_processing: ContextVar[_Processing | None] = ContextVar("dramatiq_ray_results_processing", default=None)


class Results(DramatiqResults):
    """Store actor results, spilling oversized ones to a blob store.

    Accepts every argument of ``dramatiq.results.Results``, plus ``store`` and ``max_inline_bytes``::

        broker.add_middleware(Results(backend=RedisBackend(client=client),
                                      store=FilesystemStore("/var/lib/dramatiq-ray/results"),
                                      max_inline_bytes=1024 * 1024))

        @dramatiq.actor(store_results=True, max_inline_bytes=64 * 1024)
        def render(frame): ...

    ``backend`` is wrapped in a :class:`SpillingBackend` (or may be one already, configured on its own). While a
    worker runs an actor, an oversized return value is spilled as soon as the actor returns and replaced by a
    small marker, so a pipeline's next message or an ``on_success`` callback carries the pointer, and the
    receiving actor gets the original value back. Unlike a plain subclass of Dramatiq's Results, the worker
    recognises this middleware (no "you haven't added the Results middleware" warning).

    Parameters:
      backend: A Dramatiq result backend, or a ``SpillingBackend``.
      store_results: Whether actors store their results by default (actor option ``store_results``).
      result_ttl: How long results live, in milliseconds (actor option ``result_ttl``; default 10 minutes).
      store: Where oversized results go (``None``: never spill). Not allowed with a ``SpillingBackend``.
      max_inline_bytes: The largest encoded result kept in the backend (default 1 MiB; actor and message option
        ``max_inline_bytes``). Not allowed with a ``SpillingBackend``.

    Raises:
      ConfigurationError: an argument is invalid.
    """

    def __init__(
        self,
        *,
        backend: ResultBackend,
        store_results: bool = False,
        result_ttl: int | None = None,
        store: BlobStore | None = None,
        max_inline_bytes: int | None = None,
    ) -> None:
        if isinstance(backend, SpillingBackend):
            if store is not None or max_inline_bytes is not None:
                raise ConfigurationError(
                    "Pass store and max_inline_bytes either to SpillingBackend or to Results, not both."
                )
        else:
            backend = SpillingBackend(
                backend,
                store=store,
                max_inline_bytes=DEFAULT_MAX_INLINE_BYTES if max_inline_bytes is None else max_inline_bytes,
            )
        super().__init__(  # type: ignore[no-untyped-call]
            backend=backend, store_results=store_results, result_ttl=result_ttl
        )
        self.backend: SpillingBackend = backend
        _recognise_subclasses_in_worker()

    @property
    def actor_options(self) -> set[str]:
        return set(super().actor_options) | {MAX_INLINE_BYTES_OPTION}

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        self.backend.broker = broker
        if not _is_our_wrapper(actor.fn):
            actor.fn = _wrap(actor.actor_name, actor.fn)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self.backend.broker = broker
        actor = broker.actors.get(message.actor_name)
        if actor is not None and not _is_our_wrapper(actor.fn):
            # Another middleware wrapped the actor over ours (it was added later, after the actor was declared):
            # wrap once more so that ours is outermost and piped values are hydrated before any other wrapper.
            with _rewrap_lock:
                if not _is_our_wrapper(actor.fn):
                    actor.fn = _wrap(actor.actor_name, actor.fn)
        _processing.set(_Processing(self, broker, message))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        _processing.set(None)
        super().after_process_message(broker, message, result=result, exception=exception)  # type: ignore[no-untyped-call]

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        _processing.set(None)
        super().after_skip_message(broker, message)  # type: ignore[no-untyped-call]

    def _forwards_result(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> bool:
        store_results, _ = self._lookup_options(broker, message)  # type: ignore[no-untyped-call]
        if store_results or message.options.get("pipe_target") is not None:
            return True
        actor = broker.get_actor(message.actor_name)
        return bool(message.options.get("on_success") or actor.options.get("on_success"))


def _wrap(actor_name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = _processing.get()
        if state is None or state.message.actor_name != actor_name:
            return fn(*args, **kwargs)
        _processing.set(None)
        backend = state.middleware.backend
        args, kwargs = backend.hydrate_arguments(args, kwargs)
        result = fn(*args, **kwargs)
        if result is None or not state.middleware._forwards_result(state.broker, state.message):
            return result
        plan = backend.spill_plan(state.message)
        return result if plan is None else plan.apply(result)

    setattr(wrapper, _WRAPPED, wrapper)
    return wrapper


def _is_our_wrapper(fn: Callable[..., Any]) -> bool:
    # Compared by identity: functools.wraps copies attributes onto wrappers that others put around ours.
    return getattr(fn, _WRAPPED, None) is fn


def _recognise_subclasses_in_worker() -> None:
    # The worker checks ``type(m) is Results`` and warns that results are discarded for any subclass.
    current = dramatiq.worker.has_results_middleware
    if getattr(current, _WRAPPED, False):
        return

    def has_results_middleware(broker: dramatiq.Broker) -> bool:
        return any(isinstance(middleware, DramatiqResults) for middleware in broker.middleware)

    setattr(has_results_middleware, _WRAPPED, True)
    dramatiq.worker.has_results_middleware = has_results_middleware  # type: ignore[assignment]
