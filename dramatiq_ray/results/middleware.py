"""dramatiq_ray.Results: Dramatiq's Results middleware with spilling, a per-actor threshold and piped markers."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.errors import ActorNotFound
from dramatiq.results import ResultBackend
from dramatiq.results import Results as DramatiqResults
from dramatiq.results.backend import Missing

from ..callpath import wrapper as callpath
from ..callpath.lookup import codec_options_for, lookup_option
from ..callpath.steering import FINISHED, QUEUED, Channel, Steering
from ..errors import ConfigurationError, MessageCancelledError, ResultBackendError, StoreUnavailableError
from ..payloads import arguments
from ..payloads.arguments import MAX_INLINE_ARG_BYTES_OPTION, check_arg_threshold, held_pointers
from ..payloads.encryption import EncryptionKeys
from ..payloads.plan import (
    ARGUMENTS_NEED,
    CODEC_OPTIONS,
    DEFAULT_MAX_INLINE_BYTES,
    MAX_INLINE_BYTES_OPTION,
    SpillPlan,
    check_codec_options,
    check_threshold,
    require_blob_store,
)
from ..payloads.stores.base import ARGS_CHILD, BlobStore
from . import encoding
from .backend import SpillingBackend
from .sql.lifecycle import record_event
from .steering import channel_for

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
        self.max_inline_arg_bytes = check_arg_threshold(max_inline_arg_bytes, "Results:")
        self._cached_argument_store: BlobStore | None = None
        if self.max_inline_arg_bytes is not None:
            self._argument_store()  # refuse a store that keeps nothing now, not at the first send
        self._offloading = self.max_inline_arg_bytes is not None
        if self._offloading:
            encoding.install_encoder()  # configured here: every send from now on goes through it
        self._owner: callpath.CallPath | None = None
        self._lock = threading.Lock()
        # By message id, under the lock: the messages this process is running (how many times at once: a
        # redelivered duplicate may run beside the original), and those of them that Retries (or anything, from
        # any thread) put back on the queue, which are not done when they are acked.
        self._running: dict[str, int] = {}
        self._requeued: set[str] = set()
        # Messages whose outcome the call path stored, by message id, until their after_process_message.
        self._stored: set[str] = set()
        # Where cancel marks, message states and progress live (results/steering.py); built on first use.
        self._channel: tuple[Channel | None] | None = None

    @property
    def actor_options(self) -> set[str]:
        return set(super().actor_options) | {MAX_INLINE_BYTES_OPTION, MAX_INLINE_ARG_BYTES_OPTION, *CODEC_OPTIONS}

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        _stand_beside(broker, self)
        _check_option(actor.options, f"Actor {actor.actor_name!r}:")
        if actor.options.get(MAX_INLINE_ARG_BYTES_OPTION) is not None:
            self._argument_store()
            self._offloading = True
            encoding.install_encoder()

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        _check_option(message.options, f"The message option of {message.actor_name!r}:")
        record_event(self, broker, message, "enqueued")  # SQLBackend: lifecycle events (results/sql/lifecycle.py)
        self._set_state(message.message_id, QUEUED)
        with self._lock:
            if message.message_id in self._running:
                self._requeued.add(message.message_id)  # a retry: its argument blobs stay
        if self._offloading or message.options.get(MAX_INLINE_ARG_BYTES_OPTION) is not None:
            encoding.offer(message.message_id, functools.partial(self._offload, broker))

    # --- cancel marks and progress (results/steering.py) ------------------------------------------------------

    def steering_channel(self) -> Channel | None:
        """Where this broker's cancel marks, message states and progress live, or ``None`` (the result backend
        keeps none)."""
        if self._channel is None:
            self._channel = (channel_for(self.backend),)
        return self._channel[0]

    def steering_for(self, message: dramatiq.MessageProxy) -> Steering | None:
        channel = self.steering_channel()
        return Steering(channel, message.message_id) if channel is not None else None

    def _set_state(self, message_id: str, state: str) -> None:
        channel = self.steering_channel()
        if channel is None:
            return
        try:
            channel.set_state(message_id, state)
        except Exception as error:
            # Best effort: the message runs as usual; only a cancel of it may say "unknown".
            logger.warning(
                "Could not record that message %s is %s in %s: %s", message_id, state, channel.describe(), error
            )

    def _cancelled_before_start(self, message: dramatiq.MessageProxy) -> bool:
        """Record that ``message`` runs, and say whether it was cancelled (one round trip)."""
        channel = self.steering_channel()
        if channel is None:
            return False
        try:
            return channel.start(message.message_id)
        except Exception as error:
            logger.warning(
                "Could not read the cancel mark of message %s in %s (%s); it runs.",
                message.message_id,
                channel.describe(),
                error,
            )
            return False

    # --- arguments by reference --------------------------------------------------------------------------------

    def _argument_store(self) -> BlobStore:
        if self._cached_argument_store is None:
            self._cached_argument_store = require_blob_store(self.backend.store, ARGUMENTS_NEED).child(ARGS_CHILD)
        return self._cached_argument_store

    def _offload(self, broker: dramatiq.Broker, data: dict[str, Any]) -> dict[str, Any]:
        """The message dict as it is sent: big arguments by reference, in it and in the pipeline it leads."""
        try:
            actor_options = broker.get_actor(data["actor_name"]).options
        except ActorNotFound:
            actor_options = {}
        options = data.get("options") or {}
        threshold = lookup_option(options, actor_options, (MAX_INLINE_ARG_BYTES_OPTION,), self.max_inline_arg_bytes)
        if threshold is not None:
            backend = self.backend
            codec = codec_options_for(options, actor_options, backend)
            self._argument_store()  # refuse a store that keeps nothing
            limit = check_arg_threshold(threshold, f"Actor {data['actor_name']!r}:")
            data = dataclasses.replace(backend.plan(None, **codec), max_inline_arg_bytes=limit).offload(data)
        target = (data.get("options") or {}).get("pipe_target")
        if isinstance(target, dict) and "message_id" in target:
            data = {**data, "options": {**data["options"], "pipe_target": self._offload(broker, target)}}
        return data

    def _release(self, message: dramatiq.MessageProxy) -> None:
        pointers = held_pointers(message.args, message.kwargs)
        if pointers and self.backend.store is not None and self.backend.store.persistent:
            arguments.release(self._argument_store(), message.message_id, pointers)

    def after_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Acked: done for good, unless it raised and was put back on the queue to run again, or it was a delayed
        # message leaving its delay queue for the real one (the worker acks that hop).
        if message.queue_name != q_name(message.queue_name):
            return
        if not self._finished(message.message_id):
            self._set_state(message.message_id, FINISHED)
            self._release(message)

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Finished before the failure is stored: whoever reads the failure and then cancels is told it finished.
        self._finished(message.message_id)
        self._set_state(message.message_id, FINISHED)
        super().after_nack(broker, message)  # type: ignore[no-untyped-call]
        self._release(message)  # failed for good (after its last retry)

    def _finished(self, message_id: str) -> bool:
        """Forget that ``message_id`` runs here; return whether it was put back on the queue meanwhile."""
        with self._lock:
            count = self._running.pop(message_id, 0) - 1
            if count > 0:
                self._running[message_id] = count
            requeued = message_id in self._requeued
            if count <= 0:
                self._requeued.discard(message_id)
            return requeued

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        _stand_beside(broker, self)
        self._owner = callpath.join(broker, self, plans=self)
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
        digest_only = digest_only_warning(self.backend)
        if digest_only is not None:
            logger.warning("%s", digest_only)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Every worker thread has stopped: an SQLBackend's listener and pooled connections go now, and so do those
        # of its cancel marks and progress (a later operation in this process, e.g. a producer's get_result, opens
        # them again).
        from .sql.backend import SQLBackend

        with self._lock:
            self._running.clear()
            self._requeued.clear()
            self._stored.clear()
        inner = self.backend.backend
        if isinstance(inner, SQLBackend):
            inner.close()
        channel = self._channel[0] if self._channel is not None else None
        close = getattr(channel, "close", None)
        if close is not None:
            close()

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        _stand_beside(broker, self)
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
        with self._lock:
            self._running[message.message_id] = self._running.get(message.message_id, 0) + 1
        record_event(self, broker, message, "running")
        if self._cancelled_before_start(message):
            # dramatiq_ray.cancel before it started: skipped, its body never runs, and failed (nacked), so the
            # cancellation is stored as its failure and nothing retries it.
            logger.info(
                "Message %s of %r was cancelled before it started: skipped.", message.message_id, message.actor_name
            )
            message.fail()
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


class _NullBackend(ResultBackend):
    """Keeps nothing: the backend of the stock Results that stands beside ours (see :func:`_stand_beside`)."""

    def store_result(self, message: Any, result: Any, ttl: int) -> None:
        return None

    def store_exception(self, message: Any, exception: Exception, ttl: int) -> None:
        return None

    def _get(self, message_key: str) -> Any:
        return Missing

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        return None


_beside_lock = threading.Lock()


def _stand_beside(broker: dramatiq.Broker, ours: Results) -> None:
    """Put one stock ``dramatiq.results.Results`` with a backend that keeps nothing right after ours, once.

    Dramatiq's worker recognises the Results middleware with ``type(m) is Results`` (not ``isinstance``), and
    warns "you haven't added the Results middleware" for every value returned on a broker without one. The stock
    instance makes that check true without changing Dramatiq; standing after ours, it is never the broker's
    results backend (``broker.get_results_backend()`` returns the first), and it stores nothing. It also logs
    Dramatiq's own "store_results is not set" warning, so ours does not repeat it.
    """
    if any(type(m) is DramatiqResults for m in broker.middleware):
        return
    with _beside_lock:
        if any(type(m) is DramatiqResults for m in broker.middleware) or not any(m is ours for m in broker.middleware):
            return
        stock = DramatiqResults(backend=_NullBackend())  # type: ignore[no-untyped-call]
        middleware = list(broker.middleware)
        middleware.insert(next(i for i, m in enumerate(middleware) if m is ours) + 1, stock)
        # A new list, not an in-place edit: a hook loop running over the old list is not disturbed.
        broker.middleware = middleware


def digest_only_warning(backend: SpillingBackend) -> str | None:
    """What a worker says at boot when its results over ``max_inline_bytes`` would keep only their digest (the
    store is a ``DigestStore``, django-ray's default ``RESULT_STORAGE_BACKEND='digest'``), else ``None``."""
    store = backend.store
    if store is None or store.persistent:
        return None
    return (
        f"Results over max_inline_bytes ({backend.max_inline_bytes} bytes; MAX_RESULT_SIZE_BYTES) keep only their "
        f"SHA-256 digest: the store is {store.describe()} (RESULT_STORAGE_BACKEND='digest', the default), so their "
        "values are lost and reading them raises DigestOnlyResultError; the messages still succeed. To keep them, "
        "set RESULT_STORAGE_BACKEND to filesystem, s3 or gcs (or pass store=FilesystemStore(...), S3Store(...) "
        "or GCSStore(...) to Results)."
    )
