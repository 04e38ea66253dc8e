"""dramatiq_ray.Results: Dramatiq's Results middleware with spilling, a per-actor threshold and piped markers."""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.results import ResultBackend
from dramatiq.results import Results as DramatiqResults

from .. import metrics
from ..callpath import wrapper as callpath
from ..callpath.steering import Channel, Steering
from ..errors import ConfigurationError, MessageCancelledError, ResultBackendError
from ..payloads.arguments import MAX_INLINE_ARG_BYTES_OPTION, check_arg_threshold
from ..payloads.encryption import EncryptionKeys
from ..payloads.plan import (
    CODEC_OPTIONS,
    DEFAULT_MAX_INLINE_BYTES,
    MAX_INLINE_BYTES_OPTION,
    SpillPlan,
    check_codec_options,
    check_threshold,
)
from ..payloads.stores.base import BlobStore
from .backend import SpillingBackend
from .beside import stand_beside
from .offload import ArgumentOffload
from .probe import check_store_at_boot
from .sql.lifecycle import record_event
from .states import MessageStates

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
    not make the worker log "you haven't added the Results middleware": it puts a stock Results that keeps
    nothing right after itself on the broker, once, so that Dramatiq's ``type(m) is Results`` check holds.

    Parameters:
      backend: A Dramatiq result backend, or a ``SpillingBackend``.
      store_results: Whether actors store their results by default (actor option ``store_results``).
      result_ttl: How long results live, in milliseconds (actor option ``result_ttl``; default 10 minutes).
      store: Where oversized results go (``None``: never spill). Not allowed with a ``SpillingBackend``.
      max_inline_bytes: The largest encoded result kept in the backend, in bytes (default 1 MiB; actor and
        message option ``max_inline_bytes``). Not allowed with a ``SpillingBackend``.
      on_store_error: When the store cannot take an oversized result: ``"fail"`` (default) fails the message
        and the retry policy decides; ``"digest"`` keeps only the digest. Not allowed with a ``SpillingBackend``.
      max_inline_arg_bytes: Send arguments whose encoded size is over this many bytes by reference: written to
        the store's ``args`` child when the message is sent, read where the body runs, deleted when the message
        is done for good (actor and message option ``max_inline_arg_bytes``; default ``None``: never). Needs a
        store that keeps blobs. See docs/arguments.md.

    A worker checks the store when it boots (it writes, reads back and deletes a probe blob); a store that fails
    stops the worker before it consumes any message, with one ERROR naming the store
    (:class:`~dramatiq_ray.StoreUnavailableError`). A worker whose store keeps digests only (``DigestStore``)
    says so at boot, with one WARNING.

    The outcome is stored when the body's call returns, before Dramatiq's after-hooks: when it cannot be stored,
    the attempt fails with :class:`~dramatiq_ray.ResultBackendError` and the retry policy runs it again, so a
    pipeline's next step, an ``on_success`` callback or a success webhook is sent once, by the attempt that stored.

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
        allow_pickle: bool | None = None,
        compression: str | None = None,
        compression_level: int | None = None,
        encryption: EncryptionKeys | None = None,
        max_inline_arg_bytes: int | None = None,
    ) -> None:
        spilling = {
            "store": store,
            "max_inline_bytes": max_inline_bytes,
            "on_store_error": on_store_error,
            "allow_pickle": allow_pickle,
            "compression": compression,
            "compression_level": compression_level,
            "encryption": encryption,
        }
        if isinstance(backend, SpillingBackend):
            given = [name for name, value in spilling.items() if value is not None]
            if given:
                raise ConfigurationError(f"Pass {', '.join(given)} either to SpillingBackend or to Results, not both.")
        else:
            backend = SpillingBackend(
                backend,
                store=store,
                max_inline_bytes=DEFAULT_MAX_INLINE_BYTES if max_inline_bytes is None else max_inline_bytes,
                on_store_error=on_store_error or "fail",
                allow_pickle=bool(allow_pickle),
                compression=compression,
                compression_level=compression_level,
                encryption=encryption,
            )
        super().__init__(  # type: ignore[no-untyped-call]
            backend=backend, store_results=store_results, result_ttl=result_ttl
        )
        self.backend: SpillingBackend = backend
        # Arguments by reference (results/offload.py).
        self._arguments = ArgumentOffload(backend, max_inline_arg_bytes)
        # Message states where cancel marks live, and the messages this process runs (results/states.py).
        self._states = MessageStates(backend)
        self._owner: callpath.CallPath | None = None
        self._lock = threading.Lock()
        # Messages whose outcome the call path stored, by message id, until their after_process_message.
        self._stored: set[str] = set()

    @property
    def max_inline_arg_bytes(self) -> int | None:
        """The default threshold of arguments sent by reference, in bytes (``None``: never)."""
        return self._arguments.threshold

    @property
    def actor_options(self) -> set[str]:
        return set(super().actor_options) | {MAX_INLINE_BYTES_OPTION, MAX_INLINE_ARG_BYTES_OPTION, *CODEC_OPTIONS}

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        stand_beside(broker, self)
        _check_option(actor.options, f"Actor {actor.actor_name!r}:")
        self._arguments.declare(actor)

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        _check_option(message.options, f"The message option of {message.actor_name!r}:")
        record_event(self, broker, message, "enqueued")  # SQLBackend: lifecycle events (results/sql/lifecycle.py)
        self._states.queued(message.message_id)  # a retry is noted: its argument blobs stay
        self._arguments.offer(broker, message)

    # --- cancel marks and progress (results/steering.py) ------------------------------------------------------

    def steering_channel(self) -> Channel | None:
        """Where this broker's cancel marks, message states and progress live, or ``None`` (the result backend
        keeps none)."""
        return self._states.channel()

    def steering_for(self, message: dramatiq.MessageProxy) -> Steering | None:
        channel = self.steering_channel()
        return Steering(channel, message.message_id) if channel is not None else None

    # --- when a message is done ----------------------------------------------------------------------------------

    def after_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Acked: done for good, unless it raised and was put back on the queue to run again, or it was a delayed
        # message leaving its delay queue for the real one (the worker acks that hop).
        if message.queue_name != q_name(message.queue_name):
            return
        if self._states.acked(message.message_id):
            self._arguments.release(message)

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Finished before the failure is stored: whoever reads the failure and then cancels is told it finished.
        self._states.failed(message.message_id)
        super().after_nack(broker, message)  # type: ignore[no-untyped-call]
        self._arguments.release(message)  # failed for good (after its last retry)

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        stand_beside(broker, self)
        self._owner = callpath.join(broker, self, plans=self)
        check_store_at_boot(self.backend)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Every worker thread has stopped: an SQLBackend's listener and pooled connections go now, and so do those
        # of its cancel marks and progress (a later operation in this process, e.g. a producer's get_result, opens
        # them again).
        from .sql.backend import SQLBackend

        self._states.clear()
        with self._lock:
            self._stored.clear()
        inner = self.backend.backend
        if isinstance(inner, SQLBackend):
            inner.close()
        self._states.close()

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        stand_beside(broker, self)
        callpath.install(actor)

    # --- the call path ---------------------------------------------------------------------------------------

    def _callpath(self, broker: dramatiq.Broker) -> callpath.CallPath:
        # Joined at worker boot; a broker driven without a worker boot (hooks called by hand) joins on first use.
        if self._owner is None:
            self._owner = callpath.join(broker, self, plans=self)
        return self._owner

    def spill_plan(self, actor: dramatiq.Actor[Any, Any], message: dramatiq.MessageProxy) -> SpillPlan | None:
        """This message's spill plan, applied where its body runs; a threshold of ``None`` when the result goes
        nowhere (not stored, not piped, no ``on_success``).

        Raises:
          ConfigurationError: the ``max_inline_bytes`` option is invalid.
        """
        return callpath.spill_plan_for(self.backend, self.store_results, actor, message)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._states.running(message.message_id)
        record_event(self, broker, message, "running")
        if self._states.cancelled_before_start(message.message_id):
            # dramatiq_ray.cancel before it started: skipped, its body never runs, and failed (nacked), so the
            # cancellation is stored as its failure and nothing retries it.
            logger.info(
                "Message %s of %r was cancelled before it started: skipped.", message.message_id, message.actor_name
            )
            message.fail()
            metrics.record_cancellation(message.actor_name, "skipped")
            raise MessageCancelledError(
                f"Message {message.message_id} of actor {message.actor_name!r} was cancelled before it started; it "
                "is not retried.",
                message_id=message.message_id,
            )
        owner = self._callpath(broker)
        if owner.drives(self):
            owner.begin(message)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        owner = self._callpath(broker)
        if owner.drives(self):
            owner.end()
        with self._lock:
            stored = message.message_id in self._stored
            self._stored.discard(message.message_id)
        if stored or exception is not None:
            return
        store_results, result_ttl = self._lookup_options(broker, message)  # type: ignore[no-untyped-call]
        if store_results:
            # The body did not run through the call path (the message failed before it, or the actor's function
            # was replaced): store what Dramatiq hands over, as Dramatiq's Results does.
            try:
                self.backend.store_outcome(message, result, result_ttl)
            except Exception as error:
                logger.error(
                    "The result of message %s of %r could not be stored (%s: %s): it is lost.",
                    message.message_id,
                    message.actor_name,
                    type(error).__name__,
                    error,
                )

    def store_from_call(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, outcome: Any) -> None:
        """Store the outcome of ``message``'s body (a value, or the marker of a spilled one) before the call
        returns, so before Pipelines, Callbacks or Webhooks see the message succeed.

        Raises:
          ResultBackendError: the outcome could not be stored; the attempt fails with it, nothing downstream is
            sent for it, and the retry policy runs the message again.
        """
        store_results, result_ttl = self._lookup_options(broker, message)  # type: ignore[no-untyped-call]
        if not store_results:
            return
        try:
            self.backend.store_outcome(message, outcome, result_ttl)
        except Exception as error:
            raise ResultBackendError(
                f"The outcome of message {message.message_id} of {message.actor_name!r} could not be stored in "
                f"{type(self.backend.backend).__name__} ({type(error).__name__}: {error}): this attempt fails, "
                "nothing downstream (pipeline, on_success, webhook) is sent for it, and the retry policy runs it "
                "again. Check that the result backend is reachable."
            ) from error
        with self._lock:
            self._stored.add(message.message_id)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        owner = self._callpath(broker)
        if owner.drives(self):
            owner.end()
        record_event(self, broker, message, "skipped")
        super().after_skip_message(broker, message)  # type: ignore[no-untyped-call]


def _check_option(options: dict[str, Any], where: str) -> None:
    # A ConfigurationError is a MiddlewareError: it fails the declaration or the send where it is written.
    if MAX_INLINE_BYTES_OPTION in options:
        check_threshold(options[MAX_INLINE_BYTES_OPTION], where)
    if MAX_INLINE_ARG_BYTES_OPTION in options:
        check_arg_threshold(options[MAX_INLINE_ARG_BYTES_OPTION], where)
    check_codec_options(options, where)
