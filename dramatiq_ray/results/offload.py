"""Arguments by reference, as ``dramatiq_ray.Results`` sends and releases them.

With ``max_inline_arg_bytes`` (on ``Results``, an actor or a message), arguments whose encoded size is over the
threshold are written to the result store's ``args`` child when the message is sent and replaced by pointers
(:mod:`dramatiq_ray.payloads.arguments` says what an argument becomes, :mod:`dramatiq_ray.results.encoding`
where the message dict is changed); the blobs are deleted when the message is done for good.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import dramatiq
from dramatiq.errors import ActorNotFound

from ..callpath.lookup import codec_options_for, lookup_option
from ..payloads import arguments
from ..payloads.arguments import MAX_INLINE_ARG_BYTES_OPTION, check_arg_threshold, held_pointers
from ..payloads.plan import ARGUMENTS_NEED, require_blob_store
from ..payloads.stores.base import ARGS_CHILD, BlobStore
from . import encoding
from .backend import SpillingBackend

__all__ = ["ArgumentOffload"]


class ArgumentOffload:
    """Send a broker's big arguments by reference through ``backend``'s store, and delete them when done.

    Parameters:
      backend: The ``SpillingBackend`` whose store keeps the arguments (its ``args`` child), and whose codec
        options they are encoded with.
      threshold: The middleware default of ``max_inline_arg_bytes``, in bytes (``None``: only actors or messages
        that set the option send arguments by reference).

    Raises:
      ConfigurationError: ``threshold`` is invalid, or it is set and the store keeps no blobs.
    """

    def __init__(self, backend: SpillingBackend, threshold: int | None) -> None:
        self.backend = backend
        self.threshold = check_arg_threshold(threshold, "Results:")
        self._cached_store: BlobStore | None = None
        if self.threshold is not None:
            self.store()  # refuse a store that keeps nothing now, not at the first send
        self._active = self.threshold is not None
        if self._active:
            encoding.install_encoder()  # configured here: every send from now on goes through it

    def declare(self, actor: dramatiq.Actor[Any, Any]) -> None:
        """Take note of an actor declared with ``max_inline_arg_bytes``: its sends go through the encoder."""
        if actor.options.get(MAX_INLINE_ARG_BYTES_OPTION) is not None:
            self.store()
            self._active = True
            encoding.install_encoder()

    def offer(self, broker: dramatiq.Broker, message: dramatiq.Message[Any]) -> None:
        """Hand ``message``, about to be sent, to the encoder, when its arguments may go by reference."""
        if self._active or message.options.get(MAX_INLINE_ARG_BYTES_OPTION) is not None:
            encoding.offer(message.message_id, functools.partial(self.offload, broker))

    def store(self) -> BlobStore:
        """Where arguments sent by reference live.

        Raises:
          ConfigurationError: the result store keeps no blobs (none, or a ``DigestStore``).
        """
        if self._cached_store is None:
            self._cached_store = require_blob_store(self.backend.store, ARGUMENTS_NEED).child(ARGS_CHILD)
        return self._cached_store

    def offload(self, broker: dramatiq.Broker, data: dict[str, Any]) -> dict[str, Any]:
        """The message dict as it is sent: big arguments by reference, in it and in the pipeline it leads."""
        try:
            actor_options = broker.get_actor(data["actor_name"]).options
        except ActorNotFound:
            actor_options = {}
        options = data.get("options") or {}
        threshold = lookup_option(options, actor_options, (MAX_INLINE_ARG_BYTES_OPTION,), self.threshold)
        if threshold is not None:
            backend = self.backend
            codec = codec_options_for(options, actor_options, backend)
            self.store()  # refuse a store that keeps nothing
            limit = check_arg_threshold(threshold, f"Actor {data['actor_name']!r}:")
            data = dataclasses.replace(backend.plan(None, **codec), max_inline_arg_bytes=limit).offload(data)
        target = (data.get("options") or {}).get("pipe_target")
        if isinstance(target, dict) and "message_id" in target:
            data = {**data, "options": {**data["options"], "pipe_target": self.offload(broker, target)}}
        return data

    def release(self, message: dramatiq.MessageProxy) -> None:
        """Delete the blobs of ``message``'s arguments sent by reference (it is done for good)."""
        pointers = held_pointers(message.args, message.kwargs)
        if pointers and self.backend.store is not None and self.backend.store.persistent:
            arguments.release(self.store(), message.message_id, pointers)
