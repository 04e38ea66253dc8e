"""A store on Amazon S3 (or any S3-compatible service)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

from ...errors import BlobReadError, BlobWriteError, ConfigurationError, MissingDependencyError
from .._safe import describe_error
from ..pointers import Pointer
from ._bucket import BucketStore
from ._payload import body_of, read_into, size_of, slice_parts
from .base import HASH_CHUNK_BYTES, BlobInfo
from .integrity import log_repair, stored_blob_problem

__all__ = ["S3Store"]

_MIB = 1024 * 1024
#: The most read from a response at once into a caller's buffer: urllib3 reads each piece into a temporary first.
_READ_CHUNK_BYTES = 256 * 1024
#: The error codes of a conditional request whose condition did not hold (the object changed meanwhile).
_CHANGED = ("PreconditionFailed", "412", "ConditionalRequestConflict")
#: The error codes of a request on an object that does not exist (any more).
_MISSING = ("NoSuchKey", "404", "NotFound")


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Store(BucketStore):
    """Write oversized results as objects ``s3://<bucket>/<prefix>/ab/cd/<digest>.<ext>`` (``.json``, ``.npy``,
    ``.bin.zst``...: named by what they hold).

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

    def _settle(self, key: str, digest: str, parts: tuple[memoryview, ...]) -> bool:
        """Create the object, or refresh it when intact, or replace it when corrupt. Return False when it changed
        (or appeared, or vanished) between looking and writing: the caller looks again.

        A payload sent in one request is uploaded create-only straight away, so a new blob costs one request;
        only when that is refused (the object exists) is it looked at. A multipart payload is looked at first,
        so that an existing object does not cost a whole upload."""
        from botocore.exceptions import ClientError

        client = self._client()
        size = size_of(parts)
        if size <= self.multipart_threshold and self._upload(key, parts, IfNoneMatch="*"):
            return True
        try:
            head = client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) not in _MISSING:
                raise
            if size <= self.multipart_threshold:
                return False  # it existed a moment ago and is gone: look again
            return self._upload(key, parts, IfNoneMatch="*")
        etag = head["ETag"]
        try:
            problem = stored_blob_problem(digest, size, int(head["ContentLength"]), lambda: self._sha256(key, etag))
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
        if not self._upload(key, parts, IfMatch=etag):
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

    def _upload(self, key: str, parts: tuple[memoryview, ...], **condition: str) -> bool:
        """Upload the payload under ``condition`` (``IfNoneMatch="*"`` to create, ``IfMatch=<etag>`` to replace),
        without copying it; return False when the condition did not hold or the object to replace no longer
        exists."""
        from botocore.exceptions import ClientError

        client = self._client()
        size = size_of(parts)
        try:
            if size <= self.multipart_threshold:
                client.put_object(Bucket=self.bucket, Key=key, Body=body_of(parts), **condition)
                return True
            upload = client.create_multipart_upload(Bucket=self.bucket, Key=key)
            try:
                uploaded = []
                for number, start in enumerate(range(0, size, self.part_size), start=1):
                    answer = client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload["UploadId"],
                        PartNumber=number,
                        Body=body_of(slice_parts(parts, start, start + self.part_size)),
                    )
                    uploaded.append({"PartNumber": number, "ETag": answer["ETag"]})
                client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                    MultipartUpload={"Parts": uploaded},
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

    def get(self, pointer: Pointer, *, writable: bool = False) -> bytes | bytearray:
        pointer = self._check_pointer(pointer)
        from botocore.exceptions import ClientError

        try:
            answer = self._client().get_object(Bucket=self.bucket, Key=pointer.location)
            body = answer["Body"]
            if writable:
                # Never more than the object holds; in pieces, since a response's readinto reads all it is asked
                # for into a temporary first.
                limit = min(pointer.size, int(answer.get("ContentLength", pointer.size))) + 1
                return read_into(body.readinto, limit, _READ_CHUNK_BYTES)
            return bytes(body.read(pointer.size + 1))
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
            raise BlobWriteError(f"{self.describe()} could not write {key}: {describe_error(error)}") from error

    def delete_named(self, name: str) -> None:
        key = self._named_key(name)
        try:
            self._client().delete_object(Bucket=self.bucket, Key=key)  # deleting a missing key succeeds
        except MissingDependencyError:
            raise
        except Exception as error:
            raise BlobWriteError(f"{self.describe()} could not delete {key}: {describe_error(error)}") from error

    def get_named(self, name: str) -> bytes | None:
        key = self._named_key(name)
        from botocore.exceptions import ClientError

        try:
            return bytes(self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise BlobReadError(
                f"{self.describe()} could not read {key}: {describe_error(error)}", pointer=key
            ) from error
        except Exception as error:
            raise BlobReadError(
                f"{self.describe()} could not read {key}: {describe_error(error)}", pointer=key
            ) from error

    def _read_error(self, pointer: Pointer, error: Exception) -> BlobReadError:
        return BlobReadError(
            f"{self.describe()} could not read {pointer.raw!r}: {describe_error(error)}. Reading again once S3 answers "
            "returns the value.",
            pointer=pointer.raw,
        )

    # --- presigned download URLs -----------------------------------------------------------------------------

    def presign(self, pointer: Pointer | str, expires_in: int = 3600) -> str:
        """A presigned ``GET`` URL for the object a pointer names, valid for ``expires_in`` seconds (1 s to 7 days,
        S3's limit for Signature Version 4; the URL also stops working when the signing credentials expire).
        Signing happens locally, without a request. See :meth:`BlobStore.presign` for what it downloads.

        Raises:
          ForeignPointerError: the pointer names another bucket or prefix.
          InvalidPointerError: the pointer is malformed.
          ConfigurationError: ``expires_in`` is out of range.
          PresignError: boto3 has no credentials to sign with.
        """
        from ...errors import PresignError
        from .base import check_expires_in

        parsed = self._check_pointer(pointer)
        seconds = check_expires_in(expires_in, 7 * 24 * 3600, self.describe())
        try:
            return str(
                self._presigner().generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": parsed.location}, ExpiresIn=seconds
                )
            )
        except MissingDependencyError:
            raise
        except Exception as error:
            raise PresignError(
                f"{self.describe()} could not sign a URL for {parsed.raw!r}: {describe_error(error)}. Give boto3 "
                "credentials (environment, profile or role) that can read the bucket."
            ) from error

    def _presigner(self) -> Any:
        """A client that signs with Signature Version 4: boto3 otherwise presigns with the deprecated SigV2 in
        regions that still accept it (us-east-1), unless the client's configuration names a version. It uses the
        default credential chain, with this store's region and endpoint."""
        if self.__dict__.get("_cached_presigner") is None:
            import boto3
            from botocore.config import Config

            region = self.region or self._client().meta.region_name
            self._cached_presigner = boto3.client(
                "s3", region_name=region, endpoint_url=self.endpoint_url, config=Config(signature_version="s3v4")
            )
        return self._cached_presigner

    def list_blobs(self) -> Iterator[BlobInfo]:
        paginator = self._client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""):
            for item in page.get("Contents", []):
                if self._outside_children(item["Key"]):
                    yield BlobInfo(item["Key"], int(item["Size"]), item["LastModified"].timestamp())

    def list_named(self, prefix: str) -> list[str]:
        top = self._named_prefix(prefix)
        start = len(self._named_key("x")) - 1
        try:
            paginator = self._client().get_paginator("list_objects_v2")
            return sorted(
                item["Key"][start:]
                for page in paginator.paginate(Bucket=self.bucket, Prefix=top)
                for item in page.get("Contents", [])
            )
        except Exception as error:
            raise BlobReadError(
                f"{self.describe()} could not list {top}: {describe_error(error)}", pointer=top
            ) from error

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
