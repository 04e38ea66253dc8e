"""Result codecs: every kind of value survives encode_value/decode_value, and pickle is opt-in on both sides."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from typing import Any

import numpy
import pandas
import pandas.testing
import pyarrow
import pytest
from dramatiq.encoder import JSONEncoder

from dramatiq_ray.errors import (
    BlobIntegrityError,
    InvalidPointerError,
    PickleNotAllowedError,
    SpilledResultError,
    UnsupportedResultError,
)
from dramatiq_ray.payloads.codecs import CODECS, decode_value, encode_parts


def encode_value(value: Any, encoder: Any, *, allow_pickle: bool = False) -> tuple[str, Any]:
    """The codec and the payload as a store receives it: the one part as it is (no copy), or the parts joined."""
    codec, parts = encode_parts(value, encoder, allow_pickle=allow_pickle)
    return codec, parts[0] if len(parts) == 1 else b"".join(parts)


ENCODER = JSONEncoder()


def npy_bytes(array: Any) -> bytes:
    """What ``np.save`` writes for ``array``."""
    buffer = io.BytesIO()
    numpy.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def round_trip(value: Any, *, allow_pickle: bool = False) -> tuple[str, Any]:
    codec, payload = encode_value(value, ENCODER, allow_pickle=allow_pickle)
    assert codec in CODECS
    return codec, decode_value(codec, bytes(payload), ENCODER, allow_pickle=allow_pickle)


# --- raw -----------------------------------------------------------------------------------------------------


def test_raw_codec_round_trips_bytes_without_copying() -> None:
    value = b"\x00\x01binary" * 100
    codec, payload = encode_value(value, ENCODER)
    assert codec == "raw"
    assert payload is value
    assert decode_value(codec, payload, ENCODER) == value


def test_raw_codec_round_trips_bytearray_as_bytes() -> None:
    codec, value = round_trip(bytearray(b"abc\xff"))
    assert codec == "raw"
    assert value == b"abc\xff"
    assert type(value) is bytes


def test_raw_codec_keeps_a_contiguous_memoryview_as_is() -> None:
    source = memoryview(b"0123456789")
    codec, payload = encode_value(source, ENCODER)
    assert codec == "raw"
    assert payload is source
    assert decode_value(codec, payload, ENCODER) == b"0123456789"


def test_raw_codec_keeps_a_bytearray_as_a_view_without_copying() -> None:
    source = bytearray(b"0123456789")
    codec, (payload,) = encode_parts(source, ENCODER)
    assert codec == "raw"
    assert isinstance(payload, memoryview) and payload.obj is source


def test_raw_codec_round_trips_a_strided_memoryview() -> None:
    codec, value = round_trip(memoryview(b"0123456789")[::2])
    assert codec == "raw"
    assert value == b"02468"


# --- npy -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        numpy.linspace(0.0, 1.0, 1000, dtype=numpy.float64).reshape(10, 100),
        numpy.arange(-128, 128, dtype=numpy.int8),
        numpy.array([[True, False], [False, True]]),
        numpy.array([(1, 2.5, b"ab"), (3, -1.0, b"cd")], dtype=[("id", "<i4"), ("x", "<f8"), ("tag", "S2")]),
        numpy.array(3.25),
        numpy.zeros((0, 3), dtype=numpy.uint16),
        numpy.array(["héllo", "wörld"]),
    ],
    ids=["float64", "int8", "bool", "structured", "zero-d", "empty", "unicode"],
)
def test_npy_codec_round_trips_dtype_shape_and_values(array: Any) -> None:
    codec, value = round_trip(array)
    assert codec == "npy"
    assert value.dtype == array.dtype
    assert value.shape == array.shape
    numpy.testing.assert_array_equal(value, array)


def test_npy_codec_round_trips_a_non_contiguous_array() -> None:
    array = numpy.arange(200, dtype=numpy.int64).reshape(10, 20)[::2, ::3].T
    assert not array.flags.c_contiguous
    codec, value = round_trip(array)
    assert codec == "npy"
    numpy.testing.assert_array_equal(value, array)


def test_npy_codec_writes_the_standard_npy_format() -> None:
    array = numpy.arange(12, dtype=">u2").reshape(3, 4)
    _, payload = encode_value(array, ENCODER)
    numpy.testing.assert_array_equal(numpy.load(io.BytesIO(bytes(payload)), allow_pickle=False), array)


def test_npy_codec_decodes_to_an_independent_writable_array() -> None:
    payload = bytearray(encode_value(numpy.arange(5.0), ENCODER)[1])
    original = bytes(payload)
    value = decode_value("npy", memoryview(payload), ENCODER)
    value[0] = 42.0
    assert value[0] == 42.0
    assert payload == original


def test_npy_codec_encodes_a_contiguous_array_as_its_header_and_a_view_of_its_memory() -> None:
    array = numpy.arange(1000, dtype=numpy.float64).reshape(10, 100)
    codec, (header, body) = encode_parts(array, ENCODER)
    assert codec == "npy"
    assert numpy.shares_memory(numpy.asarray(body), array)  # no copy of the values
    assert bytes(header) + bytes(body) == npy_bytes(array)


def test_npy_codec_writes_a_fortran_array_from_its_memory_as_np_save_does() -> None:
    array = numpy.asfortranarray(numpy.arange(12, dtype=numpy.int32).reshape(3, 4))
    _, (header, body) = encode_parts(array, ENCODER)
    assert numpy.shares_memory(numpy.asarray(body), array)
    assert bytes(header) + bytes(body) == npy_bytes(array)
    _, value = round_trip(array)
    numpy.testing.assert_array_equal(value, array)
    assert value.flags.writeable


def test_npy_codec_copies_a_non_contiguous_array_once_in_c_order() -> None:
    array = numpy.arange(200, dtype=numpy.int64).reshape(10, 20)[::2, ::3]
    _, (header, body) = encode_parts(array, ENCODER)
    assert not numpy.shares_memory(numpy.asarray(body), array)
    assert bytes(header) + bytes(body) == npy_bytes(array)


def test_npy_codec_decodes_an_owned_buffer_in_place_as_a_writable_array() -> None:
    payload = bytearray(encode_value(numpy.arange(5.0), ENCODER)[1])
    value = decode_value("npy", payload, ENCODER, owned=True)
    assert numpy.shares_memory(value, numpy.frombuffer(payload, dtype=numpy.uint8))  # no copy
    value[0] = 42.0
    numpy.testing.assert_array_equal(value, [42.0, 1.0, 2.0, 3.0, 4.0])


def test_npy_codec_copies_a_read_only_buffer_even_when_owned() -> None:
    payload = bytes(encode_value(numpy.arange(5.0), ENCODER)[1])
    value = decode_value("npy", payload, ENCODER, owned=True)
    value[0] = 42.0
    assert value[0] == 42.0


def test_npy_codec_refuses_object_dtype_without_pickle() -> None:
    with pytest.raises(UnsupportedResultError, match="allow_pickle"):
        encode_value(numpy.array([{"a": 1}, None], dtype=object), ENCODER)


def test_npy_codec_sends_object_dtype_to_pickle_when_allowed() -> None:
    array = numpy.array([{"a": 1}, None], dtype=object)
    codec, value = round_trip(array, allow_pickle=True)
    assert codec == "pickle"
    assert value.dtype == object
    assert list(value) == [{"a": 1}, None]


def test_npy_codec_leaves_a_masked_array_to_pickle() -> None:
    masked = numpy.ma.masked_array([1, 2, 3], mask=[False, True, False])
    with pytest.raises(UnsupportedResultError):
        encode_value(masked, ENCODER)
    codec, value = round_trip(masked, allow_pickle=True)
    assert codec == "pickle"
    assert list(value.mask) == [False, True, False]


def test_npy_codec_rejects_a_truncated_payload() -> None:
    payload = bytes(encode_value(numpy.arange(100), ENCODER)[1])
    with pytest.raises(BlobIntegrityError):
        decode_value("npy", payload[:-8], ENCODER)


# --- arrow ---------------------------------------------------------------------------------------------------


def test_arrow_codec_round_trips_a_table() -> None:
    table = pyarrow.table({"id": [1, 2, 3], "name": ["a", "b", None], "score": [0.5, 1.5, 2.5]})
    codec, value = round_trip(table)
    assert codec == "arrow"
    assert isinstance(value, pyarrow.Table)
    assert value.equals(table)


def test_arrow_codec_round_trips_a_dataframe_with_its_index() -> None:
    frame = pandas.DataFrame(
        {"price": [1.5, 2.5, 3.5], "sku": ["x", "y", "z"]},
        index=pandas.Index(["2024-01", "2024-02", "2024-03"], name="month"),
    )
    codec, value = round_trip(frame)
    assert codec == "arrow"
    pandas.testing.assert_frame_equal(value, frame)


def test_arrow_codec_round_trips_a_dataframe_with_a_non_default_integer_index() -> None:
    frame = pandas.DataFrame({"v": [10, 20, 30]}, index=[7, 3, 9])
    _, value = round_trip(frame)
    pandas.testing.assert_frame_equal(value, frame)


def test_arrow_codec_rejects_a_corrupt_stream() -> None:
    with pytest.raises(BlobIntegrityError):
        decode_value("arrow", b"not an arrow stream", ENCODER)


# --- json ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, 42, 2.5, "text", [1, "two", None], {"a": {"b": [1, 2]}}])
def test_json_codec_round_trips_values_the_encoder_accepts(value: Any) -> None:
    codec, decoded = round_trip(value)
    assert codec == "json"
    assert decoded == value


def test_json_codec_is_preferred_to_pickle_when_pickle_is_allowed() -> None:
    codec, value = round_trip({"n": 1}, allow_pickle=True)
    assert codec == "json"
    assert value == {"n": 1}


def test_json_codec_payload_is_what_the_encoder_produces() -> None:
    assert encode_value({"a": 1}, ENCODER) == ("json", ENCODER.encode({"a": 1}))


# --- pickle --------------------------------------------------------------------------------------------------


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def test_unsupported_type_error_names_the_type_and_allow_pickle() -> None:
    with pytest.raises(UnsupportedResultError, match="allow_pickle") as caught:
        encode_value(Point(1, 2), ENCODER)
    assert "Point" in str(caught.value)
    assert isinstance(caught.value, TypeError)


def test_pickle_codec_round_trips_an_object_when_allowed() -> None:
    codec, value = round_trip({Point(1, 2)}, allow_pickle=True)
    assert codec == "pickle"
    assert value == {Point(1, 2)}


def test_pickle_codec_carries_numpy_buffers_out_of_band() -> None:
    array = numpy.arange(100_000, dtype=numpy.float64)
    value = {"weights": array, "meta": Point(3, 4)}
    codec, payload = encode_value(value, ENCODER, allow_pickle=True)
    assert codec == "pickle"
    in_band = pickle.dumps(value, protocol=5)
    assert bytes(payload)[:4] == b"DRPK"
    assert int.from_bytes(bytes(payload)[5:9], "little") == 1
    assert len(bytes(payload)) < len(in_band) + 64
    decoded = decode_value(codec, bytes(payload), ENCODER, allow_pickle=True)
    numpy.testing.assert_array_equal(decoded["weights"], array)
    assert decoded["meta"] == Point(3, 4)
    decoded["weights"][0] = -1.0
    assert decoded["weights"].flags.writeable


def test_pickle_codec_arrays_use_an_owned_payload_as_their_memory() -> None:
    array = numpy.arange(10_000, dtype=numpy.float64)
    payload = bytearray(encode_value({"weights": array}, ENCODER, allow_pickle=True)[1])
    decoded = decode_value("pickle", payload, ENCODER, allow_pickle=True, owned=True)
    assert numpy.shares_memory(decoded["weights"], numpy.frombuffer(payload, dtype=numpy.uint8))
    decoded["weights"][0] = -1.0
    assert decoded["weights"][0] == -1.0


def test_pickle_codec_refuses_to_decode_without_allow_pickle() -> None:
    _, payload = encode_value(Point(1, 2), ENCODER, allow_pickle=True)
    with pytest.raises(PickleNotAllowedError, match="allow_pickle") as caught:
        decode_value("pickle", payload, ENCODER)
    assert isinstance(caught.value, SpilledResultError)


def test_pickle_codec_rejects_a_frame_whose_lengths_do_not_match() -> None:
    payload = bytes(encode_value(Point(1, 2), ENCODER, allow_pickle=True)[1])
    with pytest.raises(BlobIntegrityError):
        decode_value("pickle", payload + b"x", ENCODER, allow_pickle=True)


def test_decode_value_rejects_an_unknown_codec_by_name() -> None:
    with pytest.raises(InvalidPointerError, match="'yaml'"):
        decode_value("yaml", b"a: 1", ENCODER)


# --- imports -------------------------------------------------------------------------------------------------


def test_importing_the_codec_modules_imports_no_optional_dependency(python_subprocess_env: dict[str, str]) -> None:
    script = (
        "import sys\n"
        "import dramatiq_ray.payloads.codecs, dramatiq_ray.payloads.compression, dramatiq_ray.payloads.encryption\n"
        "heavy = ('numpy', 'pyarrow', 'pandas', 'zstandard', 'cryptography')\n"
        "print(','.join(sorted(name for name in sys.modules if name.split('.')[0] in heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=python_subprocess_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_encoding_json_and_bytes_imports_no_optional_dependency(python_subprocess_env: dict[str, str]) -> None:
    script = (
        "import sys\n"
        "from dramatiq.encoder import JSONEncoder\n"
        "from dramatiq_ray.payloads.codecs import decode_value, encode_parts\n"
        "for value in ({'a': [1, 2]}, b'bytes'):\n"
        "    codec, parts = encode_parts(value, JSONEncoder())\n"
        "    assert decode_value(codec, b''.join(parts), JSONEncoder()) == value\n"
        "heavy = ('numpy', 'pyarrow', 'pandas')\n"
        "print(','.join(sorted(name for name in sys.modules if name.split('.')[0] in heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=python_subprocess_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    "blocked,call,extra",
    [
        ("zstandard", "from dramatiq_ray.payloads.compression import compress; compress(b'x' * 1000, 'zstd')", "zstd"),
        (
            "cryptography",
            "from dramatiq_ray.payloads.encryption import EncryptionKeys; "
            "EncryptionKeys({'a': bytes(32)}, current='a').encrypt(b'x')",
            "crypto",
        ),
        (
            "pyarrow",
            "from dramatiq.encoder import JSONEncoder; from dramatiq_ray.payloads.codecs import decode_value; "
            "decode_value('arrow', b'', JSONEncoder())",
            "arrow",
        ),
    ],
    ids=["zstd", "crypto", "arrow"],
)
def test_missing_optional_dependency_error_names_the_extra(
    python_subprocess_env: dict[str, str], blocked: str, call: str, extra: str
) -> None:
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] == {blocked!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from dramatiq_ray.errors import MissingDependencyError\n"
        "try:\n"
        f"    {call}\n"
        "except MissingDependencyError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=python_subprocess_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f'pip install "dramatiq-ray[{extra}]"' in result.stdout
