"""Blobs are named by what they hold (``.json``, ``.bin``, ``.npy``, ``.arrow``, ``.pkl``, then the compression,
then ``.enc``), on every store; pointers to blobs named ``.json`` by earlier versions (and django-ray) still read."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dramatiq.results.backends import StubBackend

from dramatiq_ray import EncryptionKeys, SpillingBackend, gc_blobs
from dramatiq_ray.errors import InvalidPointerError
from dramatiq_ray.payloads.compression import compress
from dramatiq_ray.payloads.pointers import parse_pointer, with_reading
from dramatiq_ray.payloads.stores.integrity import verify_blob

KEY = bytes(range(32))

# (value, Results options, the extension its blob gets)
CASES = {
    "json": ({"text": "x" * 100}, {}, "json"),
    "bytes": (os.urandom(1000), {}, "bin"),
    "array": (np.arange(100), {}, "npy"),
    "compressed bytes": (b"abc" * 1000, {"compression": "gzip"}, "bin.gz"),
    "compressed json": (["abc"] * 1000, {"compression": "zstd"}, "json.zst"),
    "encrypted array": (np.arange(100), {"encryption": "keys"}, "npy.enc"),
    "compressed, encrypted bytes": (b"abc" * 1000, {"compression": "lzma", "encryption": "keys"}, "bin.xz.enc"),
}


@pytest.fixture(params=["filesystem", "s3", "gcs"])
def store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue({"filesystem": "fs_store", "s3": "s3_store", "gcs": "gcs_store"}[request.param])


def _backend(store: Any, options: dict[str, Any]) -> SpillingBackend:
    if options.get("encryption") == "keys":
        options = {**options, "encryption": EncryptionKeys({"a": KEY}, current="a")}
    return SpillingBackend(StubBackend(), store=store, max_inline_bytes=0, **options)


def _same(left: Any, right: Any) -> bool:
    return bool(np.array_equal(left, right)) if isinstance(left, np.ndarray) else left == right


@pytest.mark.parametrize("case", list(CASES))
def test_spilled_blob_is_named_by_what_it_holds_and_reads_back(store: Any, case: str) -> None:
    value, options, extension = CASES[case]
    backend = _backend(store, options)
    pointer = parse_pointer(backend.plan(0).apply(value).pointer)
    assert pointer.location.endswith(f"/{pointer.digest}.{extension}")
    verify_blob(pointer, store.get(pointer))  # what `dramatiq-ray verify` does
    assert _same(backend.read_pointer(pointer.raw), value)


def test_filesystem_blob_file_is_named_by_what_it_holds(fs_store: Any) -> None:
    pointer = parse_pointer(_backend(fs_store, {}).plan(0).apply(np.arange(10)).pointer)
    [blob] = [path for path in Path(fs_store.path).rglob("*") if path.is_file()]
    assert blob.name == f"{pointer.digest}.npy"


def test_pointer_to_a_blob_named_json_by_an_earlier_version_still_reads(store: Any) -> None:
    # Given a gzip-compressed raw payload stored as every version before named blobs: <digest>.json
    value = b"abc" * 1000
    compression, data = compress(value, "gzip")
    old = with_reading(store.put(None, data), codec="raw", compression=compression)
    assert parse_pointer(old).location.endswith(".json")
    # Then it reads back unchanged
    assert _backend(store, {}).read_pointer(old) == value


def test_django_ray_pointer_still_reads(fs_store: Any) -> None:
    data = b'{"rows": [1, 2, 3]}'
    pointer = fs_store.put(None, data)
    assert pointer.endswith(".json&bytes=19")  # django-ray's resultfs form, no parameters: JSON
    assert _backend(fs_store, {}).read_pointer(pointer) == {"rows": [1, 2, 3]}


def test_pointer_whose_name_disagrees_with_its_parameters_is_refused(fs_store: Any) -> None:
    pointer = _backend(fs_store, {}).plan(0).apply(np.arange(10)).pointer
    with pytest.raises(InvalidPointerError, match=r"named \.npy"):
        parse_pointer(pointer.replace("&codec=npy", "&codec=raw"))


def test_gc_collects_blobs_of_every_name(store: Any) -> None:
    # Given blobs of several kinds, all old
    for case in CASES.values():
        _backend(store, case[1]).plan(0).apply(case[0])
    later = time.time() + 3600
    # When collecting with a cutoff past them all, then every one is collected
    report = gc_blobs(store, older_than=60, now=later)
    names = {name.split("/")[-1].partition(".")[2] for name in report.deleted}
    assert names == {case[2] for case in CASES.values()}
    assert list(store.list_blobs()) == []
