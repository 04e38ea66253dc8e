"""SpillingBackend: a result backend that wraps any Dramatiq result backend and moves oversized results to a
blob store, keeping only a pointer in the wrapped backend."""

from __future__ import annotations

import logging
import sys
import time
from types import CodeType
from typing import Any

import dramatiq
from dramatiq.errors import ActorNotFound
from dramatiq.results import ResultBackend, ResultTimeout
from dramatiq.results import Results as DramatiqResults
from dramatiq.results.backend import DEFAULT_TIMEOUT

from .. import metrics
from ..errors import (
    BlobReadError,
    ConfigurationError,
    DigestOnlyResultError,
    ForeignPointerError,
    InvalidPointerError,
    SpilledResultError,
)
from .marker import LITERAL_KEY, SpilledResult, is_spilled_shape
from .plan import DEFAULT_MAX_INLINE_BYTES, MAX_INLINE_BYTES_OPTION, SpillPlan, check_threshold
from .pointers import Pointer, digest_of, looks_like_pointer, parse_pointer
from .stores.base import BlobStore, verify_blob

__all__ = ["AnyMessage", "SpillingBackend", "find_spilling_backend", "get_pointer"]

#: A message, or the proxy a worker hands to middleware.
AnyMessage = dramatiq.Message[Any] | dramatiq.MessageProxy

logger = logging.getLogger(__name__)


