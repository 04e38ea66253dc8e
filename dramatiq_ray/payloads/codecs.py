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

import io
import pickle
import struct
import sys
from typing import Any

from dramatiq.encoder import Encoder

from ..errors import (
    BlobIntegrityError,
    BlobReadError,
    InvalidPointerError,
    MissingDependencyError,
    PickleNotAllowedError,
    UnsupportedResultError,
)
from ._safe import describe_bytes, describe_error, shorten

__all__ = ["CODECS", "decode_value", "encode_parts"]

CODECS: tuple[str, ...] = ("json", "raw", "npy", "arrow", "pickle")

PICKLE_MAGIC = b"DRPK"
PICKLE_VERSION = 1
_PICKLE_HEAD = struct.Struct("<4sBI")
_LENGTH = struct.Struct("<Q")
_MAX_PICKLE_BUFFERS = 1 << 20

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


def _import_pyarrow(feature: str) -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError:
        raise MissingDependencyError(feature, "arrow", "pyarrow") from None
    return pyarrow


def undecodable(codec: str, data: bytes | bytearray | memoryview, error: BaseException, pointer: str) -> BlobReadError:
    """The error for a payload that is intact (its digest matched) but does not decode as ``codec``: it names the
    payload's size and first bytes and the decoder's error, cut short, never the payload."""
    where = f"The blob for {shorten(repr(pointer))}" if pointer else "An inline value"
    return BlobReadError(
        f"{where} is intact but cannot be decoded as {codec} ({describe_error(error)}; the payload is "
        f"{describe_bytes(data)}); read it with the encoder and libraries that wrote it.",
        pointer=pointer,
    )


def _corrupt(codec: str, problem: str, pointer: str) -> BlobIntegrityError:
    return BlobIntegrityError(f"The {codec!r} result payload is corrupt: {problem}.", pointer=pointer)


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
            return "npy", _encode_npy(value)
        if not allow_pickle:
            raise UnsupportedResultError(
                f"A numpy array of dtype {value.dtype} holds Python objects and cannot be stored without pickle: "
                f"{_ALLOW_PICKLE_HINT}.",
                type_name="numpy.ndarray",
            )
        return "pickle", (_encode_pickle(value),)
    if _is_arrow_table(value):
        return "arrow", (_encode_arrow(value),)
    if _is_dataframe(value):
        pyarrow = _import_pyarrow("Storing a pandas DataFrame result")
        return "arrow", (_encode_arrow(pyarrow.Table.from_pandas(value, preserve_index=True)),)
    try:
        return "json", (encoder.encode(value),)
    except Exception as error:
        encoder_error: Exception = error
    if allow_pickle:
        return "pickle", (_encode_pickle(value),)
    type_name = f"{type(value).__module__}.{type(value).__qualname__}"
    # Not chained: an encoder's error may quote the value, and tracebacks are logged.
    raise UnsupportedResultError(
        f"A result of type {type_name} cannot be stored ({type(encoder).__name__} refused it: "
        f"{describe_error(encoder_error)}): {_ALLOW_PICKLE_HINT}.",
        type_name=type_name,
    ) from None


def _encode_npy(array: Any) -> tuple[bytes, memoryview]:
    """The ``.npy`` header and the array's memory (a view of a contiguous array, else a C-order copy)."""
    import numpy
    import numpy.lib.format as npy_format

    fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
    if not (array.flags.c_contiguous or fortran):
        array = numpy.ascontiguousarray(array)  # the one copy, straight into C order
    header = io.BytesIO()
    fields = {"descr": npy_format.dtype_to_descr(array.dtype), "fortran_order": fortran, "shape": array.shape}
    try:
        npy_format.write_array_header_1_0(header, fields)
    except ValueError:
        header = io.BytesIO()
        npy_format.write_array_header_2_0(header, fields)
    # The memory in its own order, as bytes: a C-order view of a Fortran array is its transpose.
    flat = (array.T if fortran else array).reshape(-1).view(numpy.uint8)
    return header.getvalue(), memoryview(flat)


def _encode_arrow(table: Any) -> memoryview:
    pyarrow = _import_pyarrow("Storing an Arrow table result")
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue())


def _encode_pickle(value: Any) -> memoryview:
    buffers: list[memoryview] = []

    def keep(buffer: pickle.PickleBuffer) -> None:
        buffers.append(buffer.raw())

    main = pickle.dumps(value, protocol=5, buffer_callback=keep)
    parts: list[bytes | memoryview] = [main, *buffers]
    head = _PICKLE_HEAD.pack(PICKLE_MAGIC, PICKLE_VERSION, len(buffers)) + b"".join(
        _LENGTH.pack(part.nbytes if isinstance(part, memoryview) else len(part)) for part in parts
    )
    payload = bytearray(len(head) + sum(len(part) if isinstance(part, bytes) else part.nbytes for part in parts))
    payload[: len(head)] = head
    position = len(head)
    for part in parts:
        size = len(part) if isinstance(part, bytes) else part.nbytes
        payload[position : position + size] = part
        position += size
    return memoryview(payload)


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
        return _decode_npy(data, pointer, owned)
    if codec == "arrow":
        return _decode_arrow(data, pointer)
    if codec == "pickle":
        if not allow_pickle:
            raise PickleNotAllowedError(
                "This result was stored as a pickle and unpickling is not allowed here: set allow_pickle=True on "
                "Results, the actor or the message if you trust whoever wrote it."
            )
        return _decode_pickle(data, pointer, owned)
    raise InvalidPointerError(f"Unknown result codec {shorten(repr(codec))}: expected one of {', '.join(CODECS)}.")


