"""Finding a broker's spilling backend, and reading a stored pointer without reading its blob."""

from __future__ import annotations

import dramatiq
from dramatiq.results import Results as DramatiqResults

from ..errors import ConfigurationError
from ..payloads.pointers import looks_like_pointer, parse_pointer
from .backend import _RAW, AnyMessage, SpillingBackend

__all__ = ["find_spilling_backend", "get_pointer"]


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
    is stored inline. Also a cheap way to check that a spilled result exists.

    Parameters:
      message: The message whose result to look up.
      backend: The spilling backend (default: the one on the global broker).
      block: Wait for the result, as ``message.get_result`` does.
      timeout: How long to wait, in milliseconds (default 10 s).

    Raises:
      ConfigurationError: no SpillingBackend was given or found on the global broker.
      ResultMissing, ResultTimeout, ResultFailure: as ``message.get_result``.
      InvalidPointerError: what is stored starts like a pointer but is not a valid one.
    """
    if backend is None:
        backend = find_spilling_backend(dramatiq.get_broker())
    if not isinstance(backend, SpillingBackend):
        raise ConfigurationError(
            "get_pointer needs a SpillingBackend: pass backend=..., or add dramatiq_ray.Results to the broker."
        )
    token = _RAW.set(True)
    try:
        stored = backend.get_result(message, block=block, timeout=timeout)
    finally:
        _RAW.reset(token)
    if not looks_like_pointer(stored):
        return None
    return parse_pointer(stored).raw  # a malformed pointer gets the error reading it would
