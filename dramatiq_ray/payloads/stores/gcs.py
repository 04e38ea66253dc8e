"""A store on Google Cloud Storage."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from typing import Any

from ...errors import BlobReadError, BlobWriteError, MissingDependencyError
from .._safe import describe_error
from ..pointers import Pointer
from ._bucket import BucketStore
from ._payload import PartsReader, body_of, size_of
from .base import BlobInfo
from .integrity import log_repair, stored_blob_problem

__all__ = ["GCSStore"]


class GCSStore(BucketStore):
    """Write oversized results as objects ``gs://<bucket>/<prefix>/ab/cd/<digest>.<ext>`` (``.json``, ``.npy``,
    ``.bin.zst``...: named by what they hold).

    Writes are create-only (``if_generation_match=0``). When the object already exists it is checked first: its
    size (from its metadata) and, only when the size matches, the SHA-256 of its bytes. An intact object has its
    metadata touched so that its ``updated`` time (read by :func:`dramatiq_ray.gc_blobs`) moves forward while
    results point to it; a corrupt one is overwritten on the condition that it is still the generation that was
    checked (``if_generation_match=<that generation>``), with a WARNING. Pointers naming another bucket or prefix
    are refused before any request.

    Parameters:
      bucket: The bucket name.
      prefix: The object name prefix, without a trailing slash.
      client: A ready ``google.cloud.storage.Client``. Not pickled: a store rebuilt in another process (a Ray
        task) builds its own client.
      endpoint_url: An emulator or private endpoint. Defaults to the ``STORAGE_EMULATOR_HOST`` environment
        variable; when an endpoint is set the client uses anonymous credentials.
      project: The project for the client (default: from the environment).
      retry_timeout: How long, in seconds, a request is retried on transient errors before the store gives up
        (an outage then falls back to a digest when writing, or raises ``BlobReadError`` when reading).

    Raises:
      MissingDependencyError: google-cloud-storage is not installed (``pip install "dramatiq-ray[gcs]"``).
      ConfigurationError: the bucket is empty, or the bucket or prefix is invalid (it is a ``ValueError``).
    """

    scheme = "gs"

    def __init__(
        self,
        bucket: str,
        prefix: str = "dramatiq-ray/results",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        project: str | None = None,
        retry_timeout: float = 30.0,
    ) -> None:
        super().__init__(bucket, prefix)
        self.endpoint_url = endpoint_url
        self.project = project
        self.retry_timeout = retry_timeout
        self._cached_client = client
        if client is None:
            try:
                import google.cloud.storage  # noqa: F401
            except ImportError:
                raise MissingDependencyError("GCSStore", "gcs", "google-cloud-storage") from None

    def _client(self) -> Any:
        if self.__dict__.get("_cached_client") is None:
            try:
                from google.cloud import storage
            except ImportError:
                raise MissingDependencyError("GCSStore", "gcs", "google-cloud-storage") from None
            endpoint = self.endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST")
            if endpoint:
                from google.auth.credentials import AnonymousCredentials

                self._cached_client = storage.Client(
                    project=self.project or "dramatiq-ray",
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options={"api_endpoint": endpoint},
                )
            else:
                self._cached_client = storage.Client(project=self.project)
        return self._cached_client

    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_timeout)

    def _blob(self, key: str) -> Any:
        return self._client().bucket(self.bucket).blob(key)

    # --- presigned download URLs -----------------------------------------------------------------------------

    def presign(self, pointer: Pointer | str, expires_in: int = 3600) -> str:
        """A V4 signed ``GET`` URL for the object a pointer names, valid for ``expires_in`` seconds (1 s to 7 days,
        GCS's limit), on the client's endpoint. Signing happens locally and needs credentials that hold a private
        key (a service-account key file, ``GOOGLE_APPLICATION_CREDENTIALS``); pass ``client=`` a client built
        with such credentials. See :meth:`BlobStore.presign` for what the URL downloads.

        Raises:
          PresignError: the credentials cannot sign (user credentials, a metadata-server token, anonymous
            credentials of an emulator).
          ForeignPointerError: the pointer names another bucket or prefix.
          InvalidPointerError: the pointer is malformed.
          ConfigurationError: ``expires_in`` is out of range.
        """
        import datetime

        from ...errors import PresignError
        from .base import check_expires_in

        parsed = self._check_pointer(pointer)
        seconds = check_expires_in(expires_in, 7 * 24 * 3600, self.describe())
        try:
            return str(
                self._blob(parsed.location).generate_signed_url(
                    version="v4", expiration=datetime.timedelta(seconds=seconds), method="GET"
                )
            )
        except MissingDependencyError:
            raise
        except Exception as error:
            raise PresignError(
                f"{self.describe()} cannot sign a URL for {parsed.raw!r}: its credentials cannot sign "
                f"({describe_error(error)}). Use a service-account key (GOOGLE_APPLICATION_CREDENTIALS, or pass "
                "GCSStore(client=...) a client built with google.oauth2.service_account.Credentials)."
            ) from error

    def _settle(self, key: str, digest: str, parts: tuple[memoryview, ...]) -> bool:
        """Create the object, or refresh it when intact, or replace it when corrupt. Return False when it changed
        (or appeared, or vanished) between looking and writing: the caller looks again."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = self._client().bucket(self.bucket).get_blob(key, retry=self._retry())
        if blob is None:
            try:
                self._upload(key, parts, 0)
            except PreconditionFailed:  # another writer created it meanwhile: check theirs
                return False
            return True
        try:
            generation = blob.generation
            problem = stored_blob_problem(digest, size_of(parts), int(blob.size or 0), lambda: self._sha256(blob))
            if problem is None:
                blob.metadata = {"dramatiq-ray-referenced": str(int(time.time()))}
                blob.patch(if_generation_match=generation, retry=self._retry())
                return True
            self._upload(key, parts, generation)
        except (NotFound, PreconditionFailed):  # it changed or vanished since it was looked at
            return False
        log_repair(self, key, problem)
        return True

    def _upload(self, key: str, parts: tuple[memoryview, ...], generation: int) -> None:
        """Upload the payload provided the object is still at ``generation`` (``0``: it does not exist), without
        copying it first (the client library copies what it sends in one request, or in 100 MiB chunks)."""
        body = body_of(parts)
        options = {"content_type": "application/octet-stream", "if_generation_match": generation}
        if isinstance(body, bytes):
            self._blob(key).upload_from_string(body, retry=self._retry(), **options)
        else:
            reader = body if isinstance(body, PartsReader) else PartsReader(parts)
            self._blob(key).upload_from_file(reader, size=len(reader), retry=self._retry(), **options)

    def _sha256(self, blob: Any) -> str:
        """The SHA-256 of the bytes of ``blob`` as stored, provided it is still the same generation."""
        hasher = hashlib.sha256()

        class Sink:
            @staticmethod
            def write(chunk: bytes) -> int:
                hasher.update(chunk)
                return len(chunk)

        blob.download_to_file(Sink(), raw_download=True, if_generation_match=blob.generation, retry=self._retry())
        return hasher.hexdigest()

    def get(self, pointer: Pointer, *, writable: bool = False) -> bytes | bytearray:
        pointer = self._check_pointer(pointer)
        from google.api_core.exceptions import NotFound

        blob = self._blob(pointer.location)
        try:
            if writable:
                sink = _Sink(pointer.size + 1)
                blob.download_to_file(sink, start=0, end=pointer.size, retry=self._retry())
                return sink.buffer
            return bytes(blob.download_as_bytes(start=0, end=pointer.size, retry=self._retry()))
        except NotFound:
            raise self._not_found(pointer) from None
        except Exception as error:
            raise BlobReadError(
                f"{self.describe()} could not read {pointer.raw!r}: {describe_error(error)}. Reading again once GCS "
                "answers returns the value.",
                pointer=pointer.raw,
            ) from error

    def put_named(self, name: str, data: bytes) -> None:
        key = self._named_key(name)
        try:
            self._blob(key).upload_from_string(data, content_type="application/octet-stream", retry=self._retry())
        except Exception as error:
            raise BlobWriteError(f"{self.describe()} could not write {key}: {describe_error(error)}") from error

    def delete_named(self, name: str) -> None:
        from google.api_core.exceptions import NotFound

        key = self._named_key(name)
        try:
            self._blob(key).delete(retry=self._retry())
        except NotFound:
            return
        except Exception as error:
            raise BlobWriteError(f"{self.describe()} could not delete {key}: {describe_error(error)}") from error

    def get_named(self, name: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        key = self._named_key(name)
        try:
            return bytes(self._blob(key).download_as_bytes(retry=self._retry()))
        except NotFound:
            return None
        except Exception as error:
            raise BlobReadError(
                f"{self.describe()} could not read {key}: {describe_error(error)}", pointer=key
            ) from error

    def list_blobs(self) -> Iterator[BlobInfo]:
        for blob in self._client().list_blobs(self.bucket, prefix=f"{self.prefix}/" if self.prefix else None):
            if self._outside_children(blob.name):
                modified = blob.updated or blob.time_created
                yield BlobInfo(blob.name, int(blob.size or 0), modified.timestamp() if modified else 0.0)

    def list_named(self, prefix: str) -> list[str]:
        top = self._named_prefix(prefix)
        start = len(self._named_key("x")) - 1
        try:
            return sorted(blob.name[start:] for blob in self._client().list_blobs(self.bucket, prefix=top))
        except Exception as error:
            raise BlobReadError(
                f"{self.describe()} could not list {top}: {describe_error(error)}", pointer=top
            ) from error

    def delete_blob(self, info: BlobInfo, *, cutoff: float) -> bool:
        from google.api_core.exceptions import GoogleAPICallError

        blob = self._client().bucket(self.bucket).get_blob(info.name)
        if blob is None:
            return False
        modified = blob.updated or blob.time_created
        if modified is not None and modified.timestamp() >= cutoff:
            return False
        try:
            # A writer that touched it since we looked bumped the metageneration: then the delete is refused.
            blob.delete(if_metageneration_match=blob.metageneration)
        except GoogleAPICallError:
            return False
        return True


class _Sink:
    """A file that keeps what is written to it, up to ``limit`` bytes, in a ``bytearray`` the reader owns."""

    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()
        self.limit = limit

    def write(self, chunk: bytes) -> int:
        room = self.limit - len(self.buffer)
        if room > 0:
            self.buffer += memoryview(chunk)[:room]
        return len(chunk)
