"""Errors of the payload layer: they carry sizes and a short prefix, never the payload, and errors that say what
to do (a missing extra) reach the user as they are."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from typing import Any

import pytest
from dramatiq.encoder import JSONEncoder

from dramatiq_ray import FilesystemStore, SpillingBackend
from dramatiq_ray.errors import BlobReadError, SpilledResultError
from dramatiq_ray.payloads.marker import InlineValue
from dramatiq_ray.payloads.pointers import with_reading
from dramatiq_ray.payloads.reading import read_inline, read_value

#: Generous: a message with a pointer, a prefix and a decoder's error, far below the payload's size.
MAX_MESSAGE = 2000
PAYLOAD_BYTES = 3 * 1024 * 1024


def _npy_with_a_huge_unparsable_header() -> bytes:
    header = b"{" + b"x" * (PAYLOAD_BYTES - 13) + b"\n"
    return b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header


PAYLOADS = {
    "json": b"\xff" + os.urandom(PAYLOAD_BYTES),  # not UTF-8: Dramatiq's DecodeError holds its repr
    "npy": _npy_with_a_huge_unparsable_header(),  # numpy's header error holds the header's repr
    "arrow": os.urandom(PAYLOAD_BYTES),
    "pickle": b"DRPK\x01" + os.urandom(PAYLOAD_BYTES),
}


def _everything_shown(error: BaseException) -> str:
    """What a log of this error shows: its message, its causes and the traceback."""
    return "".join(traceback.format_exception(error))


@pytest.mark.parametrize("codec", list(PAYLOADS))
def test_blob_that_does_not_decode_as_its_pointer_says_is_described_by_size_and_prefix_only(
    fs_store: FilesystemStore, codec: str
) -> None:
    # Given an intact 3 MiB blob whose pointer names a codec it does not follow
    payload = PAYLOADS[codec]
    pointer = with_reading(fs_store.put(None, payload), codec=codec)
    # When it is read, then the error says its size and first bytes, and nothing shown holds more of it
    with pytest.raises(SpilledResultError) as raised:
        read_value(fs_store, JSONEncoder(), pointer, allow_pickle=True)
    shown = _everything_shown(raised.value)
    assert len(str(raised.value)) < MAX_MESSAGE
    assert len(shown) < MAX_MESSAGE + 3000  # the traceback's own lines, no chained error quoting the payload
    assert payload[100:132].hex() not in shown and repr(payload[100:132])[2:-1] not in shown


def test_undecodable_json_blob_error_names_its_size_and_first_bytes(fs_store: FilesystemStore, stub_backend) -> None:
    payload = PAYLOADS["json"]
    pointer = fs_store.put(None, payload)
    with pytest.raises(BlobReadError) as raised:
        SpillingBackend(stub_backend, store=fs_store).read_pointer(pointer)
    assert f"{len(payload)} bytes starting {payload[:16].hex()}" in str(raised.value)
    assert "cannot be decoded as json" in str(raised.value)


@pytest.mark.parametrize("codec", ["json", "npy", "raw-not-base64"])
def test_inline_value_that_does_not_decode_is_described_by_size_only(codec: str) -> None:
    import base64

    payload = PAYLOADS["json"] if codec != "npy" else PAYLOADS["npy"]
    data = "!" * PAYLOAD_BYTES if codec == "raw-not-base64" else base64.b64encode(payload).decode()
    value = InlineValue(codec.split("-")[0], data)
    with pytest.raises(SpilledResultError) as raised:
        read_inline(value, JSONEncoder())
    assert len(_everything_shown(raised.value)) < MAX_MESSAGE + 3000


# --- an error that says what to do reaches the user --------------------------------------------------------

# pyarrow is installed here; these scripts run in a process where importing it fails (``sys.modules["pyarrow"] =
# None`` before anything imports it), which is what a machine without the extra sees.
_WITHOUT_PYARROW = """
import sys
sys.modules["pyarrow"] = None  # importing pyarrow fails in this process, as without dramatiq-ray[arrow]
import pandas
"""

_WORKER_SCRIPT = (
    _WITHOUT_PYARROW
    + """
import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import ResultFailure
from dramatiq.results.backends import RedisBackend
from dramatiq_ray import FilesystemStore, Results

broker = StubBroker()
backend = RedisBackend(url=sys.argv[1], namespace=sys.argv[2])
broker.add_middleware(Results(backend=backend, store=FilesystemStore(sys.argv[3]), max_inline_bytes=0))
dramatiq.set_broker(broker)

@dramatiq.actor(store_results=True, max_retries=0)
def frame():
    return pandas.DataFrame({"a": [1, 2, 3]})

worker = dramatiq.Worker(broker, worker_timeout=100)
worker.start()
message = frame.send()
try:
    message.get_result(block=True, timeout=30_000)
except ResultFailure as failure:
    print(failure.orig_exc_type)
    print(failure.orig_exc_msg)
finally:
    worker.stop()
"""
)

_BODY_SCRIPT = (
    _WITHOUT_PYARROW
    + """
from dramatiq.encoder import JSONEncoder
from dramatiq_ray import FilesystemStore, MissingDependencyError
from dramatiq_ray.payloads.plan import SpillPlan

plan = SpillPlan(FilesystemStore(sys.argv[1]), JSONEncoder(), 1024 * 1024)
try:
    plan.apply(pandas.DataFrame({"a": [1, 2, 3]}))
except MissingDependencyError as error:
    print("MissingDependencyError")
    print(error)
"""
)


def _run(script: str, *args: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_dataframe_result_without_pyarrow_fails_with_the_error_naming_the_extra(
    redis_url: str, redis_namespace: str, tmp_path: Any, python_subprocess_env: dict[str, str]
) -> None:
    # Given a worker where pyarrow cannot be imported, and an actor returning a DataFrame
    lines = _run(_WORKER_SCRIPT, redis_url, redis_namespace, str(tmp_path / "blobs"), env=python_subprocess_env)
    # Then the caller gets the missing extra at once, not the generic "return a DataFrame" advice
    assert lines[0] == "MissingDependencyError"
    assert 'pip install "dramatiq-ray[arrow]"' in lines[1]


def test_spill_plan_lets_a_missing_dependency_error_through_where_the_body_runs(
    tmp_path: Any, python_subprocess_env: dict[str, str]
) -> None:
    lines = _run(_BODY_SCRIPT, str(tmp_path / "blobs"), env=python_subprocess_env)
    assert lines[0] == "MissingDependencyError"
    assert "dramatiq-ray[arrow]" in lines[1]


class _QuotingEncoder(JSONEncoder):
    """An encoder whose error quotes the whole value it refused, as some do."""

    def encode(self, data: Any) -> bytes:
        if isinstance(data, set):
            raise TypeError(f"cannot encode {data!r}")
        return super().encode(data)


def test_result_the_encoder_refuses_is_stored_as_a_failure_without_the_encoders_quote_of_it(
    redis_client: Any, redis_namespace: str, fs_store: FilesystemStore
) -> None:
    from dramatiq.results import ResultFailure
    from dramatiq.results.backends import RedisBackend

    from tests.results.conftest import make_message

    backend = SpillingBackend(
        RedisBackend(client=redis_client, namespace=redis_namespace, encoder=_QuotingEncoder()), store=fs_store
    )
    message = make_message()
    value = {f"item-{index:07d}" for index in range(100_000)}
    backend.store_result(message, value, 60_000)
    with pytest.raises(ResultFailure) as failed:
        backend.get_result(message)
    assert "cannot encode" in failed.value.orig_exc_msg
    assert len(failed.value.orig_exc_msg) < MAX_MESSAGE
