"""Every exception the library raises, in one place.

Each class refines the Dramatiq error it belongs with (``ResultError`` for result problems, ``DramatiqError``
otherwise), so code that already catches Dramatiq's errors keeps working. Every message says what to do.
"""

from __future__ import annotations

from typing import Any

from dramatiq.errors import DramatiqError
from dramatiq.middleware import MiddlewareError, SkipMessage
from dramatiq.results.errors import ResultError

__all__ = [
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobReadError",
    "BlobStoreError",
    "BlobWriteError",
    "ConfigurationError",
    "DecryptionError",
    "DigestOnlyResultError",
    "DramatiqRayError",
    "ForeignPointerError",
    "InvalidPointerError",
    "MessageCancelledError",
    "MissingDependencyError",
    "PickleNotAllowedError",
    "PresignError",
    "RayExecutionError",
    "RayJobStuckError",
    "RayNodeDiedError",
    "RayObjectLostError",
    "RayOptionsError",
    "RayOutOfMemoryError",
    "RaySystemError",
    "RayTaskCancelledError",
    "RayUnavailableError",
    "RayWorkerCrashedError",
    "RemoteExceptionError",
    "ReplicaError",
    "ReplicaSetupError",
    "ReplicaUnavailableError",
    "ResultBackendError",
    "RetryOptionsError",
    "SchemaVersionError",
    "SpilledResultError",
    "StoreUnavailableError",
    "UnsupportedResultError",
    "WebhookSignatureError",
]


def _rebuild(cls: type[DramatiqRayError], message: str, state: dict[str, Any]) -> DramatiqRayError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.message = message
    error.__dict__.update(state)
    return error


class DramatiqRayError(DramatiqError):
    """Base class of every error raised by dramatiq-ray.

    Instances pickle with all their attributes, so they cross process and Ray boundaries intact.
    """

    message: str

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        state = {key: value for key, value in self.__dict__.items() if key != "message"}
        return (_rebuild, (type(self), self.message, state))


# --- configuration -------------------------------------------------------------------------------------------


class ConfigurationError(DramatiqRayError, ValueError, MiddlewareError):
    """The library was configured wrongly. ``problems`` lists every problem found, one sentence each.

    It is a ``MiddlewareError`` so that Dramatiq lets it out of middleware hooks: a bad actor option fails the
    ``@actor(...)`` declaration, a bad message option fails the send, and a worker that cannot run its messages
    as configured does not start.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems) if problems else [message]
        super().__init__(message)


class MissingDependencyError(DramatiqRayError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` line that adds it."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        super().__init__(
            f"{feature} needs the {module!r} package, which is not installed. "
            f'Install it with: pip install "dramatiq-ray[{extra}]"'
        )


# --- results that spill --------------------------------------------------------------------------------------


class SpilledResultError(ResultError, DramatiqRayError):
    """Base class of the errors raised while storing or reading a spilled result."""


class InvalidPointerError(SpilledResultError, ValueError):
    """A string was expected to be a blob pointer but does not follow the pointer grammar."""


class ForeignPointerError(InvalidPointerError):
    """A pointer names a bucket, prefix or root other than the configured store's; nothing was requested."""


class DigestOnlyResultError(SpilledResultError):
    """The result was too large to keep inline and only its digest was kept (``DigestStore``, or a fallback
    after a store failure). ``digest`` and ``size`` describe the value that was produced."""

    def __init__(self, message: str, *, digest: str, size: int, pointer: str) -> None:
        self.digest = digest
        self.size = size
        self.pointer = pointer
        super().__init__(message)


class BlobReadError(SpilledResultError):
    """A spilled result could not be read from its store (outage, permissions). Reading again after the store
    recovers returns the value. Unlike ``ResultMissing``, this does not mean "not done yet"."""

    def __init__(self, message: str, *, pointer: str) -> None:
        self.pointer = pointer
        super().__init__(message)


class BlobNotFoundError(BlobReadError):
    """The blob a pointer names does not exist (deleted by lifecycle rules or by hand)."""


class MissingArgumentError(BlobNotFoundError):
    """An argument sent by reference (``max_inline_arg_bytes``) is no longer in the store: its message can never
    run, so dramatiq-ray's Retries fails it at once (with Dramatiq's own Retries, add it to the actor's
    ``throws``). ``argument`` names it: ``"args[0]"`` or ``"kwargs['image']"``."""

    def __init__(self, message: str, *, pointer: str, argument: str) -> None:
        self.argument = argument
        super().__init__(message, pointer=pointer)


class BlobIntegrityError(BlobReadError):
    """A blob's size or SHA-256 does not match its pointer; its contents are never returned."""


class BlobStoreError(DramatiqRayError):
    """A blob store operation failed. Raised by stores; when writing a result it fails the message (or, with
    ``on_store_error="digest"``, keeps only a digest); when reading it becomes a ``BlobReadError``."""


class BlobWriteError(BlobStoreError):
    """A blob could not be written to its store."""


class StoreUnavailableError(BlobStoreError, MiddlewareError):
    """The blob store failed its probe at worker boot (write, read back, delete): the worker does not start, so it
    consumes no message whose result it could not keep."""


# --- running on Ray ------------------------------------------------------------------------------------------


class RayExecutionError(DramatiqRayError):
    """Base class of the errors raised while running an actor body on Ray."""


