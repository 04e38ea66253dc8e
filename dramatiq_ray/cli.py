"""The ``dramatiq-ray`` command: check a deployment, read results, collect old blobs, verify a blob.

Built on ``argparse`` (the standard library) rather than click: the command is small, and producers and workers
should not pull in another dependency for it.

Exit codes: 0 success, 1 a check or verification failed, 2 a usage or configuration error, 3 the result is not
there (yet).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import IO, Any

import dramatiq

from .errors import ConfigurationError, DramatiqRayError
from .settings import load_settings

__all__ = ["main", "parse_duration"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MISSING = 0, 1, 2, 3

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit ``s``, ``m``, ``h``, ``d`` or ``w`` (``90m``, ``7d``).

    Raises:
      argparse.ArgumentTypeError: ``text`` is not such a duration, or not positive.
    """
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration like 600, 90m, 12h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _load_broker(reference: str) -> dramatiq.Broker:
    module_name, _, attribute = reference.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as the dramatiq command does: modules of the current directory import
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"--broker {reference!r}: cannot import {module_name!r} ({error}).") from error
    broker = getattr(module, attribute or "broker", None)
    if broker is None and not attribute:
        broker = dramatiq.get_broker()
    if not isinstance(broker, dramatiq.Broker):
        raise ConfigurationError(
            f"--broker {reference!r}: {module_name}.{attribute or 'broker'} is not a Dramatiq broker. "
            "Name it as 'package.module:attribute'."
        )
    return broker


def _store_from_settings() -> Any:
    from ._install import build_store

    return build_store(load_settings())


def _spilling_backend(broker: dramatiq.Broker) -> Any:
    from dramatiq.results import Results

    from .results import find_spilling_backend

    backend = find_spilling_backend(broker)
    if backend is None:
        plain = [m for m in broker.middleware if isinstance(m, Results)]
        if plain:
            return plain[0].backend
        raise ConfigurationError(
            "The broker has no Results middleware: add dramatiq_ray.Results (or call dramatiq_ray.setup) in the "
            "module --broker names."
        )
    return backend


# --- check ----------------------------------------------------------------------------------------------------


class _Table:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.failed = False

    def row(self, name: str, run: Callable[[], str]) -> None:
        try:
            detail, verdict = run(), "ok"
        except _Skipped as skipped:
            detail, verdict = str(skipped), "skipped"
        except Exception as error:
            detail, verdict = f"{type(error).__name__}: {error}", "FAILED"
            self.failed = True
        self.out.write(f"{name:<14} {verdict:<8} {detail}\n")
        self.out.flush()


class _Skipped(Exception):
    pass


def _check_ray(address: str | None, *, skip: bool = False) -> str:
    if skip:
        raise _Skipped("--skip-ray given")
    import ray

    from .execution.connection import RayRuntime

    runtime = RayRuntime(address=address)
    runtime.attach()
    try:
        cpus = ray.cluster_resources().get("CPU", 0)  # type: ignore[no-untyped-call]
        where = runtime.resolved_address() or "a new local Ray (the embedded default)"
        return f"attached to {where}; cluster CPUs: {cpus:g}"
    finally:
        runtime.detach()


def _check_broker(broker: dramatiq.Broker | None) -> str:
    if broker is None:
        raise _Skipped("no --broker given")
    client = getattr(broker, "client", None)
    if client is not None and hasattr(client, "ping"):
        client.ping()
        return f"{type(broker).__name__} answered PING"
    connection = getattr(broker, "connection", None)
    if connection is not None:
        return f"{type(broker).__name__} connected"
    return f"{type(broker).__name__} (no ping available)"


def _check_backend(broker: dramatiq.Broker | None) -> str:
    from dramatiq.results import ResultMissing

    if broker is None:
        raise _Skipped("no --broker given")
    backend = _spilling_backend(broker)
    probe: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="dramatiq-ray-check", actor_name="dramatiq_ray_check", args=(), kwargs={}, options={}
    )
    with contextlib.suppress(ResultMissing):
        backend.get_result(probe, block=False)
    return f"{type(getattr(backend, 'backend', backend)).__name__} answered"


def _check_store() -> str:
    from .results import BlobInfo, parse_pointer
    from .results.pointers import digest_of
    from .results.stores.base import verify_blob

    store = _store_from_settings()
    if not store.persistent:
        return f"{store.describe()}: keeps digests only (large results cannot be read back)"
    data = json.dumps({"dramatiq-ray-check": uuid.uuid4().hex}).encode()
    pointer = parse_pointer(store.put(digest_of(data), data))
    verify_blob(pointer, store.get(pointer))
    store.delete_blob(BlobInfo(pointer.location, pointer.size, 0.0), cutoff=time.time() + 3600)
    return f"{store.describe()}: wrote, read and deleted a probe blob"


def _cmd_check(args: argparse.Namespace, out: IO[str]) -> int:
    table = _Table(out)
    settings_holder: dict[str, Any] = {}

    def settings_check() -> str:
        settings_holder["settings"] = load_settings()
        return "valid"

    table.row("settings", settings_check)
    if "settings" not in settings_holder:
        out.write("verdict: FAILED (fix the settings first)\n")
        return EXIT_FAILED
    settings = settings_holder["settings"]
    broker: dramatiq.Broker | None = None
    if args.broker:

        def broker_check() -> str:
            nonlocal broker
            broker = _load_broker(args.broker)
            return _check_broker(broker)

        table.row("broker", broker_check)
    else:
        table.row("broker", lambda: _check_broker(None))
    table.row("result backend", lambda: _check_backend(broker))
    table.row("blob store", _check_store)
    table.row("ray", lambda: _check_ray(None if args.skip_ray else settings.ray_address, skip=args.skip_ray))
    out.write(f"verdict: {'FAILED' if table.failed else 'ok'}\n")
    return EXIT_FAILED if table.failed else EXIT_OK