class SpillingBackend(ResultBackend):
    """Keep results up to ``max_inline_bytes`` in ``backend``; write larger ones to ``store`` and keep a pointer.

    Size is the length of the result encoded with the backend's encoder (JSON by default). Reading a result
    returns the original value wherever it was stored, after checking its size and SHA-256. Usable with
    ``dramatiq_ray.Results`` (which adds the per-actor option and pipeline support) or on its own with
    ``dramatiq.results.Results``::

        backend = SpillingBackend(RedisBackend(client=client), store=FilesystemStore("/var/lib/results"))
        broker.add_middleware(dramatiq.results.Results(backend=backend))

    What the wrapped backend holds: the value itself when it fits; a pointer string when it was spilled; and
    ``{"__dramatiq_ray_literal__": value}`` when the value itself would be mistaken for a pointer (a string
    starting with a pointer scheme, or a dict of that escape shape), so users' strings round-trip unchanged.

    Contract with the Ray execution area (importable without Ray):
      - :func:`find_spilling_backend` finds this backend on a broker.
      - :meth:`spill_plan` returns a picklable :class:`~dramatiq_ray.results.SpillPlan` (``None`` when nothing can
        be spilled away from here: no store, or a ``DigestStore``); its ``apply(value)`` spills inside the Ray
        task and returns a :class:`~dramatiq_ray.results.SpilledResult` marker, or the value unchanged.
      - A marker passes unchanged through the ``Results`` actor wrapper and is stored here as its pointer, never
        spilled twice. :meth:`hydrate_arguments` replaces markers among an actor's arguments with their values
        (idempotent; call it before running a body that did not go through the ``Results`` wrapper).

    Parameters:
      backend: The Dramatiq result backend that stores small results and pointers (Redis, Memcached, Stub...).
      store: Where oversized results go. ``None`` never spills.
      max_inline_bytes: The largest encoded size kept inline, in bytes. Actors and messages override it with the
        ``max_inline_bytes`` option.

    Raises:
      ConfigurationError: an argument is invalid.
    """

    def __init__(
        self,
        backend: ResultBackend,
        *,
        store: BlobStore | None = None,
        max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
    ) -> None:
        if isinstance(backend, SpillingBackend) or not isinstance(backend, ResultBackend):
            raise ConfigurationError(
                f"SpillingBackend wraps a Dramatiq result backend (RedisBackend, MemcachedBackend, StubBackend), "
                f"got {backend!r}."
            )
        if store is not None and not isinstance(store, BlobStore):
            raise ConfigurationError(
                f"store must be a BlobStore (DigestStore, FilesystemStore, S3Store, GCSStore), got {store!r}."
            )
        check_threshold(max_inline_bytes, "SpillingBackend")
        super().__init__(
            namespace=backend.namespace,
            encoder=backend.encoder,
            use_namespace_prefix_keys=getattr(backend, "use_namespace_prefix_keys", False),
        )
        self.backend = backend
        self.store = store
        self.max_inline_bytes = max_inline_bytes
        #: The broker whose actors' options are consulted; set by ``dramatiq_ray.Results``, else the global one.
        self.broker: dramatiq.Broker | None = None

    def __repr__(self) -> str:
        return f"SpillingBackend({self.backend!r}, store={self.store!r}, max_inline_bytes={self.max_inline_bytes})"

    # --- options ---------------------------------------------------------------------------------------------

    def threshold_for(self, message: AnyMessage) -> int:
        """The effective ``max_inline_bytes`` for ``message``: message option, then actor option, then default.

        Raises:
          ConfigurationError: the option is not an integer >= 0.
        """
        value = message.options.get(MAX_INLINE_BYTES_OPTION)
        if value is not None:
            return check_threshold(value, f"The message option of {message.actor_name!r}:")
        try:
            actor = (self.broker or dramatiq.get_broker()).get_actor(message.actor_name)
        except ActorNotFound:
            return self.max_inline_bytes
        value = actor.options.get(MAX_INLINE_BYTES_OPTION)
        if value is not None:
            return check_threshold(value, f"The actor option of {message.actor_name!r}:")
        return self.max_inline_bytes

    def spill_plan(self, message: AnyMessage) -> SpillPlan | None:
        """A picklable plan to spill ``message``'s result where it is produced, or ``None`` when it cannot be
        spilled there (no store, a ``DigestStore``, or an invalid threshold, which the backend reports)."""
        if self.store is None or not self.store.persistent:
            return None
        try:
            return SpillPlan(self.store, self.encoder, self.threshold_for(message))
        except ConfigurationError:
            return None

    # --- storing ---------------------------------------------------------------------------------------------

    def store_result(self, message: AnyMessage, result: Any, ttl: int) -> None:
        """Store ``result``, spilling it when oversized. A result that cannot be stored (it does not encode, or
        the threshold is invalid) is stored as a failure, so ``get_result`` raises ``ResultFailure`` promptly."""
        try:
            stored = self._prepare(message, result)
        except _Unstorable as unstorable:
            logger.error("%s", unstorable.error)
            self.backend.store_exception(message, unstorable.error, ttl)
            return
        self.backend.store_result(message, stored, ttl)

    def store_exception(self, message: AnyMessage, exception: Exception, ttl: int) -> None:
        """Store a failure in the wrapped backend, exactly as Dramatiq does (failures are never spilled)."""
        self.backend.store_exception(message, exception, ttl)

    def _prepare(self, message: AnyMessage, result: Any) -> Any:
        if isinstance(result, SpilledResult):
            try:
                pointer = parse_pointer(result.pointer)
            except InvalidPointerError as error:
                raise _Unstorable(error) from None
            metrics.record_spill(self._store_label(), pointer.size)  # spilled where it was produced (a Ray task)
            return pointer.raw
        try:
            data = self.encoder.encode(result)
        except Exception as error:
            raise _Unstorable(
                TypeError(
                    f"The result of actor {message.actor_name!r} cannot be encoded by "
                    f"{type(self.encoder).__name__} ({type(error).__name__}: {error}); return a value the encoder "
                    "accepts (JSON: dicts, lists, strings, numbers, booleans, None)."
                )
            ) from None
        try:
            threshold = self.threshold_for(message)
        except ConfigurationError as error:
            raise _Unstorable(error) from None
        if self.store is None or len(data) <= threshold:
            return _escape(result)
        return self._spill(data)

    def _spill(self, data: bytes) -> str:
        digest = digest_of(data)
        assert self.store is not None
        try:
            pointer = self.store.put(digest, data)
        except Exception as error:
            metrics.record_spill_fallback(self._store_label())
            logger.warning(
                "%s could not store a %d-byte result (%s: %s); keeping only its digest, so reading it will raise "
                "DigestOnlyResultError.",
                self.store.describe(),
                len(data),
                type(error).__name__,
                error,
            )
            return f"oversize://sha256/{digest}?bytes={len(data)}"
        metrics.record_spill(self._store_label(), len(data))
        return pointer

    def _store_label(self) -> str:
        return type(self.store).__name__ if self.store is not None else "none"

    # --- reading ---------------------------------------------------------------------------------------------

    def get_result(self, message: AnyMessage, *, block: bool = False, timeout: int | None = None) -> Any:
        """Get a result, reading it from the store when it was spilled.

        Raises:
          ResultMissing: ``block`` is false and the result is not stored yet.
          ResultTimeout: waiting for the result timed out.
          ResultFailure: the actor failed (or its result could not be stored).
          DigestOnlyResultError: only the digest of the result was kept.
          BlobNotFoundError, BlobIntegrityError, BlobReadError: the blob is missing, corrupt or unreadable now.
          InvalidPointerError, ForeignPointerError: the stored pointer is malformed or names another store.
        """
        if not block:
            return self.hydrate(self.backend.get_result(message, block=False))
        return self.hydrate(self._wait(message, DEFAULT_TIMEOUT if timeout is None else timeout))

    def _wait(self, message: AnyMessage, timeout: int) -> Any:
        # A long blocking read is made of short ones: client libraries put a socket timeout under each read
        # (redis-py 8 defaults to 5 s), which would otherwise end a longer wait with the client's own error.
        deadline = time.monotonic() + timeout / 1000
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            try:
                return self.backend.get_result(message, block=True, timeout=max(1000, min(remaining, _BLOCK_SLICE)))
            except ResultTimeout:
                if time.monotonic() >= deadline:
                    raise

    def hydrate(self, stored: Any) -> Any:
        """Turn what the wrapped backend holds back into the original value (see :meth:`get_result`)."""
        if isinstance(stored, dict) and len(stored) == 1 and LITERAL_KEY in stored:
            return stored[LITERAL_KEY]
        if not looks_like_pointer(stored):
            return stored
        pointer = parse_pointer(stored)
        if _checking_presence():
            return stored  # pipeline.completed and group.completed_count discard the value: do not download it
        return self.read_pointer(pointer)

    def read_pointer(self, pointer: Pointer | str) -> Any:
        """Read, verify and decode the value a pointer names.

        Raises:
          DigestOnlyResultError, BlobReadError (and subclasses), InvalidPointerError, ForeignPointerError.
        """
        if isinstance(pointer, str):
            pointer = parse_pointer(pointer)
        try:
            value = self._read(pointer)
        except SpilledResultError as error:
            metrics.record_hydration_failure(self._store_label(), error)
            raise
        metrics.record_hydration(self._store_label())
        return value

    def _read(self, pointer: Pointer) -> Any:
        if pointer.scheme == "oversize":
            raise DigestOnlyResultError(
                f"The result ({pointer.size} bytes, SHA-256 {pointer.digest}) was larger than max_inline_bytes and "
                "only its digest was kept (a DigestStore, or a fallback after a store failure). Configure a "
                "FilesystemStore, S3Store or GCSStore to keep large results.",
                digest=pointer.digest,
                size=pointer.size,
                pointer=pointer.raw,
            )
        if self.store is None or not self.store.persistent:
            raise ForeignPointerError(
                f"The result was spilled to {pointer.raw!r} but this backend has no store that can read it; "
                "configure the store that wrote it."
            )
        try:
            data = self.store.get(pointer)
        except SpilledResultError:
            raise
        except Exception as error:
            raise BlobReadError(
                f"{self.store.describe()} could not read {pointer.raw!r}: {error}", pointer=pointer.raw
            ) from error
        data = verify_blob(pointer, data)
        try:
            return self.encoder.decode(data)
        except Exception as error:
            raise BlobReadError(
                f"The blob for {pointer.raw!r} is intact but {type(self.encoder).__name__} cannot decode it "
                f"({error}); read it with the encoder that wrote it.",
                pointer=pointer.raw,
            ) from error

    def hydrate_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Replace spilled-value markers among an actor's arguments with their values (piped results)."""
        if not any(map(is_spilled_shape, args)) and not any(map(is_spilled_shape, kwargs.values())):
            return args, kwargs
        new_args = tuple(self._hydrate_argument(value) for value in args)
        new_kwargs = {key: self._hydrate_argument(value) for key, value in kwargs.items()}
        return new_args, new_kwargs

    def _hydrate_argument(self, value: Any) -> Any:
        if is_spilled_shape(value):
            return self.read_pointer(next(iter(value.values())))
        return value

    # --- delegation ------------------------------------------------------------------------------------------

    def build_message_key(self, message: AnyMessage) -> str:
        return str(self.backend.build_message_key(message))

    def _get(self, message_key: str) -> Any:
        return self.backend._get(message_key)

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        self.backend._store(message_key, result, ttl)


