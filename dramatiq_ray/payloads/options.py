"""The options of the payload layer, each checked in one place: constructors, actor and message options, and
settings all call these functions (the ``*_problem`` forms say what is wrong, for the settings' own messages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .compression import check_compression

if TYPE_CHECKING:
    from .stores.base import BlobStore

__all__ = [
    "CODEC_OPTIONS",
    "DEFAULT_MAX_INLINE_BYTES",
    "MAX_INLINE_ARG_BYTES_OPTION",
    "MAX_INLINE_BYTES_OPTION",
    "ON_STORE_ERROR",
    "byte_threshold_problem",
    "check_arg_threshold",
    "check_codec_options",
    "check_on_store_error",
    "check_threshold",
    "on_store_error_problem",
    "require_blob_store",
]

#: Results whose encoded size is at most this many bytes stay in the result backend (1 MiB).
DEFAULT_MAX_INLINE_BYTES = 1024 * 1024
#: The actor (and message) option overriding the threshold.
MAX_INLINE_BYTES_OPTION = "max_inline_bytes"


#: What a store failure does to a result: ``"fail"`` fails the message (retryably); ``"digest"`` keeps only the
#: result's digest (reading it raises DigestOnlyResultError).
ON_STORE_ERROR = ("fail", "digest")


def check_on_store_error(value: object, where: str) -> str:
    """Return ``value`` when it is one of :data:`ON_STORE_ERROR`.

    Raises:
      ConfigurationError: it is not.
    """
    problem = on_store_error_problem(value)
    if problem:
        raise ConfigurationError(f"{where} on_store_error {problem}.")
    return str(value)


def on_store_error_problem(value: object) -> str | None:
    """What is wrong with an ``on_store_error`` value (the setting RESULT_ON_STORE_ERROR too), or ``None``."""
    return None if value in ON_STORE_ERROR else f"must be one of {', '.join(ON_STORE_ERROR)}, not {value!r}"


#: The actor and message options of the codec layer (looked up message, then actor, then the backend's default).
CODEC_OPTIONS = ("allow_pickle", "compression", "compression_level")


def check_codec_options(options: dict[str, Any], where: str) -> None:
    """Check ``allow_pickle``, ``compression`` and ``compression_level`` among ``options`` (absent ones pass).

    Raises:
      ConfigurationError: one is invalid.
    """
    if "allow_pickle" in options and not isinstance(options["allow_pickle"], bool):
        raise ConfigurationError(f"{where} allow_pickle must be True or False, got {options['allow_pickle']!r}.")
    if "compression" in options or "compression_level" in options:
        check_compression(options.get("compression"), options.get("compression_level"), where)


def check_threshold(value: object, where: str) -> int:
    """Return ``value`` when it is a valid threshold (an ``int`` >= 0).

    Raises:
      ConfigurationError: it is not.
    """
    problem = byte_threshold_problem(value)
    if problem:
        raise ConfigurationError(f"{where} max_inline_bytes {problem} (0 spills every result).")
    assert isinstance(value, int)
    return value


def byte_threshold_problem(value: object) -> str | None:
    """What is wrong with a size threshold in bytes (``max_inline_bytes``, ``max_inline_arg_bytes`` and the
    settings MAX_RESULT_SIZE_BYTES and MAX_ARG_SIZE_BYTES), or ``None``: it must be an ``int`` >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"must be an integer number of bytes >= 0, not {value!r}"
    return None


#: The Results, actor and message option: arguments whose encoded size is over this many bytes are sent by
#: reference (``None``, the default: never).
MAX_INLINE_ARG_BYTES_OPTION = "max_inline_arg_bytes"


def check_arg_threshold(value: object, where: str) -> int | None:
    """Return ``value`` when it is ``None`` or an ``int`` >= 0.

    Raises:
      ConfigurationError: it is not.
    """
    if value is None:
        return None
    problem = byte_threshold_problem(value)
    if problem:
        raise ConfigurationError(
            f"{where} max_inline_arg_bytes must be None (send arguments inline) or an integer number of bytes >= 0 "
            f"(arguments whose encoded size is over it are sent by reference), not {value!r}."
        )
    assert isinstance(value, int)
    return value


def require_blob_store(store: BlobStore | None, need: str, *, instead: str | None = None) -> BlobStore:
    """Return ``store`` when it keeps blobs (not ``None``, not a ``DigestStore``): sending arguments by reference
    and the ``ray_job`` runner need one. ``need`` says what needs it; ``instead`` is another way out, if any.

    Raises:
      ConfigurationError: it keeps none (the message says what to configure).
    """
    if store is not None and store.persistent:
        return store
    kept = f"{store.describe()} keeps no blobs" if store is not None else "there is no blob store"
    raise ConfigurationError(
        f"{need}, and {kept}: pass store=FilesystemStore(...), S3Store(...) or GCSStore(...) to dramatiq_ray.Results "
        f"(or set RESULT_STORAGE_BACKEND to filesystem, s3 or gcs){f', or {instead}' if instead else ''}."
    )
