"""Spilling a value where it is produced: the small, picklable plan the Ray execution area runs in its task."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dramatiq.encoder import Encoder

from ..errors import ConfigurationError
from .marker import SpilledResult
from .pointers import digest_of
from .stores.base import BlobStore

__all__ = ["DEFAULT_MAX_INLINE_BYTES", "MAX_INLINE_BYTES_OPTION", "SpillPlan", "check_threshold"]

logger = logging.getLogger(__name__)

#: Results whose encoded size is at most this many bytes stay in the result backend (1 MiB).
DEFAULT_MAX_INLINE_BYTES = 1024 * 1024
#: The actor (and message) option overriding the threshold.
MAX_INLINE_BYTES_OPTION = "max_inline_bytes"


def check_threshold(value: object, where: str) -> int:
    """Return ``value`` when it is a valid threshold (an ``int`` >= 0).

    Raises:
      ConfigurationError: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"{where} max_inline_bytes must be an integer number of bytes >= 0 (0 spills every result), got {value!r}."
        )
    return value


@dataclass(frozen=True)
class SpillPlan:
    """How to spill one message's result, in any process (a Ray worker included).

    ``apply(value)`` returns ``value`` unchanged when its encoded size is at most ``max_inline_bytes``, when it
    is already a :class:`SpilledResult`, or when it cannot be spilled here (it does not encode, or the store
    failed: the results backend then handles it as usual). Otherwise it writes the encoded value to ``store`` and
    returns a :class:`SpilledResult`, which the results backend stores as its pointer without spilling again.
    """

    store: BlobStore
    encoder: Encoder
    max_inline_bytes: int

    def apply(self, value: Any) -> Any:
        """Spill ``value`` when it is oversized; see the class docstring."""
        if isinstance(value, SpilledResult) or value is None:
            return value
        try:
            data = self.encoder.encode(value)
        except Exception:
            return value
        if len(data) <= self.max_inline_bytes:
            return value
        try:
            return SpilledResult(self.store.put(digest_of(data), data))
        except Exception as error:
            logger.warning(
                "%s could not store a %d-byte result (%s); handing the value back to the results backend.",
                self.store.describe(),
                len(data),
                error,
            )
            return value
