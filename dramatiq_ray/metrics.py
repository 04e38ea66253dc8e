"""Prometheus metrics, when ``prometheus_client`` is installed; silent no-ops when it is not.

The metrics register in ``prometheus_client``'s default registry, so Dramatiq's own Prometheus middleware (and
any exposition of the default registry) serves them beside Dramatiq's. Names start with ``dramatiq_ray_``.

| metric | type | labels |
|---|---|---|
| ``dramatiq_ray_results_spilled_total`` | counter | ``store`` |
| ``dramatiq_ray_bytes_spilled_total`` | counter | ``store`` |
| ``dramatiq_ray_spill_fallbacks_total`` | counter | ``store`` |
| ``dramatiq_ray_hydrations_total`` | counter | ``store`` |
| ``dramatiq_ray_hydration_failures_total`` | counter | ``store``, ``error`` |
| ``dramatiq_ray_task_wait_seconds`` | histogram | ``actor_name`` |
| ``dramatiq_ray_system_failures_total`` | counter | ``error`` |
| ``dramatiq_ray_retries_total`` | counter | ``actor_name``, ``exception`` |
| ``dramatiq_ray_retry_denials_total`` | counter | ``actor_name``, ``exception`` |
| ``dramatiq_ray_webhook_attempts_total`` | counter | ``result`` |
| ``dramatiq_ray_webhook_deliveries_total`` | counter | ``outcome`` |
| ``dramatiq_ray_webhook_progress_events_total`` | counter | ``outcome`` |
| ``dramatiq_ray_cancellations_total`` | counter | ``actor_name``, ``outcome`` |
| ``dramatiq_ray_progress_writes_total`` | counter | ``actor_name`` |
| ``dramatiq_ray_progress_throttled_total`` | counter | ``actor_name`` |
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = [
    "observe_ray_wait",
    "record_cancellation",
    "record_hydration",
    "record_hydration_failure",
    "record_progress",
    "record_ray_system_failure",
    "record_retry",
    "record_retry_denied",
    "record_spill",
    "record_spill_fallback",
    "record_webhook_attempt",
    "record_webhook_outcome",
    "record_webhook_progress",
]

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None

_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _create() -> dict[str, Any]:
    try:
        from prometheus_client import Counter, Histogram
    except ImportError:
        return {}
    return {
        "spilled": Counter("dramatiq_ray_results_spilled", "Results written to a blob store.", ["store"]),
        "bytes": Counter("dramatiq_ray_bytes_spilled", "Bytes of results written to a blob store.", ["store"]),
        "fallbacks": Counter(
            "dramatiq_ray_spill_fallbacks",
            "Oversized results kept as a digest only because the store failed.",
            ["store"],
        ),
        "hydrations": Counter("dramatiq_ray_hydrations", "Spilled results read back from a store.", ["store"]),
        "hydration_failures": Counter(
            "dramatiq_ray_hydration_failures", "Spilled results that could not be read back.", ["store", "error"]
        ),
        "wait": Histogram(
            "dramatiq_ray_task_wait_seconds",
            "Time a worker thread waited for its Ray task.",
            ["actor_name"],
            buckets=_WAIT_BUCKETS,
        ),
        "system_failures": Counter(
            "dramatiq_ray_system_failures", "Ray system failures (crashes, lost nodes, OOM, ...).", ["error"]
        ),
        "retries": Counter(
            "dramatiq_ray_retries", "Messages requeued for another attempt.", ["actor_name", "exception"]
        ),
        "denials": Counter(
            "dramatiq_ray_retry_denials",
            "Messages failed at once because their exception is on the denylist.",
            ["actor_name", "exception"],
        ),
        "webhook_attempts": Counter(
            "dramatiq_ray_webhook_attempts",
            "Webhook POSTs, by result (2xx, 410, 3xx, 4xx, 5xx, timeout, connection, redirect).",
            ["result"],
        ),
        "webhook_deliveries": Counter(
            "dramatiq_ray_webhook_deliveries",
            "Webhooks settled, by outcome: delivered, gone (410), failed (attempts or age exhausted), refused.",
            ["outcome"],
        ),
        "webhook_progress": Counter(
            "dramatiq_ray_webhook_progress_events",
            "Webhook progress events, by outcome: delivered, dropped (not 2xx; never retried), stale (after the "
            "completion webhook).",
            ["outcome"],
        ),
        "cancellations": Counter(
            "dramatiq_ray_cancellations",
            "Cancellations, by outcome: requested, finished and unknown (cancel calls), skipped (before the body "
            "started), stopped (while it ran).",
            ["actor_name", "outcome"],
        ),
        "progress_writes": Counter(
            "dramatiq_ray_progress_writes", "Progress reports written to the result backend.", ["actor_name"]
        ),
        "progress_throttled": Counter(
            "dramatiq_ray_progress_throttled",
            "Progress reports never written: a later report replaced them within the throttle interval.",
            ["actor_name"],
        ),
    }


def _get(name: str) -> Any:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _create()
    return _metrics.get(name)


def record_spill(store: str, size: int) -> None:
    """A result of ``size`` bytes was written to ``store``."""
    spilled, written = _get("spilled"), _get("bytes")
    if spilled is not None:
        spilled.labels(store).inc()
        written.labels(store).inc(size)


def record_spill_fallback(store: str) -> None:
    """A store failed while writing and only a digest pointer was kept."""
    metric = _get("fallbacks")
    if metric is not None:
        metric.labels(store).inc()


def record_hydration(store: str) -> None:
    """A spilled result was read back from ``store``."""
    metric = _get("hydrations")
    if metric is not None:
        metric.labels(store).inc()


def record_hydration_failure(store: str, error: BaseException) -> None:
    """Reading a spilled result from ``store`` failed with ``error``."""
    metric = _get("hydration_failures")
    if metric is not None:
        metric.labels(store, type(error).__name__).inc()


def observe_ray_wait(actor_name: str, seconds: float) -> None:
    """A worker thread waited ``seconds`` for the Ray task of ``actor_name``."""
    metric = _get("wait")
    if metric is not None:
        metric.labels(actor_name).observe(seconds)


def record_ray_system_failure(error: BaseException) -> None:
    """Ray failed a task for a reason outside the actor's code."""
    metric = _get("system_failures")
    if metric is not None:
        metric.labels(type(error).__name__).inc()


