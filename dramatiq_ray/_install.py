"""``setup(broker, settings)``: install Results, RayExecutionMiddleware and Retries from one settings mapping."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.results import ResultBackend
from dramatiq.results import Results as DramatiqResults

from .errors import ConfigurationError
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from .delivery import Webhooks
    from .execution import RayExecutionMiddleware
    from .results import BlobStore, Results
    from .retries import Retries

__all__ = ["Installed", "build_result_backend", "build_store", "setup"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    """What :func:`setup` installed on the broker."""

    settings: Settings
    results: Results | None
    execution: RayExecutionMiddleware
    retries: Retries
    #: Installed when ``WEBHOOK_SECRETS`` is set.
    webhooks: Webhooks | None = None


def build_store(settings: Settings) -> BlobStore:
    """The blob store that ``RESULT_STORAGE_BACKEND`` and its settings describe.

    Raises:
      ConfigurationError: the backend's required setting is missing.
      MissingDependencyError: the backend's optional dependency is not installed.
    """
    from .results import DigestStore, FilesystemStore, GCSStore, S3Store

    backend = settings.result_storage_backend
    if backend == "digest":
        return DigestStore()
    if backend == "filesystem":
        if not settings.result_storage_filesystem_path:
            raise ConfigurationError("RESULT_STORAGE_BACKEND='filesystem' needs RESULT_STORAGE_FILESYSTEM_PATH.")
        return FilesystemStore(settings.result_storage_filesystem_path)
    if backend == "s3":
        if not settings.result_storage_s3_bucket:
            raise ConfigurationError("RESULT_STORAGE_BACKEND='s3' needs RESULT_STORAGE_S3_BUCKET.")
        return S3Store(
            settings.result_storage_s3_bucket,
            settings.result_storage_s3_prefix,
            region=settings.result_storage_s3_region,
            endpoint_url=settings.result_storage_s3_endpoint_url,
        )
    if backend == "gcs":
        if not settings.result_storage_gcs_bucket:
            raise ConfigurationError("RESULT_STORAGE_BACKEND='gcs' needs RESULT_STORAGE_GCS_BUCKET.")
        return GCSStore(settings.result_storage_gcs_bucket, settings.result_storage_gcs_prefix)
    raise ConfigurationError(f"RESULT_STORAGE_BACKEND must be one of digest, filesystem, s3, gcs, not {backend!r}.")


def build_result_backend(settings: Settings, broker: dramatiq.Broker | None = None) -> ResultBackend | None:
    """The result backend ``RESULT_BACKEND`` and ``RESULT_BACKEND_URL`` describe; ``None`` when
    ``RESULT_BACKEND`` is unset (then :func:`setup` chooses from the broker).

    ``redis`` without a URL shares a ``RedisBroker``'s connection; ``sql`` is an :class:`~dramatiq_ray.SQLBackend`.

    Raises:
      ConfigurationError: ``sql`` without a URL or with a bad one, ``redis`` without a URL on another broker.
      MissingDependencyError: ``sql`` without the ``sql`` extra.
    """
    kind, url = settings.result_backend, settings.result_backend_url
    if kind is None:
        return None
    if kind == "sql":
        from .results.sql import SQLBackend

        if not url:
            raise ConfigurationError("RESULT_BACKEND='sql' needs RESULT_BACKEND_URL.")
        sql_backend: ResultBackend = SQLBackend(url=url)
        return sql_backend
    if kind == "redis":
        from dramatiq.results.backends import RedisBackend

        if url:
            redis_backend: ResultBackend = RedisBackend(url=url)
            return redis_backend
        found = _default_result_backend(broker) if broker is not None else None
        if found is not None and type(found).__name__ == "RedisBackend":
            return found
        raise ConfigurationError(
            "RESULT_BACKEND='redis' needs RESULT_BACKEND_URL (e.g. 'redis://localhost:6379/0') unless the broker "
            "is a RedisBroker, whose connection it then shares."
        )
    raise ConfigurationError(f"RESULT_BACKEND must be None, 'redis' or 'sql', not {kind!r}.")


def _default_result_backend(broker: dramatiq.Broker) -> ResultBackend | None:
    from dramatiq.brokers.stub import StubBroker

    if isinstance(broker, StubBroker):
        from dramatiq.results.backends import StubBackend

        return StubBackend()
    client = getattr(broker, "client", None)
    if client is not None and type(broker).__name__ == "RedisBroker":
        from dramatiq.results.backends import RedisBackend

        redis_backend: ResultBackend = RedisBackend(client=client)
        return redis_backend
    return None


def setup(
    broker: dramatiq.Broker,
    settings: Mapping[str, Any] | None = None,
    *,
    result_backend: ResultBackend | None = None,
) -> Installed:
    """Install dramatiq-ray's middleware on ``broker`` from settings (see :doc:`configuration`).

    - **Retries** takes the place of Dramatiq's stock ``Retries`` (``MAX_TASK_ATTEMPTS``,
      ``RETRY_BACKOFF_SECONDS``, ``RETRY_MAX_BACKOFF_SECONDS``, ``RETRY_EXCEPTION_DENYLIST``).
    - **Results** with a spilling backend (``MAX_RESULT_SIZE_BYTES``, ``MAX_ARG_SIZE_BYTES``, ``RESULT_TTL_SECONDS``,
      ``RESULT_STORAGE_*``). Its result backend is ``result_backend``, else the one ``RESULT_BACKEND`` and
      ``RESULT_BACKEND_URL`` describe (``sql``: an ``SQLBackend``), else Redis over the broker's own connection
      for a ``RedisBroker``, else a ``StubBackend`` for a ``StubBroker``. A broker that already has Dramatiq's
      Results middleware keeps it and its backend, which ours replaces in place.
    - **RayExecutionMiddleware** (``RAY_ADDRESS``, ``RAY_RUNTIME_ENV``, ``RUNNER``, ``STUCK_TASK_TIMEOUT_SECONDS``,
      ``DEFAULT_CONCURRENCY``, ``RAY_LOG_LEVEL``).
    - **Webhooks**, when ``WEBHOOK_SECRETS`` is set (``WEBHOOK_URL``, ``WEBHOOK_ALLOW_HTTP``,
      ``WEBHOOK_MAX_ATTEMPTS``, ``WEBHOOK_MAX_AGE_SECONDS``, ``WEBHOOK_PROGRESS``,
      ``WEBHOOK_PROGRESS_EVERY_SECONDS``).

    Call it before declaring actors: Dramatiq rejects actor options (``ray_options``, ``max_attempts``, ...) that
    no middleware on the broker declares.

    Parameters:
      broker: The broker to configure.
      settings: A mapping of settings; ``None`` reads ``DRAMATIQ_RAY_SETTINGS`` and the environment.
      result_backend: The Dramatiq result backend that keeps small results and pointers.

    Returns:
      An :class:`Installed` naming the middleware instances.

    Raises:
      ConfigurationError: the settings are invalid (every problem listed), or no result backend can be chosen
        for this broker (a RabbitMQ broker needs ``result_backend=``).
    """
    from .execution import RayExecutionMiddleware
    from .results import Results
    from .retries import Retries

    loaded = load_settings(settings)
    store = build_store(loaded)

    existing_results = [m for m in broker.middleware if isinstance(m, DramatiqResults)]
    backend = result_backend
    if backend is None:
        backend = build_result_backend(loaded, broker)  # RESULT_BACKEND, RESULT_BACKEND_URL
    if backend is None and existing_results:
        backend = existing_results[0].backend
    if backend is None:
        backend = _default_result_backend(broker)
    if backend is None:
        raise ConfigurationError(
            f"setup() cannot choose a result backend for a {type(broker).__name__}: pass result_backend=, e.g. "
            "RedisBackend(url=...)."
        )
    from .results import SpillingBackend

    if isinstance(backend, SpillingBackend):
        backend = backend.backend
    # Build everything first: a bad setting must leave the broker as it was.
    results = Results(
        backend=backend,
        store=store,
        max_inline_bytes=loaded.max_result_size_bytes,
        max_inline_arg_bytes=loaded.max_arg_size_bytes,
        on_store_error=loaded.result_on_store_error,
        result_ttl=int(loaded.result_ttl_seconds * 1000),
    )
    retries = Retries(
        max_attempts=loaded.max_task_attempts,
        backoff=int(loaded.retry_backoff_seconds * 1000),
        max_backoff=int(loaded.retry_max_backoff_seconds * 1000),
        denylist=list(loaded.retry_exception_denylist),
    )
    execution = RayExecutionMiddleware(
        address=loaded.ray_address,
        runtime_env=dict(loaded.ray_runtime_env) or None,
        runner=loaded.runner,
        stuck_timeout=loaded.stuck_task_timeout_seconds,
        job_address=loaded.ray_job_address,
        job_python=loaded.ray_job_python,
        log_level=loaded.ray_log_level,
        max_in_flight=loaded.default_concurrency,
    )
    webhooks = None
    if loaded.webhook_secrets:
        from .delivery import Webhooks

        webhooks = Webhooks(
            secrets=list(loaded.webhook_secrets),
            url=loaded.webhook_url,
            allow_http=loaded.webhook_allow_http,
            max_attempts=loaded.webhook_max_attempts,
            max_age=int(loaded.webhook_max_age_seconds * 1000),
            progress=loaded.webhook_progress,
            progress_every=max(int(loaded.webhook_progress_every_seconds * 1000), 1),
        )
    for old in existing_results:
        broker.middleware.remove(old)
    broker.add_middleware(results)
    broker.add_middleware(retries)
    broker.add_middleware(execution)
    if webhooks is not None:
        broker.add_middleware(webhooks)
    logger.info("dramatiq-ray installed on %s with settings %s.", type(broker).__name__, loaded.redacted())
    return Installed(settings=loaded, results=results, execution=execution, retries=retries, webhooks=webhooks)
