"""Result codecs: turn an actor's return value into bytes and back.

``encode_value`` picks the first codec that fits the value, in this order:

``raw``
    ``bytes``, ``bytearray`` and ``memoryview``. The payload is the bytes themselves (contiguous ones are not
    copied). Decodes to ``bytes``.
``npy``
    ``numpy.ndarray`` (and ``numpy.memmap``; other subclasses such as masked arrays go to pickle) without Python
    objects in it, in the ``.npy`` format: a header, then the array's own memory, as ``np.save`` writes it (C
    order, or Fortran order for a Fortran-contiguous array). A contiguous array is not copied: the payload is
    the header and a view of the array. Any other array is copied once, in C order.
    Decodes to a writable array of the same dtype, shape and values. From a buffer the caller hands over
    (``owned=True``, a ``bytearray`` just read from a store) the array uses that buffer as its memory; otherwise
    it is an independent copy.
``arrow``
    ``pyarrow.Table`` and ``pandas.DataFrame`` as an Arrow IPC stream. A DataFrame is stored with its index and
    pandas metadata and decodes to a DataFrame; a Table decodes to a Table. Needs ``pip install
    "dramatiq-ray[arrow]"`` (and pandas for DataFrames).
``json``
    Anything the message encoder accepts (Dramatiq's ``JSONEncoder`` by default). The payload is
    ``encoder.encode(value)``.
``pickle``
    Anything else, only when pickling is allowed (``allow_pickle=True``). Pickle protocol 5 with out-of-band
    buffers, so large arrays inside the value are not copied into the pickle stream. Reading a ``pickle`` payload
    also requires ``allow_pickle=True``: what a stored pointer says never makes a reader unpickle.

Pickle framing (all integers little-endian, unsigned)::

    offset  size      field
    0       4         magic b"DRPK"
    4       1         format version (1)
    5       4         n, the number of out-of-band buffers
    9       8*(n+1)   lengths: the main pickle stream, then each buffer in the order pickle produced them
    ...               the main pickle stream, then each buffer, back to back, no padding

The lengths must add up to the payload size exactly; anything else is rejected as corrupt.

numpy and pyarrow are imported only when a value or payload needs them; numpy is detected without importing it.
"""

from __future__ import annotations

import sys
from typing import Any

from dramatiq.encoder import Encoder

from ..errors import (
    InvalidPointerError,
    PickleNotAllowedError,
    UnsupportedResultError,
)
from ._safe import describe_error, shorten
from .binary_codecs import (
    decode_arrow,
    decode_npy,
    decode_pickle,
    encode_arrow,
    encode_npy,
    encode_pickle,
    import_pyarrow,
    undecodable,
)

__all__ = ["CODECS", "decode_value", "encode_parts", "undecodable"]

CODECS: tuple[str, ...] = ("json", "raw", "npy", "arrow", "pickle")

_ALLOW_PICKLE_HINT = (
    "return bytes, a numpy array, an Arrow table or a DataFrame, or a value the encoder accepts; "
    "or set allow_pickle=True on Results, the actor or the message"
)


# --- detection -----------------------------------------------------------------------------------------------


def _module_root(value: Any) -> str:
    return type(value).__module__.split(".", 1)[0]


def _is_ndarray(value: Any) -> bool:
    if _module_root(value) != "numpy" and sys.modules.get("numpy") is None:
        return False
    import numpy

    # Subclasses that carry more than the values (masked arrays, matrices) are left to pickle.
    return type(value) in (numpy.ndarray, numpy.memmap)


def _is_arrow_table(value: Any) -> bool:
    if sys.modules.get("pyarrow") is None:  # not imported (or blocked): no value can be a Table
        return False
    import pyarrow

    return isinstance(value, pyarrow.Table)


def _is_dataframe(value: Any) -> bool:
    if sys.modules.get("pandas") is None:
        return False
    import pandas

    return isinstance(value, pandas.DataFrame)


# --- encoding ------------------------------------------------------------------------------------------------


