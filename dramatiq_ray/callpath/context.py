"""The message being processed, wherever the actor body runs.

Dramatiq's own ``CurrentMessage`` middleware keeps the message in a thread-local of the worker process, so it is
empty inside a Ray task. :func:`current_message` works in both places: in a Ray task started by
:class:`~dramatiq_ray.RayExecutionMiddleware` it returns the copy of the message that travelled with the task; in
a worker thread (an actor with ``ray=False``) it returns the message that thread is processing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from dramatiq import Message

__all__ = ["current_message"]

_current: ContextVar[Message[Any] | None] = ContextVar("dramatiq_ray_current_message", default=None)


def current_message() -> Message[Any] | None:
    """Return the Dramatiq message whose actor body is running, or ``None`` outside of one.

    The message carries ``message_id``, ``actor_name``, ``queue_name``, ``args``, ``kwargs`` and ``options``
    (``options.get("retries", 0)`` is the number of earlier attempts). Inside a Ray task it is a copy: changing
    it changes nothing in the worker.

    Example::

        @dramatiq.actor(store_results=True)
        def train(config):
            message = current_message()
            checkpoint_dir = f"s3://checkpoints/{message.message_id}"
    """
    return _current.get()


@contextlib.contextmanager
def _processing(message: Message[Any] | None) -> Iterator[None]:
    token = _current.set(message)
    try:
        yield
    finally:
        _current.reset(token)