class RayOptionsError(ConfigurationError):
    """An actor's or message's ``ray_options`` are not valid Ray task options."""


class RemoteExceptionError(RayExecutionError):
    """The actor raised an exception on Ray that could not be sent back as itself (it did not pickle).

    ``type_name`` is its dotted class name and ``remote_traceback`` the traceback text from the Ray worker.
    """

    def __init__(self, message: str, *, type_name: str, remote_traceback: str) -> None:
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        super().__init__(message)


class RaySystemError(RayExecutionError):
    """Ray failed to run the task for a reason outside the actor's code. Retryable by default."""


class RayWorkerCrashedError(RaySystemError):
    """The Ray worker process running the task died."""


class RayNodeDiedError(RaySystemError):
    """The Ray node running the task died."""


class RayOutOfMemoryError(RaySystemError):
    """Ray killed the task because its node ran out of memory."""


class RayObjectLostError(RaySystemError):
    """The task's result object was lost before it could be read."""


class RayTaskCancelledError(RaySystemError):
    """The Ray task was cancelled (by a time limit, a shutdown or an operator)."""


class RayUnavailableError(RaySystemError):
    """Ray could not be reached (not started, head restarted, local raylet died)."""


class RayJobStuckError(RaySystemError):
    """A Ray job of the ``ray_job`` runner made no progress for ``stuck_timeout`` seconds and was stopped; retried
    like any Ray system failure."""


# --- replicas ------------------------------------------------------------------------------------------------


class ReplicaError(RayExecutionError):
    """Base class of the errors of warm replicas (``replicas=dramatiq_ray.Replicas(...)``); also raised by
    :func:`dramatiq_ray.replica_state` outside a replica."""


class ReplicaSetupError(ReplicaError):
    """The ``setup`` of an actor's replicas raised: no replica can run its messages until a later attempt (with
    backoff) succeeds. ``remote_traceback`` is setup's traceback. Fix setup, or the resources it needs."""

    def __init__(self, message: str, *, remote_traceback: str = "") -> None:
        self.remote_traceback = remote_traceback
        super().__init__(message)


class ReplicaUnavailableError(RaySystemError, ReplicaError):
    """The pool of replicas cannot take the message now (it is draining for a new version, or stopped);
    retried like any Ray system failure, by which time a worker with the current version takes it."""


class MessageCancelledError(DramatiqRayError, SkipMessage):
    """The message was cancelled (``dramatiq_ray.cancel``): skipped before its body ran, or stopped while it ran.

    It is the failure stored for the message (``get_result`` raises ``ResultFailure`` with ``orig_exc_type``
    ``"MessageCancelledError"``) and it is never retried: a ``SkipMessage`` that fails the message, so Dramatiq
    skips it (no retry, no pipeline step, no ``on_success``) and nacks it. ``message_id`` names the message.
    """

    def __init__(self, message: str, *, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(message)


# --- retries -------------------------------------------------------------------------------------------------


class RetryOptionsError(ConfigurationError, MiddlewareError):
    """An actor's or message's retry options are invalid (``max_attempts``, ``retry_denylist``, backoff...).

    It is a ``MiddlewareError`` so that Dramatiq lets it through its hooks: the ``@actor(...)`` declaration or
    the ``send_with_options(...)`` call with the bad option raises it, and nothing is declared or enqueued.
    """


# --- result codecs, compression and encryption ---------------------------------------------------------------


class UnsupportedResultError(DramatiqRayError, TypeError):
    """An actor returned a value that no result codec can store (and pickling was not allowed)."""

    def __init__(self, message: str, *, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(message)


class PickleNotAllowedError(SpilledResultError):
    """A stored result is a pickle and the reader did not set ``allow_pickle=True``: it is never unpickled."""


class DecryptionError(SpilledResultError):
    """An encrypted result could not be decrypted: its key id is not configured, or authentication failed (the
    blob was altered, truncated, or encrypted with another key). Nothing decrypted is ever returned."""

    def __init__(self, message: str, *, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(message)


# --- result delivery: presigned URLs and webhooks ------------------------------------------------------------


class PresignError(SpilledResultError):
    """A download URL could not be made for a spilled result: the store has no URLs (``FilesystemStore``,
    ``DigestStore``), or its credentials cannot sign (GCS without a service-account key). The message says which
    store and what to configure; ``get_result()`` still reads the value."""


class WebhookSignatureError(DramatiqRayError, ValueError):
    """A webhook request failed verification: its signature header is missing or malformed, its timestamp is
    outside the tolerance, or no signature matches any of the secrets. Answer it with 400 and do not act on it."""


# --- the SQL result backend ----------------------------------------------------------------------------------


class ResultBackendError(ResultError, DramatiqRayError):
    """The result backend's database could not be reached to store or read a result (after retrying for its
    ``store_timeout`` when storing), or any result backend behind ``dramatiq_ray.Results`` failed to store an
    outcome: the attempt fails with it (nothing downstream is sent for it) and the retry policy runs the message
    again, rather than acknowledge it with no result. Unlike ``ResultMissing``, this does not mean "not done
    yet"."""


class SchemaVersionError(ConfigurationError):
    """The result tables' schema version does not match this version of dramatiq-ray: newer (upgrade
    dramatiq-ray), or older with ``migrate=False`` (migrate them)."""
