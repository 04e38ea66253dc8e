"""dramatiq_ray.Results: Dramatiq's Results middleware with spilling, a per-actor threshold and piped markers."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

import dramatiq
from dramatiq.results import ResultBackend
from dramatiq.results import Results as DramatiqResults

from ..errors import ConfigurationError, StoreUnavailableError
from .backend import SpillingBackend
from .plan import DEFAULT_MAX_INLINE_BYTES, MAX_INLINE_BYTES_OPTION, check_threshold
from .stores.base import BlobStore

__all__ = ["Results"]

logger = logging.getLogger(__name__)


class Results(DramatiqResults):
    """Store actor results, spilling oversized ones to a blob store.

    Accepts every argument of ``dramatiq.results.Results``, plus ``store`` and ``max_inline_bytes``::

        broker.add_middleware(Results(backend=RedisBackend(client=client),
                                      store=FilesystemStore("/var/lib/dramatiq-ray/results"),
                                      max_inline_bytes=1024 * 1024))

        @dramatiq.actor(store_results=True, max_inline_bytes=64 * 1024)
        def render(frame): ...

    ``backend`` is wrapped in a :class:`SpillingBackend` (or may be one already, configured on its own); reading
    through either returns original values. Where an actor's body runs (the worker, or a Ray task with
    ``RayExecutionMiddleware``), an oversized return value is spilled as soon as the body returns and replaced by
    a small marker, so a pipeline's next message or an ``on_success`` callback carries the pointer, and the
    receiving actor gets the original value back. Unlike a plain subclass of Dramatiq's Results, this one does
    not make the worker log "you haven't added the Results middleware" (see :class:`_ResultsWarningFilter`).

    Parameters:
      backend: A Dramatiq result backend, or a ``SpillingBackend``.
      store_results: Whether actors store their results by default (actor option ``store_results``).
      result_ttl: How long results live, in milliseconds (actor option ``result_ttl``; default 10 minutes).
      store: Where oversized results go (``None``: never spill). Not allowed with a ``SpillingBackend``.
      max_inline_bytes: The largest encoded result kept in the backend, in bytes (default 1 MiB; actor and
        message option ``max_inline_bytes``). Not allowed with a ``SpillingBackend``.
      on_store_error: When the store cannot take an oversized result: ``"fail"`` (default) fails the message
        and the retry policy decides; ``"digest"`` keeps only the digest. Not allowed with a ``SpillingBackend``.

    A worker checks the store when it boots (it writes, reads back and deletes a probe blob); a store that fails
    stops the worker before it consumes any message, with one ERROR naming the store
    (:class:`~dramatiq_ray.StoreUnavailableError`).

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
        on_store_error: str | None = None,
    ) -> None:
        if isinstance(backend, SpillingBackend):
            if store is not None or max_inline_bytes is not None or on_store_error is not None:
                raise ConfigurationError(
                    "Pass store, max_inline_bytes and on_store_error either to SpillingBackend or to Results, not both."
                )
        else:
            backend = SpillingBackend(
                backend,
                store=store,
                max_inline_bytes=DEFAULT_MAX_INLINE_BYTES if max_inline_bytes is None else max_inline_bytes,
                on_store_error=on_store_error or "fail",
            )
        super().__init__(  # type: ignore[no-untyped-call]
            backend=backend, store_results=store_results, result_ttl=result_ttl
        )
        self.backend: SpillingBackend = backend
        _ResultsWarningFilter.install()

    @property
    def actor_options(self) -> set[str]:
        return set(super().actor_options) | {MAX_INLINE_BYTES_OPTION}

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        _check_option(actor.options, f"Actor {actor.actor_name!r}:")

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        _check_option(message.options, f"The message option of {message.actor_name!r}:")

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        try:
            done = self.backend.probe_store()
        except Exception as error:
            store = self.backend.store.describe() if self.backend.store is not None else "the store"
            message = (
                f"{store} failed its probe at worker boot ({type(error).__name__}: {error}): this worker would "
                "lose every result over max_inline_bytes, so it does not start. Fix the store (path, bucket, "
                "credentials, permissions), or the RESULT_STORAGE_* settings / the store passed to Results."
            )
            logger.error("%s", message)
            raise StoreUnavailableError(message) from error
        logger.debug("%s", done)

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        from ..execution import callpath

        callpath.install(actor)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        from ..execution import callpath

        callpath.begin(broker, message)
        _processing_with_ours.set(True)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        from ..execution import callpath

        callpath.end()
        _processing_with_ours.set(False)
        store_results, result_ttl = self._lookup_options(broker, message)  # type: ignore[no-untyped-call]
        if store_results and exception is None:
            # The call path already applied the spill plan where the body ran: store its outcome as it is.
            self.backend.store_outcome(message, result, result_ttl)
        else:
            super().after_process_message(broker, message, result=result, exception=exception)  # type: ignore[no-untyped-call]

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        from ..execution import callpath

        callpath.end()
        _processing_with_ours.set(False)
        super().after_skip_message(broker, message)  # type: ignore[no-untyped-call]


def _check_option(options: dict[str, Any], where: str) -> None:
    # A ConfigurationError is a MiddlewareError: it fails the declaration or the send where it is written.
    if MAX_INLINE_BYTES_OPTION in options:
        check_threshold(options[MAX_INLINE_BYTES_OPTION], where)


# True in a worker thread between our before_process_message and the end of that message.
_processing_with_ours: ContextVar[bool] = ContextVar("dramatiq_ray_results_processing", default=False)


class _ResultsWarningFilter(logging.Filter):
    """Drops the worker's "you haven't added the Results middleware" warning while a message of a broker that
    carries our Results is processed.

    Dramatiq's worker recognises the Results middleware with ``type(m) is Results``, so it does not recognise a
    subclass. The warning is logged by the worker thread between our ``before_process_message`` and
    ``after_process_message``, which is when this filter drops it; on any other broker it passes. A filter on the
    worker's logger is the logging module's documented extension point: nothing of Dramatiq is changed.
    """

    _installed = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_processing_with_ours.get() and "haven't added the Results middleware" in record.getMessage())

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            logging.getLogger("dramatiq.worker.WorkerThread").addFilter(cls())
            cls._installed = True