def record_retry(actor_name: str, error: BaseException) -> None:
    """A message of ``actor_name`` was requeued after ``error``."""
    metric = _get("retries")
    if metric is not None:
        metric.labels(actor_name, type(error).__name__).inc()


def record_retry_denied(actor_name: str, error: BaseException) -> None:
    """A message of ``actor_name`` failed at once because ``error`` is denylisted."""
    metric = _get("denials")
    if metric is not None:
        metric.labels(actor_name, type(error).__name__).inc()


def record_webhook_attempt(result: str) -> None:
    """One webhook POST ended with ``result`` (``2xx``, ``410``, ``5xx``, ``timeout``, ``connection``, ...)."""
    metric = _get("webhook_attempts")
    if metric is not None:
        metric.labels(result).inc()


def record_webhook_outcome(outcome: str) -> None:
    """A webhook was settled: ``delivered``, ``gone`` (410), ``failed`` (given up) or ``refused`` (redirect)."""
    metric = _get("webhook_deliveries")
    if metric is not None:
        metric.labels(outcome).inc()


def record_cancellation(actor_name: str, outcome: str) -> None:
    """A cancellation of a message of ``actor_name`` (``""`` when only its id is known) came to ``outcome``:
    ``requested``, ``finished`` or ``unknown`` (what :func:`dramatiq_ray.cancel` returned), ``skipped`` (a worker
    took it and never ran its body) or ``stopped`` (its body was stopped while it ran)."""
    metric = _get("cancellations")
    if metric is not None:
        metric.labels(actor_name, outcome).inc()


def record_progress(actor_name: str, *, written: int = 0, throttled: int = 0) -> None:
    """A body of ``actor_name`` wrote ``written`` progress reports, and ``throttled`` of its reports were replaced
    by a later one before they were written."""
    if written:
        metric = _get("progress_writes")
        if metric is not None:
            metric.labels(actor_name).inc(written)
    if throttled:
        metric = _get("progress_throttled")
        if metric is not None:
            metric.labels(actor_name).inc(throttled)


def record_webhook_progress(outcome: str) -> None:
    """A webhook progress event was ``delivered``, ``dropped`` (not 2xx) or ``stale`` (after the completion)."""
    metric = _get("webhook_progress")
    if metric is not None:
        metric.labels(outcome).inc()