def _decode_npy(data: bytes | bytearray | memoryview, pointer: str, owned: bool) -> Any:
    import numpy
    import numpy.lib.format as npy_format

    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if view.nbytes < 10 or bytes(view[:6]) != b"\x93NUMPY":
        raise _corrupt("npy", "it does not start with the .npy magic", pointer)
    major = view[6]
    if major == 1:
        header_end = 10 + int.from_bytes(view[8:10], "little")
    elif major in (2, 3) and view.nbytes >= 12:
        header_end = 12 + int.from_bytes(view[8:12], "little")
    else:
        raise _corrupt("npy", f"unsupported .npy format version {major}", pointer)
    if header_end > view.nbytes:
        raise _corrupt("npy", "its header is truncated", pointer)
    header = io.BytesIO(bytes(view[:header_end]))
    try:
        version = npy_format.read_magic(header)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(header)
        else:
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(header)
    except (ValueError, SyntaxError, TypeError) as error:
        raise _corrupt("npy", f"its header cannot be read ({describe_error(error)})", pointer) from None
    if dtype.hasobject:
        raise _corrupt("npy", "it declares a dtype holding Python objects", pointer)
    count = 1
    for dimension in shape:
        count *= dimension
    if count * dtype.itemsize != view.nbytes - header_end:
        raise _corrupt(
            "npy", f"{view.nbytes - header_end} data bytes for {count} values of {dtype.itemsize} bytes", pointer
        )
    values = numpy.frombuffer(view, dtype=dtype, count=count, offset=header_end)
    array = values.reshape(shape, order="F" if fortran_order else "C")
    # An owned, writable buffer becomes the array's memory; anything else is copied, so the array is writable
    # and independent of what the caller keeps.
    return array if owned and not view.readonly else array.copy(order="K")


def _decode_arrow(data: bytes | bytearray | memoryview, pointer: str) -> Any:
    pyarrow = _import_pyarrow("Reading an Arrow result")
    try:
        table = pyarrow.ipc.open_stream(pyarrow.py_buffer(data)).read_all()
    except (pyarrow.ArrowException, OSError) as error:
        raise _corrupt("arrow", f"it is not a readable Arrow IPC stream ({describe_error(error)})", pointer) from None
    if table.schema.pandas_metadata is None:
        return table
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ImportError(
            "This result is a pandas DataFrame; reading it needs the 'pandas' package: pip install pandas"
        ) from None
    return table.to_pandas()


def _decode_pickle(data: bytes | bytearray | memoryview, pointer: str, owned: bool) -> Any:
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if view.nbytes < _PICKLE_HEAD.size:
        raise _corrupt("pickle", "it is shorter than its frame header", pointer)
    magic, version, count = _PICKLE_HEAD.unpack_from(view)
    if magic != PICKLE_MAGIC:
        raise _corrupt("pickle", "it does not start with the pickle frame magic", pointer)
    if version != PICKLE_VERSION:
        raise _corrupt("pickle", f"unsupported pickle frame version {version}", pointer)
    if count > _MAX_PICKLE_BUFFERS:
        raise _corrupt("pickle", f"it declares {count} buffers", pointer)
    lengths_end = _PICKLE_HEAD.size + _LENGTH.size * (count + 1)
    if view.nbytes < lengths_end:
        raise _corrupt("pickle", "its table of lengths is truncated", pointer)
    lengths = [_LENGTH.unpack_from(view, _PICKLE_HEAD.size + _LENGTH.size * index)[0] for index in range(count + 1)]
    if lengths_end + sum(lengths) != view.nbytes:
        raise _corrupt("pickle", f"its lengths add up to {lengths_end + sum(lengths)}, not {view.nbytes}", pointer)
    position = lengths_end + lengths[0]
    main = view[lengths_end:position]
    adopt = owned and not view.readonly
    buffers: list[bytearray | memoryview] = []
    for length in lengths[1:]:
        # Arrays rebuilt from a buffer are writable only when it is: a slice of an owned, writable payload, or
        # else a copy (independent of the payload).
        piece = view[position : position + length]
        buffers.append(piece if adopt else bytearray(piece))
        position += length
    return pickle.loads(main, buffers=buffers)