class _Unstorable(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _escape(result: Any) -> Any:
    if looks_like_pointer(result) or (isinstance(result, dict) and len(result) == 1 and LITERAL_KEY in result):
        return {LITERAL_KEY: result}
    return result


_PRESENCE_CODES: set[CodeType] = set()


def _checking_presence() -> bool:
    if not _PRESENCE_CODES:
        from dramatiq.composition import group, pipeline

        properties: list[Any] = [pipeline.completed, pipeline.completed_count, group.completed_count]
        for prop in properties:
            _PRESENCE_CODES.add(prop.fget.__code__)
    frame = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            return False
        if frame.f_code in _PRESENCE_CODES:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


#: The longest single blocking read on the wrapped backend, in milliseconds (whole seconds: Redis rounds down).
_BLOCK_SLICE = 2_000


def find_spilling_backend(broker: dramatiq.Broker) -> SpillingBackend | None:
    """The ``SpillingBackend`` of the broker's Results middleware (ours or Dramatiq's), or ``None``."""
    for middleware in broker.middleware:
        if isinstance(middleware, DramatiqResults) and isinstance(middleware.backend, SpillingBackend):
            return middleware.backend
    return None


def get_pointer(
    message: AnyMessage,
    *,
    backend: SpillingBackend | None = None,
    block: bool = False,
    timeout: int | None = None,
) -> str | None:
    """The raw pointer string stored for ``message``'s result, without reading the blob; ``None`` when the result
    is stored inline.

    Parameters:
      message: The message whose result to look up.
      backend: The spilling backend (default: the one on the global broker).
      block: Wait for the result, as ``message.get_result`` does.
      timeout: How long to wait, in milliseconds (default 10 s).

    Raises:
      ConfigurationError: no SpillingBackend was given or found on the global broker.
      ResultMissing, ResultTimeout, ResultFailure: as ``message.get_result``.
    """
    if backend is None:
        backend = find_spilling_backend(dramatiq.get_broker())
    if not isinstance(backend, SpillingBackend):
        raise ConfigurationError(
            "get_pointer needs a SpillingBackend: pass backend=..., or add dramatiq_ray.Results to the broker."
        )
    stored = backend.backend.get_result(message, block=block, timeout=timeout)
    return stored if looks_like_pointer(stored) else None
