"""dramatiq-ray: run Dramatiq actor bodies on Ray, spill large results to blob stores, retry with backoff.

Importing this package never imports Ray, boto3 or google-cloud-storage: producers that only send messages stay
light, and processes that fork (the ``dramatiq`` CLI) stay safe.
"""

from __future__ import annotations

# --- errors ---
from .errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    BlobReadError,
    BlobStoreError,
    BlobWriteError,
    ConfigurationError,
    DecryptionError,
    DigestOnlyResultError,
    DramatiqRayError,
    ForeignPointerError,
    InvalidPointerError,
    MessageCancelledError,
    MissingArgumentError,
    MissingDependencyError,
    PickleNotAllowedError,
    PresignError,
    RayExecutionError,
    RayJobStuckError,
    RayNodeDiedError,
    RayObjectLostError,
    RayOptionsError,
    RayOutOfMemoryError,
    RaySystemError,
    RayTaskCancelledError,
    RayUnavailableError,
    RayWorkerCrashedError,
    RemoteExceptionError,
    ReplicaError,
    ReplicaSetupError,
    ReplicaUnavailableError,
    ResultBackendError,
    RetryOptionsError,
    SchemaVersionError,
    SpilledResultError,
    StoreUnavailableError,
    UnsupportedResultError,
    WebhookSignatureError,
)

# --- results that spill ---
from .results import (
    BlobStore,
    DigestStore,
    EncryptionKeys,
    FilesystemStore,
    GCReport,
    GCSStore,
    Results,
    S3Store,
    SpilledResult,
    SpillingBackend,
    SpillPlan,
    find_spilling_backend,
    gc_blobs,
    get_pointer,
)

# --- results you can query: the SQL result backend ---
# isort: split
from .results.sql import ResultRecord, SQLBackend

# --- result delivery: webhooks, download URLs, waiting from asyncio ---
# isort: split
from .delivery import Webhooks, get_result_async, get_result_url

# --- running on Ray ---
# isort: split
from .callpath.context import current_message
from .execution import RayExecutionMiddleware
from .execution.replica import replica_cancelled, replica_state
from .execution.replica_actor import ReplicaActor
from .execution.replica_options import Batch, Replicas

# --- cancel and progress ---
# isort: split
from .callpath.steering import Progress, report_progress
from .results.steering import CancelOutcome, cancel, get_progress, get_progress_async

# --- retries ---
from .retries import Retries

# --- observability ---
from .tracing import Tracing

# --- settings ---
from ._install import Installed, build_store, setup
from .settings import Settings, load_settings

from ._version import __version__ as __version__

__all__ = [
    # errors
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobReadError",
    "BlobStoreError",
    "BlobWriteError",
    "ConfigurationError",
    "DecryptionError",
    "DigestOnlyResultError",
    "DramatiqRayError",
    "ForeignPointerError",
    "InvalidPointerError",
    "MessageCancelledError",
    "MissingArgumentError",
    "MissingDependencyError",
    "PickleNotAllowedError",
    "PresignError",
    "RayExecutionError",
    "RayJobStuckError",
    "RayNodeDiedError",
    "RayObjectLostError",
    "RayOptionsError",
    "RayOutOfMemoryError",
    "RaySystemError",
    "RayTaskCancelledError",
    "RayUnavailableError",
    "RayWorkerCrashedError",
    "RemoteExceptionError",
    "ReplicaError",
    "ReplicaSetupError",
    "ReplicaUnavailableError",
    "ResultBackendError",
    "RetryOptionsError",
    "SchemaVersionError",
    "SpilledResultError",
    "StoreUnavailableError",
    "UnsupportedResultError",
    "WebhookSignatureError",
    # results that spill
    "BlobStore",
    "DigestStore",
    "EncryptionKeys",
    "FilesystemStore",
    "GCReport",
    "GCSStore",
    "Results",
    "S3Store",
    "SpillPlan",
    "SpilledResult",
    "SpillingBackend",
    "find_spilling_backend",
    "gc_blobs",
    "get_pointer",
    # results you can query
    "ResultRecord",
    "SQLBackend",
    # result delivery
    "Webhooks",
    "get_result_async",
    "get_result_url",
    # running on Ray
    "Batch",
    "RayExecutionMiddleware",
    "ReplicaActor",
    "Replicas",
    "current_message",
    "replica_cancelled",
    "replica_state",
    # cancel and progress
    "CancelOutcome",
    "Progress",
    "cancel",
    "get_progress",
    "get_progress_async",
    "report_progress",
    # retries
    "Retries",
    # observability
    "Tracing",
    # settings
    "Installed",
    "Settings",
    "build_store",
    "load_settings",
    "setup",
]