def encode_parts(
    value: Any, encoder: Encoder, *, allow_pickle: bool = False
) -> tuple[str, tuple[bytes | memoryview, ...]]:
    """Pick the codec for ``value`` and return (codec name, payload parts): the payload is the parts back to back,
    and none of them is a copy of the value's memory when the value is ``bytes``, a contiguous ``bytearray`` or
    ``memoryview``, or a contiguous numpy array. Hand the parts to a store as they are.

    Raises:
      UnsupportedResultError: no codec fits and ``allow_pickle`` is false (it is a ``TypeError``); or the value is
        a numpy array of Python objects and ``allow_pickle`` is false.
      MissingDependencyError: the value is a DataFrame and pyarrow is not installed.
    """
    if isinstance(value, bytes):
        return "raw", (value,)
    if isinstance(value, bytearray):
        # A view, not a copy: the value is stored before the actor's caller can change it.
        return "raw", (memoryview(value),)
    if isinstance(value, memoryview):
        if value.c_contiguous:
            try:
                return "raw", (value if value.format == "B" and value.ndim == 1 else value.cast("B"),)
            except TypeError:
                pass
        return "raw", (value.tobytes(),)
    if _is_ndarray(value):
        if not value.dtype.hasobject:
            return "npy", encode_npy(value)
        if not allow_pickle:
            raise UnsupportedResultError(
                f"A numpy array of dtype {value.dtype} holds Python objects and cannot be stored without pickle: "
                f"{_ALLOW_PICKLE_HINT}.",
                type_name="numpy.ndarray",
            )
        return "pickle", (encode_pickle(value),)
    if _is_arrow_table(value):
        return "arrow", (encode_arrow(value),)
    if _is_dataframe(value):
        pyarrow = import_pyarrow("Storing a pandas DataFrame result")
        return "arrow", (encode_arrow(pyarrow.Table.from_pandas(value, preserve_index=True)),)
    try:
        return "json", (encoder.encode(value),)
    except Exception as error:
        encoder_error: Exception = error
    if allow_pickle:
        return "pickle", (encode_pickle(value),)
    type_name = f"{type(value).__module__}.{type(value).__qualname__}"
    # Not chained: an encoder's error may quote the value, and tracebacks are logged.
    raise UnsupportedResultError(
        f"A result of type {type_name} cannot be stored ({type(encoder).__name__} refused it: "
        f"{describe_error(encoder_error)}): {_ALLOW_PICKLE_HINT}.",
        type_name=type_name,
    ) from None


# --- decoding ------------------------------------------------------------------------------------------------


def decode_value(
    codec: str,
    data: bytes | bytearray | memoryview,
    encoder: Encoder,
    *,
    allow_pickle: bool = False,
    pointer: str = "",
    owned: bool = False,
) -> Any:
    """Turn a payload written by ``encode_value`` (or ``encode_parts``) back into the value.

    ``pointer`` only names the blob in error messages. ``owned=True`` hands a writable ``data`` over to the value:
    an ``npy`` array, or the arrays inside a pickle, then use it as their memory instead of a copy (the caller
    must not use ``data`` afterwards). A read-only ``data`` is copied either way, so arrays are always writable.

    Raises:
      InvalidPointerError: ``codec`` is not one of ``CODECS``.
      PickleNotAllowedError: the payload is a pickle and ``allow_pickle`` is false.
      BlobIntegrityError: the payload does not follow its codec's format.
      MissingDependencyError: the payload is Arrow and pyarrow is not installed.
    """
    if codec == "raw":
        return bytes(data)
    if codec == "json":
        try:
            return encoder.decode(bytes(data))
        except Exception as error:
            # Not chained: Dramatiq's DecodeError holds (and prints) everything it failed to decode.
            raise undecodable(codec, data, error, pointer) from None
    if codec == "npy":
        return decode_npy(data, pointer, owned)
    if codec == "arrow":
        return decode_arrow(data, pointer)
    if codec == "pickle":
        if not allow_pickle:
            raise PickleNotAllowedError(
                "This result was stored as a pickle and unpickling is not allowed here: set allow_pickle=True on "
                "Results, the actor or the message if you trust whoever wrote it."
            )
        return decode_pickle(data, pointer, owned)
    raise InvalidPointerError(f"Unknown result codec {shorten(repr(codec))}: expected one of {', '.join(CODECS)}.")
