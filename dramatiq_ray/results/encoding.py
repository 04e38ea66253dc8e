"""The argument encoder: Dramatiq's encoder, with big arguments of marked messages sent by reference.

Dramatiq's ``Message`` cannot be changed once built and its arguments are only turned into bytes by the broker's
encoder (``Message.encode``, called by every broker's ``enqueue``), so the encoder is the one place every way of
sending passes through. :class:`ArgumentEncoder` wraps whichever encoder is in use (``dramatiq.set_encoder``, the
documented extension point); it is installed where offloading is configured (``Results(max_inline_arg_bytes=...)``
or an actor option), and changes nothing but the messages ``Results.before_enqueue`` marked, in the same thread,
just before ``enqueue`` encodes them. What an argument becomes is :mod:`dramatiq_ray.payloads.arguments`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import dramatiq
from dramatiq.encoder import Encoder

__all__ = ["ArgumentEncoder", "install_encoder", "offer"]

logger = logging.getLogger(__name__)

# The message about to be encoded in this thread, and what to do to it: set by Results.before_enqueue (see offer).
_offered: ContextVar[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]] | None] = ContextVar(
    "dramatiq_ray_offered", default=None
)
_install_lock = threading.Lock()


def install_encoder() -> None:
    """Wrap the global encoder in :class:`ArgumentEncoder`, once (logged); a no-op when it already is."""
    if isinstance(dramatiq.get_encoder(), ArgumentEncoder):
        return
    with _install_lock:
        current = dramatiq.get_encoder()
        if not isinstance(current, ArgumentEncoder):
            dramatiq.set_encoder(ArgumentEncoder(current))
            logger.info(
                "Arguments over max_inline_arg_bytes are sent by reference: %s wraps %s.",
                ArgumentEncoder.__name__,
                type(current).__name__,
            )


def offer(message_id: str, offload: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Have the next encoding of message ``message_id`` in this thread go through ``offload`` first (the
    encoder is installed when it is not there yet: a message option on a Results configured without one)."""
    install_encoder()
    _offered.set((message_id, offload))


class ArgumentEncoder(Encoder):
    """Dramatiq's encoder, with big arguments of marked messages sent by reference (see the module docstring).

    Installed by dramatiq-ray's ``Results`` the first time a message is sent with ``max_inline_arg_bytes`` set;
    it wraps the encoder in use then (JSON by default), and encodes and decodes everything else as that one does.
    """

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner

    def encode(self, data: Any) -> bytes:
        offered = _offered.get()
        if offered is not None and isinstance(data, dict) and data.get("message_id") == offered[0]:
            _offered.set(None)
            data = offered[1](data)
        return self.inner.encode(data)

    def decode(self, data: bytes) -> Any:
        return self.inner.decode(data)
