"""A store on Amazon S3 (or any S3-compatible service)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

from ...errors import BlobReadError, BlobWriteError, ConfigurationError, MissingDependencyError
from ..pointers import Pointer
from ._bucket import BucketStore
from .base import HASH_CHUNK_BYTES, BlobInfo, log_repair, stored_blob_problem

__all__ = ["S3Store"]

_MIB = 1024 * 1024
#: The error codes of a conditional request whose condition did not hold (the object changed meanwhile).
_CHANGED = ("PreconditionFailed", "412", "ConditionalRequestConflict")
#: The error codes of a request on an object that does not exist (any more).
_MISSING = ("NoSuchKey", "404", "NotFound")


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Store(BucketStore):
    """Write oversized results as objects ``s3://<bucket>/<prefix>/ab/cd/<digest>.json``.

    Writes are create-only (``If-None-Match: *``). When the object already exists it is checked first: its size
    (from a ``HEAD``) and, only when the size matches, the SHA-256 of its bytes. An intact object has its
    ``LastModified`` refreshed (a copy onto itself) so that lifecycle rules and :func:`dramatiq_ray.gc_blobs`
    keep it while a result points to it; a corrupt one is overwritten on the condition that it is still the
    object that was checked (``If-Match`` its ETag), with a WARNING. Payloads larger than
    ``multipart_threshold`` are uploaded in parts. Pointers naming another bucket or prefix are refused before
    any request.

    Parameters:
      bucket: The bucket name.
      prefix: The key prefix, without a trailing slash.
      region: The AWS region for the client (default: boto3's configuration).
      endpoint_url: An S3-compatible endpoint (MinIO, a test server).
      client: A ready boto3 S3 client. Not pickled: a store rebuilt in another process (a Ray task) builds its
        own client from ``region`` and ``endpoint_url``.
      multipart_threshold: Payloads above this many bytes use a multipart upload (at least 5 MiB).
      part_size: The size of each part of a multipart upload (at least 5 MiB).

    Raises:
      MissingDependencyError: boto3 is not installed (``pip install "dramatiq-ray[s3]"``).
      ConfigurationError: the bucket is empty, or the bucket, prefix or sizes are invalid (it is a
        ``ValueError``).
    """

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "dramatiq-ray/results",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
        multipart_threshold: int = 64 * _MIB,
        part_size: int = 16 * _MIB,
    ) -> None:
        super().__init__(bucket, prefix)
        if part_size < 5 * _MIB or multipart_threshold < 5 * _MIB:
            raise ConfigurationError("S3Store part_size and multipart_threshold must be at least 5 MiB (an S3 limit).")
        self.region = region
        self.endpoint_url = endpoint_url
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._cached_client = client
        if client is None:
            self._client()  # fail now, not at the first oversized result, when boto3 is missing

    def _client(self) -> Any:
        if self.__dict__.get("_cached_client") is None:
            try:
                import boto3
            except ImportError:
                raise MissingDependencyError("S3Store", "s3", "boto3") from None
            self._cached_client = boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint_url)
        return self._cached_client

    def _settle(self, key: str, digest: str, data: bytes) -> bool:
        """Create the object, or refresh it when intact, or replace it when corrupt. Return False when it changed
        (or appeared, or vanished) between looking and writing: the caller looks again."""
        from botocore.exceptions import ClientError

        client = self._client()
        try:
            head = client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) not in _MISSING:
                raise
            return self._upload(key, data, IfNoneMatch="*")
        etag = head["ETag"]
        try:
            problem = stored_blob_problem(
                digest, len(data), int(head["ContentLength"]), lambda: self._sha256(key, etag)
            )
            if problem is None:
                client.copy_object(
                    Bucket=self.bucket,
                    Key=key,
                    CopySource={"Bucket": self.bucket, "Key": key},
                    CopySourceIfMatch=etag,
                    MetadataDirective="REPLACE",
                    Metadata={"dramatiq-ray-referenced": str(int(time.time()))},
                    ContentType="application/octet-stream",
                )
                return True
        except ClientError as error:
            if _code(error) in _CHANGED + _MISSING:
                return False
            raise
        if not self._upload(key, data, IfMatch=etag):
            return False
        log_repair(self, key, problem)
        return True

    def _sha256(self, key: str, etag: str) -> str:
        """The SHA-256 of the object's bytes, read in pieces, provided it still has ``etag``."""
        body = self._client().get_object(Bucket=self.bucket, Key=key, IfMatch=etag)["Body"]
        hasher = hashlib.sha256()
        try:
            for chunk in body.iter_chunks(HASH_CHUNK_BYTES):
                hasher.update(chunk)
        finally:
            body.close()
        return hasher.hexdigest()

    def _upload(self, key: str, data: bytes, **condition: str) -> bool:
        """Upload ``data`` under ``condition`` (``IfNoneMatch="*"`` to create, ``IfMatch=<etag>`` to replace);
        return False when the condition did not hold or the object to replace no longer exists."""
        from botocore.exceptions import ClientError

        client = self._client()
        try:
            if len(data) <= self.multipart_threshold:
                client.put_object(Bucket=self.bucket, Key=key, Body=data, **condition)
                return True
            upload = client.create_multipart_upload(Bucket=self.bucket, Key=key)
            try:
                parts = []
                for number, start in enumerate(range(0, len(data), self.part_size), start=1):
                    chunk = data[start : start + self.part_size]
                    answer = client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=chunk
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                    MultipartUpload={"Parts": parts},
                    **condition,
                )
                return True
            except BaseException:
                client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
                raise
        except ClientError as error:
            if _code(error) in _CHANGED + _MISSING:
                return False
            raise

    def get(self, pointer: Pointer) -> bytes:
        self._check_pointer(pointer)
        from botocore.exceptions import ClientError

        try:
            answer = self._client().get_object(Bucket=self.bucket, Key=pointer.location)
            return bytes(answer["Body"].read(pointer.size + 1))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise self._not_found(pointer) from None
            raise self._read_error(pointer, error) from error
        except Exception as error:
            raise self._read_error(pointer, error) from error

    def put_named(self, name: str, data: bytes) -> None:
        key = self._named_key(name)
        try:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=data)
        except MissingDependencyError:
            raise
        except Exception as error:
            raise BlobWriteError(f"{self.describe()} could not write {key}: {error}") from error

    def delete_named(self, name: str) -> None:
        key = self._named_key(name)
        try:
            self._client().delete_object(Bucket=self.bucket, Key=key)  # deleting a missing key succeeds
        except MissingDependencyError:
            raise
        except Exception as error:
            raise BlobWriteError(f"{self.describe()} could not delete {key}: {error}") from error

    def get_named(self, name: str) -> bytes | None:
        key = self._named_key(name)
        from botocore.exceptions import ClientError

        try:
            return bytes(self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise BlobReadError(f"{self.describe()} could not read {key}: {error}", pointer=key) from error
        except Exception as error:
            raise BlobReadError(f"{self.describe()} could not read {key}: {error}", pointer=key) from error

    def _read_error(self, pointer: Pointer, error: Exception) -> BlobReadError:
        return BlobReadError(
            f"{self.describe()} could not read {pointer.raw!r}: {error}. Reading again once S3 answers returns "
            "the value.",
            pointer=pointer.raw,
        )

    def list_blobs(self) -> Iterator[BlobInfo]:
        paginator = self._client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""):
            for item in page.get("Contents", []):
                yield BlobInfo(item["Key"], int(item["Size"]), item["LastModified"].timestamp())

    def delete_blob(self, info: BlobInfo, *, cutoff: float) -> bool:
        from botocore.exceptions import ClientError

        client = self._client()
        try:
            head = client.head_object(Bucket=self.bucket, Key=info.name)
        except ClientError:
            return False
        if head["LastModified"].timestamp() >= cutoff:
            return False
        client.delete_object(Bucket=self.bucket, Key=info.name)
        return True
