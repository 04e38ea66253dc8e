"""Store constructors refuse configuration that cannot work, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from dramatiq_ray import FilesystemStore, GCSStore, S3Store
from dramatiq_ray.errors import ConfigurationError


def test_filesystem_store_refuses_an_empty_path() -> None:
    with pytest.raises(ConfigurationError, match="needs an absolute path"):
        FilesystemStore("")


@pytest.mark.parametrize("path", ["results", "./results", "var/lib/results", Path("results")])
def test_filesystem_store_refuses_a_relative_path_instead_of_resolving_it(path: str | Path) -> None:
    with pytest.raises(ConfigurationError, match="pass an absolute path") as caught:
        FilesystemStore(path)
    assert repr(path) in str(caught.value)


def test_filesystem_store_accepts_an_absolute_path_as_a_string_or_a_path(tmp_path: Path) -> None:
    assert FilesystemStore(str(tmp_path)) == FilesystemStore(tmp_path)
    assert FilesystemStore(tmp_path).path == str(tmp_path)


@pytest.mark.parametrize("store_class", [S3Store, GCSStore])
def test_bucket_stores_refuse_an_empty_bucket(store_class: type[S3Store] | type[GCSStore]) -> None:
    with pytest.raises(ConfigurationError, match="needs a bucket name, got ''"):
        store_class("", client=object())


@pytest.mark.parametrize("store_class", [S3Store, GCSStore])
@pytest.mark.parametrize("bucket, prefix", [("Bad_Bucket", "p"), ("bucket", "../up"), ("bucket", "a//b")])
def test_bucket_stores_refuse_an_invalid_bucket_or_prefix_as_a_configuration_error(
    store_class: type[S3Store] | type[GCSStore], bucket: str, prefix: str
) -> None:
    with pytest.raises(ConfigurationError, match="Invalid bucket"):
        store_class(bucket, prefix, client=object())


@pytest.mark.parametrize("size", {"multipart_threshold": 1024, "part_size": 1024}.items(), ids=lambda item: item[0])
def test_s3_store_refuses_parts_smaller_than_five_mib(size: tuple[str, int]) -> None:
    with pytest.raises(ConfigurationError, match="at least 5 MiB"):
        S3Store("bucket", client=object(), **{size[0]: size[1]})
