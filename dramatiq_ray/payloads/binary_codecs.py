"""The binary codecs' formats: numpy's ``.npy`` (read into owned memory), Arrow IPC streams, and the opt-in
pickle frame (protocol 5 with out-of-band buffers); and the errors a payload that does not decode raises. Which
codec a value takes is :mod:`dramatiq_ray.payloads.codecs`."""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

from ..errors import BlobIntegrityError, BlobReadError, MissingDependencyError
from ._safe import describe_bytes, describe_error, shorten

PICKLE_MAGIC = b"DRPK"
PICKLE_VERSION = 1
_PICKLE_HEAD = struct.Struct("<4sBI")
_LENGTH = struct.Struct("<Q")
_MAX_PICKLE_BUFFERS = 1 << 20


def import_pyarrow(feature: str) -> Any:
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


def corrupt(codec: str, problem: str, pointer: str) -> BlobIntegrityError:
    return BlobIntegrityError(f"The {codec!r} result payload is corrupt: {problem}.", pointer=pointer)


def encode_npy(array: Any) -> tuple[bytes, memoryview]:
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


def encode_arrow(table: Any) -> memoryview:
    pyarrow = import_pyarrow("Storing an Arrow table result")
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue())


def encode_pickle(value: Any) -> memoryview:
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


def decode_npy(data: bytes | bytearray | memoryview, pointer: str, owned: bool) -> Any:
    import numpy
    import numpy.lib.format as npy_format

    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if view.nbytes < 10 or bytes(view[:6]) != b"\x93NUMPY":
        raise corrupt("npy", "it does not start with the .npy magic", pointer)
    major = view[6]
    if major == 1:
        header_end = 10 + int.from_bytes(view[8:10], "little")
    elif major in (2, 3) and view.nbytes >= 12:
        header_end = 12 + int.from_bytes(view[8:12], "little")
    else:
        raise corrupt("npy", f"unsupported .npy format version {major}", pointer)
    if header_end > view.nbytes:
        raise corrupt("npy", "its header is truncated", pointer)
    header = io.BytesIO(bytes(view[:header_end]))
    try:
        version = npy_format.read_magic(header)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(header)
        else:
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(header)
    except (ValueError, SyntaxError, TypeError) as error:
        raise corrupt("npy", f"its header cannot be read ({describe_error(error)})", pointer) from None
    if dtype.hasobject:
        raise corrupt("npy", "it declares a dtype holding Python objects", pointer)
    count = 1
    for dimension in shape:
        count *= dimension
    if count * dtype.itemsize != view.nbytes - header_end:
        raise corrupt(
            "npy", f"{view.nbytes - header_end} data bytes for {count} values of {dtype.itemsize} bytes", pointer
        )
    values = numpy.frombuffer(view, dtype=dtype, count=count, offset=header_end)
    array = values.reshape(shape, order="F" if fortran_order else "C")
    # An owned, writable buffer becomes the array's memory; anything else is copied, so the array is writable
    # and independent of what the caller keeps.
    return array if owned and not view.readonly else array.copy(order="K")


def decode_arrow(data: bytes | bytearray | memoryview, pointer: str) -> Any:
    pyarrow = import_pyarrow("Reading an Arrow result")
    try:
        table = pyarrow.ipc.open_stream(pyarrow.py_buffer(data)).read_all()
    except (pyarrow.ArrowException, OSError) as error:
        raise corrupt("arrow", f"it is not a readable Arrow IPC stream ({describe_error(error)})", pointer) from None
    if table.schema.pandas_metadata is None:
        return table
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ImportError(
            "This result is a pandas DataFrame; reading it needs the 'pandas' package: pip install pandas"
        ) from None
    return table.to_pandas()


def decode_pickle(data: bytes | bytearray | memoryview, pointer: str, owned: bool) -> Any:
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if view.nbytes < _PICKLE_HEAD.size:
        raise corrupt("pickle", "it is shorter than its frame header", pointer)
    magic, version, count = _PICKLE_HEAD.unpack_from(view)
    if magic != PICKLE_MAGIC:
        raise corrupt("pickle", "it does not start with the pickle frame magic", pointer)
    if version != PICKLE_VERSION:
        raise corrupt("pickle", f"unsupported pickle frame version {version}", pointer)
    if count > _MAX_PICKLE_BUFFERS:
        raise corrupt("pickle", f"it declares {count} buffers", pointer)
    lengths_end = _PICKLE_HEAD.size + _LENGTH.size * (count + 1)
    if view.nbytes < lengths_end:
        raise corrupt("pickle", "its table of lengths is truncated", pointer)
    lengths = [_LENGTH.unpack_from(view, _PICKLE_HEAD.size + _LENGTH.size * index)[0] for index in range(count + 1)]
    if lengths_end + sum(lengths) != view.nbytes:
        raise corrupt("pickle", f"its lengths add up to {lengths_end + sum(lengths)}, not {view.nbytes}", pointer)
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
