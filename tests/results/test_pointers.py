"""The pointer grammar: django-ray compatible formats, parsed strictly."""

from __future__ import annotations

import pytest

from dramatiq_ray.errors import InvalidPointerError
from dramatiq_ray.payloads.pointers import looks_like_pointer, parse_pointer

HEX = "ab" + "cd" + "0" * 60
REL = f"ab/cd/{HEX}.json"


def test_parse_pointer_reads_a_digest_pointer() -> None:
    pointer = parse_pointer(f"oversize://sha256/{HEX}?bytes=12")
    assert (pointer.scheme, pointer.digest, pointer.size) == ("oversize", HEX, 12)


def test_parse_pointer_reads_a_filesystem_pointer() -> None:
    pointer = parse_pointer(f"resultfs://sha256/{HEX}?rel={REL}&bytes=0")
    assert (pointer.scheme, pointer.location, pointer.size) == ("resultfs", REL, 0)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_parse_pointer_reads_an_object_pointer_with_its_bucket_and_prefix(scheme: str) -> None:
    pointer = parse_pointer(f"{scheme}://my-bucket/dramatiq-ray/results/{REL}?bytes=7")
    assert pointer.bucket == "my-bucket"
    assert pointer.prefix == "dramatiq-ray/results"
    assert pointer.location == f"dramatiq-ray/results/{REL}"
    assert pointer.digest == HEX


@pytest.mark.parametrize(
    "raw",
    [
        f"oversize://sha256/{HEX.upper()}?bytes=1",  # uppercase digest
        f"oversize://sha256/{HEX}?bytes=01",  # leading zero
        f"oversize://sha256/{HEX}?bytes=-1",
        f"oversize://sha256/{HEX}?bytes=1&x=2",  # extra parameter
        f"oversize://sha256/{HEX}?bytes=1\n",  # trailing newline
        f"oversize://md5/{HEX}?bytes=1",
        f"resultfs://sha256/{HEX}?rel=../cd/{HEX}.json&bytes=1",  # traversal
        f"resultfs://sha256/{HEX}?rel=/etc/{HEX}.json&bytes=1",  # absolute
        f"resultfs://sha256/{HEX}?rel=ab/cd/{'1' * 64}.json&bytes=1",  # names another digest
        f"resultfs://sha256/{HEX}?rel=ab%2Fcd/{HEX}.json&bytes=1",  # percent escape
        f"resultfs://sha256/{HEX}?rel=ee/ff/{HEX}.json&bytes=1",  # not the content address
        f"s3://my-bucket/../{REL}?bytes=1",
        f"s3://my-bucket/a/./{REL}?bytes=1",
        f"s3://my-bucket//{REL}?bytes=1",
        f"s3://My_Bucket/{REL}?bytes=1",
        f"s3://my-bucket/p/ee/ff/{HEX}.json?bytes=1",  # directories disagree with the digest
        f"gs://my-bucket/p/{REL}",  # no size
        "s3://bucket/k?bytes=3",
        "",
    ],
)
def test_parse_pointer_refuses_anything_off_the_grammar(raw: str) -> None:
    with pytest.raises(InvalidPointerError, match="pointer"):
        parse_pointer(raw)


def test_parse_pointer_refuses_non_strings() -> None:
    with pytest.raises(InvalidPointerError):
        parse_pointer(123)  # type: ignore[arg-type]


def test_looks_like_pointer_matches_every_scheme_prefix_only() -> None:
    assert all(looks_like_pointer(s) for s in ["oversize://x", "resultfs://", "s3://b/k?bytes=3", "gs://"])
    assert not any(looks_like_pointer(s) for s in ["https://x", "S3://b", 42, None, " s3://b"])
