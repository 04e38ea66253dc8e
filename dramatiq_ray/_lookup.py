"""Looking an option up as Dramatiq does: the message's options, then the actor's, then the middleware default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["lookup_option"]


def lookup_option(
    message_options: Mapping[str, Any], actor_options: Mapping[str, Any], names: tuple[str, ...], default: Any
) -> Any:
    """The first of ``names`` set on the message, else on the actor, else ``default``."""
    for options in (message_options, actor_options):
        for name in names:
            if name in options:
                return options[name]
    return default
