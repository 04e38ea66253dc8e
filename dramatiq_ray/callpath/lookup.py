"""Looking an option up as Dramatiq does: the message's options, then the actor's, then the middleware default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..payloads.plan import CODEC_OPTIONS

__all__ = ["codec_options_for", "lookup_option"]


def lookup_option(
    message_options: Mapping[str, Any], actor_options: Mapping[str, Any], names: tuple[str, ...], default: Any
) -> Any:
    """The first of ``names`` set on the message, else on the actor, else ``default``."""
    for options in (message_options, actor_options):
        for name in names:
            if name in options:
                return options[name]
    return default


def codec_options_for(
    message_options: Mapping[str, Any], actor_options: Mapping[str, Any], defaults: Any
) -> dict[str, Any]:
    """The codec options (``allow_pickle``, ``compression``, ``compression_level``) of a message: each looked up
    on the message, then the actor, then the attribute of the same name on ``defaults`` (a SpillingBackend)."""
    return {
        name: lookup_option(message_options, actor_options, (name,), getattr(defaults, name)) for name in CODEC_OPTIONS
    }
