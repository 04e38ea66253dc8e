"""The in-flight marker of a spilled value, and the escape of values that look like pointers."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ARGUMENT_KEY",
    "LITERAL_KEY",
    "SPILLED_KEY",
    "VALUE_KEY",
    "InlineValue",
    "SpilledResult",
    "StoredArgument",
    "is_argument_shape",
    "is_inline_shape",
    "is_literal_shape",
    "is_spilled_shape",
]

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


#: The single key of an inline value the result backend's encoder cannot carry (bytes, an array, a table):
#: ``{"__dramatiq_ray_value__": {"codec": "raw", "data": "<base64>"}}``.
VALUE_KEY = "__dramatiq_ray_value__"


class InlineValue(dict[str, dict[str, str]]):
    """A small value serialized by a codec other than JSON (``raw``, ``npy``, ``arrow``, ``pickle``), carried
    inline as base64 in a JSON object, so that the result backend, a pipeline's next message or an ``on_success``
    callback can hold it; readers turn it back into the value."""

    def __init__(self, codec: str, data: str) -> None:
        super().__init__({VALUE_KEY: {"codec": codec, "data": data}})

    def __reduce__(self) -> tuple[Any, ...]:
        inner = self[VALUE_KEY]
        return (InlineValue, (inner["codec"], inner["data"]))


def is_inline_shape(value: object) -> bool:
    """True for an :class:`InlineValue` or a plain dict of the same shape."""
    if not (isinstance(value, dict) and len(value) == 1 and isinstance(value.get(VALUE_KEY), dict)):
        return False
    inner = value[VALUE_KEY]
    return set(inner) == {"codec", "data"} and isinstance(inner["codec"], str) and isinstance(inner["data"], str)


def is_literal_shape(value: object) -> bool:
    """True for an escaped user value as stored: ``{"__dramatiq_ray_literal__": value}``."""
    return isinstance(value, dict) and len(value) == 1 and LITERAL_KEY in value


#: The single key of an argument sent by reference: ``{"__dramatiq_ray_arg__": "<pointer>"}``; the pointer names
#: a blob in the store's ``args`` child, which the message releases when it is done.
ARGUMENT_KEY = "__dramatiq_ray_arg__"


class StoredArgument(dict[str, str]):
    """An actor argument that was written to the store when its message was sent, standing in for it in the
    broker message until the body runs (see ``max_inline_arg_bytes``)."""

    def __init__(self, pointer: str) -> None:
        super().__init__({ARGUMENT_KEY: pointer})

    @property
    def pointer(self) -> str:
        """The pointer string."""
        return self[ARGUMENT_KEY]

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoredArgument, (self.pointer,))


def is_argument_shape(value: object) -> bool:
    """True for a :class:`StoredArgument` or a plain dict of the same shape (what a broker message delivers)."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(ARGUMENT_KEY), str)
