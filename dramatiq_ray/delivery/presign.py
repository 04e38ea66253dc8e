"""Download URLs for spilled results: ``get_result_url(message)`` hands a client a URL to fetch the blob from the
store directly, so large results never pass through the application."""

from __future__ import annotations

import dramatiq

from ..errors import ConfigurationError, DigestOnlyResultError, PresignError
from ..payloads.pointers import Pointer, parse_pointer
from ..payloads.stores.base import BlobStore
from ..results.access import find_spilling_backend, get_pointer
from ..results.backend import AnyMessage, SpillingBackend

__all__ = ["get_result_url", "presign_pointer"]


def presign_pointer(store: BlobStore | None, pointer: Pointer | str, expires_in: int) -> str:
    """A download URL for ``pointer`` from ``store``, valid ``expires_in`` seconds.

    Raises:
      DigestOnlyResultError: only the result's digest was kept: there is nothing to download.
      PresignError: there is no store, or it cannot sign URLs.
      ForeignPointerError, InvalidPointerError, ConfigurationError: as :meth:`BlobStore.presign`.
    """
    parsed = parse_pointer(pointer) if isinstance(pointer, str) else pointer
    if parsed.scheme == "oversize":
        raise DigestOnlyResultError(
            f"The result ({parsed.size} bytes, SHA-256 {parsed.digest}) was too large to keep inline and only its "
            "digest was kept: there is nothing to download.",
            digest=parsed.digest,
            size=parsed.size,
            pointer=parsed.raw,
        )
    if store is None:
        raise PresignError(
            f"The result was spilled to {parsed.raw!r} but this backend has no store to sign a URL with; configure "
            "the store that wrote it."
        )
    return store.presign(parsed, expires_in)


def get_result_url(
    message: AnyMessage,
    expires_in: int = 3600,
    *,
    backend: SpillingBackend | None = None,
    block: bool = False,
    timeout: int | None = None,
) -> str | None:
    """A URL from which a client downloads ``message``'s spilled result straight from the store, valid for
    ``expires_in`` **seconds** (as S3's and GCS's own APIs count them; 1 s to 7 days). ``None`` when the result
    is small enough to be kept inline: read it with ``message.get_result()``.

    The URL downloads the bytes as stored. The pointer (:func:`dramatiq_ray.get_pointer`) says how to read them:
    their SHA-256 and size are the pointer's ``<hex>`` and ``bytes=``; without further parameters they are the
    result's JSON; ``&codec=`` names another serialization (``raw`` bytes, ``npy``, ``arrow``, ``pickle``), ``&z=``
    a compression to undo, and ``&k=`` the id of the AES-256-GCM key they are encrypted with (a client then needs
    that key). The blob is never downloaded here: only the pointer is read from the result backend.

    Example::

        url = get_result_url(message, expires_in=600)   # hand this to a browser or another service

    Parameters:
      message: The message whose result to hand out.
      expires_in: How long the URL stays valid, in seconds (default one hour).
      backend: The spilling backend (default: the one on the global broker).
      block: Wait for the result, as ``message.get_result`` does.
      timeout: How long to wait, in milliseconds (default 10 s).

    Raises:
      ConfigurationError: no SpillingBackend was given or found, or ``expires_in`` is out of range.
      ResultMissing, ResultTimeout, ResultFailure: as ``message.get_result``.
      DigestOnlyResultError: only the digest of the result was kept.
      PresignError: the store cannot make URLs (``FilesystemStore``, ``DigestStore``) or its credentials cannot
        sign.
    """
    if backend is None:
        backend = find_spilling_backend(dramatiq.get_broker())
    if not isinstance(backend, SpillingBackend):
        raise ConfigurationError(
            "get_result_url needs a SpillingBackend: pass backend=..., or add dramatiq_ray.Results to the broker."
        )
    pointer = get_pointer(message, backend=backend, block=block, timeout=timeout)
    if pointer is None:
        return None
    return presign_pointer(backend.store, pointer, expires_in)
