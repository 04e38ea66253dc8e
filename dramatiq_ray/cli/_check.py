"""``dramatiq-ray check``: one row per part of a deployment, then a verdict."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import IO, Any

import dramatiq

from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, FROM_RESULTS, FROM_SETTINGS, Sources, load_broker

#: The logger that reports a failed attach; the ray row reports it already.
_ATTACH_LOGGER = "dramatiq_ray.execution.connection"


class _Skipped(Exception):
    pass


class _Warning(Exception):
    """The part works, but not as a deployment usually wants (the row says why); exit code 0 unless --strict."""


class _Row:
    """What a row checks (``subject``, named as soon as it is known) and how it went."""

    subject: str | None = None


class _Table:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.failed = False
        self.warnings = 0

    def row(self, name: str, run: Callable[[_Row], str]) -> bool:
        """Print a row with what ``run`` returned, or the exception it raised; return whether it did not fail."""
        row = _Row()
        try:
            detail, verdict = run(row), "ok"
        except _Skipped as skipped:
            detail, verdict = str(skipped), "skipped"
        except _Warning as warning:
            detail, verdict = str(warning), "WARNING"
            self.warnings += 1
        except Exception as error:
            detail, verdict = f"{type(error).__name__}: {error}", "FAILED"
            self.failed = True
        if row.subject:
            detail = f"{row.subject}: {detail}"
        self.out.write(f"{name:<14} {verdict:<8} {detail}\n")
        self.out.flush()
        return verdict != "FAILED"


@contextlib.contextmanager
def _silenced(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)

    def drop(record: logging.LogRecord) -> bool:
        return False

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _check_broker(broker: dramatiq.Broker) -> str:
    client = getattr(broker, "client", None)
    if client is not None and hasattr(client, "ping"):
        client.ping()
        return f"{type(broker).__name__} answered PING"
    if getattr(broker, "connection", None) is not None:
        return f"{type(broker).__name__} connected"
    return f"{type(broker).__name__} (no ping available)"


def _check_backend(sources: Sources, row: _Row) -> str:
    if sources.broker is None:
        return _check_settings_backend(sources, row)
    backend, _ = sources.result_backend()
    row.subject = f"{type(getattr(backend, 'backend', backend)).__name__} ({FROM_RESULTS})"
    _read_probe(backend)
    return "answered"


def _check_settings_backend(sources: Sources, row: _Row) -> str:
    """Without ``--broker``: the result backend ``RESULT_BACKEND`` and ``RESULT_BACKEND_URL`` describe."""
    from .._install import build_result_backend

    settings = sources.settings()
    if settings.result_backend is None:
        raise _Skipped(
            "no --broker given and RESULT_BACKEND is not set (the result backend is configured on the broker)"
        )
    if settings.result_backend == "redis" and not settings.result_backend_url:
        raise _Skipped("no --broker given: RESULT_BACKEND='redis' without RESULT_BACKEND_URL uses the broker's Redis")
    backend = build_result_backend(settings)
    assert backend is not None
    row.subject = f"{type(backend).__name__} ({FROM_SETTINGS})"
    try:
        _read_probe(backend)
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
    return "answered"


def _read_probe(backend: Any) -> None:
    """Read the result of a message that was never sent: a backend that answers raises ``ResultMissing``."""
    from dramatiq.results import ResultMissing

    probe: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="dramatiq-ray-check", actor_name="dramatiq_ray_check", args=(), kwargs={}, options={}
    )
    with contextlib.suppress(ResultMissing):
        backend.get_result(probe, block=False)


def _check_store(sources: Sources, row: _Row) -> str:
    from ..payloads.stores.integrity import probe

    store, source = sources.store()
    spilling = sources.spilling_backend()
    if spilling is not None and spilling.store is None and not store.persistent:
        # The settings' store stands in for none: this broker's workers keep large results whole.
        row.subject = f"none ({FROM_RESULTS})"
        return "results are never spilled: large ones stay whole in the result backend"
    row.subject = f"{store.describe()} ({source})"
    if not store.persistent:
        raise _Warning(
            "keeps only the digest of results over max_inline_bytes (MAX_RESULT_SIZE_BYTES): their values are lost "
            "and reading them raises DigestOnlyResultError. RESULT_STORAGE_BACKEND='digest' is the default: set it "
            "to filesystem, s3 or gcs (or pass a FilesystemStore, S3Store or GCSStore to Results) to keep them"
        )
    probe(store)
    return "wrote, read and deleted a probe blob"


def _check_ray(sources: Sources, row: _Row, *, skip: bool) -> str:
    if skip:
        raise _Skipped("--skip-ray given")
    runtime, source = sources.ray_runtime()
    row.subject = f"Ray at {runtime.resolved_address() or 'a new local Ray (the embedded default)'} ({source})"
    with _silenced(_ATTACH_LOGGER):  # the row says it: no second report of a failed attach
        runtime.attach()
    try:
        import ray

        cpus = ray.cluster_resources().get("CPU", 0)  # type: ignore[no-untyped-call]
        return f"attached; cluster CPUs: {cpus:g}"
    finally:
        runtime.detach()


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Check every part; exit 2 when the settings or ``--broker`` are invalid, 1 when a part fails (or, with
    ``--strict``, warns)."""
    table = _Table(out)
    sources = Sources(None)

    def settings_row(row: _Row) -> str:
        sources.settings()
        return "valid"

    if not table.row("settings", settings_row):
        out.write("verdict: FAILED (fix the settings first)\n")
        return EXIT_USAGE

    def broker_row(row: _Row) -> str:
        if not args.broker:
            raise _Skipped("no --broker given")
        sources.broker = load_broker(args.broker)
        return _check_broker(sources.broker)

    if not table.row("broker", broker_row) and sources.broker is None:
        out.write("verdict: FAILED (fix --broker first)\n")
        return EXIT_USAGE
    table.row("result backend", lambda row: _check_backend(sources, row))
    table.row("blob store", lambda row: _check_store(sources, row))
    table.row("ray", lambda row: _check_ray(sources, row, skip=args.skip_ray))
    if table.failed:
        verdict = "FAILED"
    elif table.warnings:
        plural = "s" if table.warnings > 1 else ""
        verdict = f"{'FAILED (--strict)' if args.strict else 'ok'} with {table.warnings} warning{plural}"
    else:
        verdict = "ok"
    out.write(f"verdict: {verdict}\n")
    return EXIT_FAILED if table.failed or (args.strict and table.warnings) else EXIT_OK