# --- result ---------------------------------------------------------------------------------------------------


def _cmd_result(args: argparse.Namespace, out: IO[str]) -> int:
    from dramatiq.results import ResultFailure, ResultMissing

    from .results import get_pointer

    broker = _load_broker(args.broker)
    backend = _spilling_backend(broker)
    queue = args.queue
    if queue is None:
        try:
            queue = broker.get_actor(args.actor).queue_name
        except dramatiq.errors.ActorNotFound:
            queue = "default"
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=args.actor, args=(), kwargs={}, options={}, message_id=args.message_id
    )
    try:
        if args.pointer:
            pointer = get_pointer(message, backend=backend)
            out.write(f"{pointer}\n" if pointer is not None else "(stored inline: no pointer)\n")
            return EXIT_OK
        value = backend.get_result(message, block=False)
    except ResultMissing:
        out.write(f"No result for message {args.message_id} of {args.actor!r} (queue {queue!r}) yet.\n")
        return EXIT_MISSING
    except ResultFailure as failure:
        out.write(f"The message failed: {failure.orig_exc_type}: {failure.orig_exc_msg}\n")
        return EXIT_FAILED
    out.write(json.dumps(value, indent=2, default=repr) + "\n")
    return EXIT_OK


# --- gc -------------------------------------------------------------------------------------------------------


def _cmd_gc(args: argparse.Namespace, out: IO[str]) -> int:
    from .results import gc_blobs

    store = _store_from_settings()
    counts = {"seen": 0}

    def progress(info: Any, action: str) -> None:
        counts["seen"] += 1
        if args.verbose or action in ("deleted", "would delete"):
            out.write(f"{action:<12} {info.name} ({info.size} bytes)\n")
        elif counts["seen"] % 1000 == 0:
            out.write(f"... {counts['seen']} blobs scanned\n")
        out.flush()

    report = gc_blobs(store, older_than=args.older_than, dry_run=args.dry_run, progress=progress)
    verb = "would delete" if args.dry_run else "deleted"
    out.write(
        f"{store.describe()}: scanned {report.scanned}, kept {report.kept}, {verb} {len(report.deleted)} "
        f"({report.bytes_freed} bytes)\n"
    )
    return EXIT_OK


# --- verify ---------------------------------------------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace, out: IO[str]) -> int:
    from .results import parse_pointer
    from .results.stores.base import verify_blob

    pointer = parse_pointer(args.pointer)
    store = _store_from_settings()
    if pointer.scheme == "oversize":
        out.write(f"{args.pointer}: a digest-only pointer; nothing was stored to verify.\n")
        return EXIT_FAILED
    verify_blob(pointer, store.get(pointer))
    out.write(f"ok: {pointer.size} bytes, sha256 {pointer.digest}\n")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dramatiq-ray",
        description="Operate dramatiq-ray: check a deployment, read results, collect old blobs, verify blobs. "
        "Settings come from DRAMATIQ_RAY_SETTINGS=module:attr and DRAMATIQ_RAY_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check", help="validate settings and reach Ray, the broker, the result backend and the blob store"
    )
    check.add_argument("--broker", metavar="MODULE[:ATTR]", help="import the broker from here (attribute 'broker')")
    check.add_argument("--skip-ray", action="store_true", help="do not attach to Ray")
    check.set_defaults(run=_cmd_check)

    result = commands.add_parser("result", help="print a stored result (hydrated), its failure, or its pointer")
    result.add_argument("message_id", metavar="MESSAGE_ID")
    result.add_argument("--actor", required=True, help="the actor's name")
    result.add_argument("--queue", help="the actor's queue (default: the declared actor's, else 'default')")
    result.add_argument(
        "--broker", required=True, metavar="MODULE[:ATTR]", help="import the broker (with its Results) from here"
    )
    result.add_argument("--pointer", action="store_true", help="print the raw pointer instead of the value")
    result.set_defaults(run=_cmd_result)

    gc = commands.add_parser("gc", help="delete spilled blobs that no live result can point to")
    gc.add_argument(
        "--older-than",
        type=parse_duration,
        default=parse_duration("1d"),
        metavar="DURATION",
        help="age bound, longer than every result TTL in use: 600, 90m, 12h, 7d (default 1d)",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    gc.add_argument("-v", "--verbose", action="store_true", help="list every blob scanned")
    gc.set_defaults(run=_cmd_gc)

    verify = commands.add_parser("verify", help="read the blob a pointer names and check its size and SHA-256")
    verify.add_argument("pointer", metavar="POINTER")
    verify.set_defaults(run=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args, out)
    except ConfigurationError as error:
        sys.stderr.write(f"dramatiq-ray {args.command}: configuration error: {error}\n")
        return EXIT_USAGE
    except DramatiqRayError as error:
        sys.stderr.write(f"dramatiq-ray {args.command}: {type(error).__name__}: {error}\n")
        return EXIT_FAILED
    return code


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
