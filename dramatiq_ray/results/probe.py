"""The check a worker runs on its result store at boot, before it consumes any message."""

from __future__ import annotations

import logging

from ..errors import StoreUnavailableError
from .backend import SpillingBackend

__all__ = ["check_store_at_boot", "digest_only_warning"]

logger = logging.getLogger(__name__)


def check_store_at_boot(backend: SpillingBackend) -> None:
    """Write, read back and delete a probe blob in ``backend``'s store; say so at WARNING when results over
    ``max_inline_bytes`` would keep only their digest.

    Raises:
      StoreUnavailableError: the store failed its probe (logged once at ERROR, naming the store).
    """
    try:
        done = backend.probe_store()
    except Exception as error:
        store = backend.store.describe() if backend.store is not None else "the store"
        message = (
            f"{store} failed its probe at worker boot ({type(error).__name__}: {error}): this worker would "
            "lose every result over max_inline_bytes, so it does not start. Fix the store (path, bucket, "
            "credentials, permissions), or the RESULT_STORAGE_* settings / the store passed to Results."
        )
        logger.error("%s", message)
        raise StoreUnavailableError(message) from error
    logger.debug("%s", done)
    digest_only = digest_only_warning(backend)
    if digest_only is not None:
        logger.warning("%s", digest_only)


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
