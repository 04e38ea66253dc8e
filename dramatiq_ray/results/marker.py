"""The in-flight marker of a spilled value, and the escape of values that look like pointers."""

from __future__ import annotations

from typing import Any

__all__ = ["LITERAL_KEY", "SPILLED_KEY", "SpilledResult", "is_spilled_shape"]

#: The single key of a spilled-value marker: ``{"__dramatiq_ray_spilled__": "<pointer>"}``.
SPILLED_KEY = "__dramatiq_ray_spilled__"
#: The single key of an escaped user value stored in a result backend: ``{"__dramatiq_ray_literal__": value}``.
LITERAL_KEY = "__dramatiq_ray_literal__"


class SpilledResult(dict[str, str]):
    """A value that was written to a blob store, standing in for it while it travels.

    It is a ``dict`` so that every encoder and every middleware (Results, Pipelines, Callbacks) handles it as
    an ordinary JSON object: ``{"__dramatiq_ray_spilled__": "<pointer>"}``. The results backend stores an
    instance of this class as its pointer without spilling again; an actor receiving one as an argument gets
    the hydrated value.
    """

    def __init__(self, pointer: str) -> None:
        super().__init__({SPILLED_KEY: pointer})

    @property
    def pointer(self) -> str:
        """The pointer string."""
        return self[SPILLED_KEY]

    def __reduce__(self) -> tuple[Any, ...]:
        return (SpilledResult, (self.pointer,))

    def __repr__(self) -> str:
        return f"SpilledResult({self.pointer!r})"


def is_spilled_shape(value: object) -> bool:
    """True for a ``SpilledResult`` or a plain dict of the same shape (what a broker message delivers)."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(SPILLED_KEY), str)
