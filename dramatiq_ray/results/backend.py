"""SpillingBackend: a result backend that wraps any Dramatiq result backend, keeps small results in it and
oversized ones in a blob store, with only a pointer in the wrapped backend."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

import dramatiq
from dramatiq.results import ResultBackend

from .. import metrics
from ..errors import ConfigurationError, InvalidPointerError, SpilledResultError
from ..payloads._safe import describe_error
from ..payloads.encryption import EncryptionKeys
from ..payloads.marker import LITERAL_KEY, InlineValue, SpilledResult, is_inline_shape, is_literal_shape
from ..payloads.plan import (
    DEFAULT_MAX_INLINE_BYTES,
    MAX_INLINE_BYTES_OPTION,
    SpillPlan,
    check_codec_options,
    check_on_store_error,
    check_threshold,
)
from ..payloads.pointers import Pointer, looks_like_pointer, parse_pointer
from ..payloads.reading import read_inline, read_value
from ..payloads.stores.base import BlobStore
from ..payloads.stores.integrity import probe
from .blocking import wait_for_result

__all__ = ["AnyMessage", "SpillingBackend"]

#: A message, or the proxy a worker hands to middleware.
AnyMessage = dramatiq.Message[Any] | dramatiq.MessageProxy

logger = logging.getLogger(__name__)

#: Set while :func:`get_pointer` reads: what the backend holds comes back as it is, never read from the store.
_RAW: ContextVar[bool] = ContextVar("dramatiq_ray_raw_result", default=False)


class SpillingBackend(ResultBackend):
    """Keep results up to ``max_inline_bytes`` in ``backend``; write larger ones to ``store`` and keep a pointer.

    Size is the length of the result encoded with the backend's encoder (JSON by default). Reading a result
    returns the original value wherever it was stored, after checking its size and SHA-256, whether it is read
    through this backend or through the wrapped one (``message.get_result(backend=redis_backend)``): the wrapped
    backend's :meth:`~dramatiq.results.ResultBackend.unwrap_result`, Dramatiq's documented hook for reading what
    a backend stored, is set to this backend's :meth:`unwrap_result`. Usable with ``dramatiq_ray.Results`` (which
    adds the actor option and spills where the body runs) or on its own with ``dramatiq.results.Results``::

        backend = SpillingBackend(RedisBackend(client=client), store=FilesystemStore("/var/lib/results"))
        broker.add_middleware(dramatiq.results.Results(backend=backend))

    What the wrapped backend holds: the value itself when it fits; a pointer string when it was spilled; and
    ``{"__dramatiq_ray_literal__": value}`` when the value itself would be mistaken for a pointer (a string
    starting with a pointer scheme, or a dict of that escape shape), so users' strings round-trip unchanged.

    Reading a spilled result reads its blob, also when the caller only checks that a result exists
    (``pipeline.completed``, ``group.completed_count``); :func:`get_pointer` checks without reading.

    Parameters:
      backend: The Dramatiq result backend that stores small results and pointers (Redis, Memcached, Stub...).
      store: Where oversized results go. ``None`` never spills.
      max_inline_bytes: The largest encoded size kept inline, in bytes. Messages override it with the
        ``max_inline_bytes`` option (and actors too, with ``dramatiq_ray.Results``).
      on_store_error: When the store cannot take an oversized result: ``"fail"`` (default) fails the message,
        logged at ERROR, and the retry policy decides; ``"digest"`` keeps only the result's digest, with a
        WARNING (reading it raises ``DigestOnlyResultError``, saying it was such a fallback).

    Raises:
      ConfigurationError: an argument is invalid.
    """

    def __init__(
        self,
        backend: ResultBackend,
        *,
        store: BlobStore | None = None,
        max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
        on_store_error: str = "fail",
        allow_pickle: bool = False,
        compression: str | None = None,
        compression_level: int | None = None,
        encryption: EncryptionKeys | None = None,
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
        check_on_store_error(on_store_error, "SpillingBackend")
        check_codec_options(
            {"allow_pickle": allow_pickle, "compression": compression, "compression_level": compression_level},
            "SpillingBackend",
        )
        if encryption is not None and not isinstance(encryption, EncryptionKeys):
            raise ConfigurationError(f"encryption must be an EncryptionKeys or None, got {type(encryption).__name__}.")
        super().__init__(
            namespace=backend.namespace,
            encoder=backend.encoder,
            use_namespace_prefix_keys=getattr(backend, "use_namespace_prefix_keys", False),
        )
        self.backend = backend
        self.store = store
        self.max_inline_bytes = max_inline_bytes
        self.on_store_error = on_store_error
        self.allow_pickle = allow_pickle
        self.compression = compression
        self.compression_level = compression_level
        self.encryption = encryption
        # The one place the drop-in promise needs more than an extension point: users keep reading through the
        # backend they passed to Results (``message.get_result(backend=redis_backend)``, Dramatiq's own tests), so
        # that backend must return original values too. ``unwrap_result`` is Dramatiq's documented hook for reading
        # what a backend stored; it is set on that one instance (never on its class or module): its class's own
        # unwrapping first, then ours.
        self._unwrap_stored = type(backend).unwrap_result.__get__(backend)
        backend.unwrap_result = self.unwrap_result  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return (
            f"SpillingBackend({self.backend!r}, store={self.store!r}, max_inline_bytes={self.max_inline_bytes}, "
            f"on_store_error={self.on_store_error!r})"
        )

    def plan(self, max_inline_bytes: int | None, **options: Any) -> SpillPlan:
        """The spill plan for a result with this threshold (``None``: the result is not forwarded anywhere), with
        this backend's ``allow_pickle``, ``compression`` and ``compression_level`` unless ``options`` give them."""
        return SpillPlan(
            self.store,
            self.encoder,
            max_inline_bytes,
            self.on_store_error,
            allow_pickle=options.get("allow_pickle", self.allow_pickle),
            compression=options.get("compression", self.compression),
            compression_level=options.get("compression_level", self.compression_level),
            encryption=self.encryption,
        )

    # --- storing ---------------------------------------------------------------------------------------------

    def store_result(self, message: AnyMessage, result: Any, ttl: int) -> None:
        """Store ``result``, spilling it when oversized (threshold: the message's ``max_inline_bytes`` option,
        else this backend's). A result that cannot be stored is stored as a failure, so ``get_result`` raises
        ``ResultFailure`` promptly."""
        try:
            threshold = check_threshold(
                message.options.get(MAX_INLINE_BYTES_OPTION, self.max_inline_bytes),
                f"The message option of {message.actor_name!r}:",
            )
        except ConfigurationError as error:
            logger.error("%s", error)
            self.backend.store_exception(message, error, ttl)
            return
        try:
            outcome = self.plan(threshold).apply(result)
        except Exception as error:
            # Called from an after-hook, which cannot fail the message any more: store the failure (a store that
            # cannot be written, a missing extra), so that get_result raises it now instead of timing out.
            logger.error("The result of message %r is lost: %s", message.message_id, error)
            self.backend.store_exception(message, error, ttl)
            return
        self.store_outcome(message, outcome, ttl)

    def store_outcome(self, message: AnyMessage, outcome: Any, ttl: int) -> None:
        """Store what a :class:`SpillPlan` made of a result: a marker's pointer, or the value itself."""
        if isinstance(outcome, InlineValue):
            self.backend.store_result(message, outcome, ttl)
            return
        if isinstance(outcome, SpilledResult):
            try:
                pointer = parse_pointer(outcome.pointer)
            except InvalidPointerError as error:
                logger.error("%s", error)
                self.backend.store_exception(message, error, ttl)
                return
            self._record_spill(pointer)
            self.backend.store_result(message, pointer.raw, ttl)
            return
        stored = _escape(outcome)
        try:
            self.backend.store_result(message, stored, ttl)
        except Exception:
            unencodable = _encoding_error(self.encoder, stored)
            if unencodable is None:
                raise
            failure = TypeError(
                f"The result of actor {message.actor_name!r} cannot be encoded by {_encoder_name(self.encoder)} "
                f"({unencodable}); return bytes, a numpy array, an Arrow table or a DataFrame, or a value the "
                "encoder accepts (JSON: dicts, lists, strings, numbers, booleans, None); or set allow_pickle=True "
                "on Results, the actor or the message."
            )
            logger.error("%s", failure)
            self.backend.store_exception(message, failure, ttl)

    def store_exception(self, message: AnyMessage, exception: Exception, ttl: int) -> None:
        """Store a failure in the wrapped backend, exactly as Dramatiq does (failures are never spilled)."""
        self.backend.store_exception(message, exception, ttl)

    def _record_spill(self, pointer: Pointer) -> None:
        if pointer.scheme == "oversize" and self.store is not None and self.store.persistent:
            logger.warning(
                "%s could not store a %d-byte result where its actor ran; keeping only its digest "
                "(on_store_error='digest'), so reading it will raise DigestOnlyResultError.",
                self.store.describe(),
                pointer.size,
            )
            metrics.record_spill_fallback(self._store_label())
        else:
            metrics.record_spill(self._store_label(), pointer.size)

    def _store_label(self) -> str:
        return type(self.store).__name__ if self.store is not None else "none"

    def probe_store(self) -> str:
        """Write a small probe blob to the store, read it back (checking size and SHA-256) and delete it; return
        what was done, for logs. Stores that keep nothing (no store, ``DigestStore``) are not probed.

        Raises:
          Exception: whatever the store raised (``BlobWriteError``, ``BlobReadError``, a client error).
        """
        store = self.store
        if store is None or not store.persistent:
            return f"{store.describe() if store else 'no store'}: nothing to probe (large results keep no payload)"
        probe(store)
        return f"{store.describe()}: wrote, read and deleted a probe blob"

    # --- reading ---------------------------------------------------------------------------------------------

    def get_result(self, message: AnyMessage, *, block: bool = False, timeout: int | None = None) -> Any:
        """Get a result, reading it from the store when it was spilled.

        A blocking wait ends with ``ResultTimeout`` within a few tens of milliseconds of ``timeout``, sub-second
        timeouts included.

        Raises:
          ResultMissing: ``block`` is false and the result is not stored yet.
          ResultTimeout: waiting for the result timed out.
          ResultFailure: the actor failed (or its result could not be stored).
          DigestOnlyResultError: only the digest of the result was kept.
          BlobNotFoundError, BlobIntegrityError, BlobReadError: the blob is missing, corrupt or unreadable now.
          InvalidPointerError, ForeignPointerError: the stored pointer is malformed or names another store.
        """
        if not block:
            return self.backend.get_result(message, block=False)
        return wait_for_result(self.backend, message, timeout)

    def unwrap_result(self, res: Any) -> Any:
        """Turn what the wrapped backend holds back into the original value: failures raise ``ResultFailure``,
        escaped values are unescaped, pointers are read from the store (see :meth:`get_result`)."""
        stored = self._unwrap_stored(res)
        if _RAW.get():
            return stored
        if is_literal_shape(stored):
            return stored[LITERAL_KEY]
        if is_inline_shape(stored):
            return read_inline(stored, self.encoder, allow_pickle=self.allow_pickle)
        if looks_like_pointer(stored):
            return self.read_pointer(stored)
        return stored

    def read_pointer(self, pointer: Pointer | str) -> Any:
        """Read, verify and decode the value a pointer names.

        Raises:
          DigestOnlyResultError, BlobReadError (and subclasses), InvalidPointerError, ForeignPointerError.
        """
        try:
            value = read_value(
                self.store, self.encoder, pointer, allow_pickle=self.allow_pickle, encryption=self.encryption
            )
        except SpilledResultError as error:
            metrics.record_hydration_failure(self._store_label(), error)
            raise
        metrics.record_hydration(self._store_label())
        return value

    # --- delegation ------------------------------------------------------------------------------------------

    def build_message_key(self, message: AnyMessage) -> str:
        return str(self.backend.build_message_key(message))

    def _get(self, message_key: str) -> Any:
        return self.backend._get(message_key)

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        self.backend._store(message_key, result, ttl)


def _escape(result: Any) -> Any:
    if looks_like_pointer(result) or is_literal_shape(result) or is_inline_shape(result):
        return {LITERAL_KEY: result}
    return result


def _encoding_error(encoder: Any, value: Any) -> str | None:
    try:
        encoder.encode(value)
    except Exception as error:
        return describe_error(error)  # an encoder's error may quote the value
    return None


def _encoder_name(encoder: object) -> str:
    """The name of the encoder that encodes results: the one an ``ArgumentEncoder`` (arguments by reference) wraps."""
    return type(getattr(encoder, "inner", encoder)).__name__
