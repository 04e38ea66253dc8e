"""The command line's grammar: commands, options and durations."""

from __future__ import annotations

import argparse
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_BROKER_HELP = (
    "import the broker from here (attribute 'broker' by default) and use the store, result backend and Ray "
    "address configured on its middleware; settings fill in only what it does not configure"
)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit ``s``, ``m``, ``h``, ``d`` or ``w`` (``90m``, ``7d``).

    Raises:
      argparse.ArgumentTypeError: ``text`` is not such a duration, or not positive.
    """
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration like 600, 90m, 12h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``dramatiq-ray``; ``args.command`` names the command chosen."""
    parser = argparse.ArgumentParser(
        prog="dramatiq-ray",
        description="Operate dramatiq-ray: check a deployment, read results, list recorded results, collect old blobs, "
        "verify blobs. "
        "With --broker, the store, result backend and Ray address are the ones configured on that broker; "
        "settings (DRAMATIQ_RAY_SETTINGS=module:attr and DRAMATIQ_RAY_* environment variables) fill in the rest.",
        epilog="Exit codes: 0 success; 1 a check or verification failed, the message failed, or a store error; "
        "2 a usage or configuration error; 3 the result is not there (yet).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check", help="validate settings and reach the broker, the result backend, the blob store and Ray"
    )
    check.add_argument("--broker", metavar="MODULE[:ATTR]", help=_BROKER_HELP)
    check.add_argument("--skip-ray", action="store_true", help="do not attach to Ray")
    check.add_argument(
        "--strict", action="store_true", help="exit 1 when a row warns (e.g. a store that keeps digests only)"
    )

    result = commands.add_parser("result", help="print a stored result (hydrated), its failure, or its pointer")
    result.add_argument("message_id", metavar="MESSAGE_ID")
    result.add_argument("--actor", required=True, help="the name of an actor declared on the broker")
    result.add_argument("--queue", help="the queue the message was sent to (default: the actor's)")
    result.add_argument("--broker", required=True, metavar="MODULE[:ATTR]", help=_BROKER_HELP)
    result.add_argument("--pointer", action="store_true", help="print the raw pointer instead of the value")

    cancel = commands.add_parser(
        "cancel", help="cancel a message: skipped if it has not started, stopped if it runs (exit 1: nothing to cancel)"
    )
    cancel.add_argument("message_id", metavar="MESSAGE_ID")
    cancel.add_argument("--broker", required=True, metavar="MODULE[:ATTR]", help=_BROKER_HELP)

    progress = commands.add_parser("progress", help="print the latest progress a message's body reported")
    progress.add_argument("message_id", metavar="MESSAGE_ID")
    progress.add_argument("--broker", required=True, metavar="MODULE[:ATTR]", help=_BROKER_HELP)

    gc = commands.add_parser("gc", help="delete spilled blobs that no live result can point to")
    gc.add_argument("--broker", metavar="MODULE[:ATTR]", help=_BROKER_HELP)
    gc.add_argument(
        "--older-than",
        type=parse_duration,
        default=parse_duration("1d"),
        metavar="DURATION",
        help="age bound, longer than every result TTL in use: 600, 90m, 12h, 7d (default 1d)",
    )
    gc.add_argument(
        "--force", action="store_true", help="accept an --older-than shorter than the longest result TTL seen"
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    gc.add_argument("-v", "--verbose", action="store_true", help="list every blob scanned")
    gc.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="with an SQL result backend: delete its expired rows N at a time (default 1000)",
    )

    results = commands.add_parser("results", help="list the messages an SQL result backend recorded")
    listing = results.add_subparsers(dest="results_command", required=True, metavar="SUBCOMMAND")
    listed = listing.add_parser("list", help="list recorded messages, newest first")
    listed.add_argument("--actor", help="only this actor's messages")
    listed.add_argument(
        "--status",
        action="append",
        choices=("enqueued", "running", "success", "failure", "skipped"),
        help="only messages with this status (repeatable)",
    )
    listed.add_argument(
        "--since", type=parse_duration, metavar="DURATION", help="only messages changed in the last 90m, 1h, 7d..."
    )
    listed.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="at most N (default 100)")
    listed.add_argument("--json", action="store_true", help="print a JSON array of records")
    listed.add_argument("--url", help="the database URL (sqlite:///..., postgresql://...) instead of the broker's")
    listed.add_argument("--table-prefix", help="with --url: the backend's table_prefix (default dramatiq_ray_)")
    listed.add_argument("--broker", metavar="MODULE[:ATTR]", help=_BROKER_HELP)

    replicas = commands.add_parser(
        "replicas",
        help="list the pools of warm replicas on the Ray cluster (actor, version, replicas, in flight, "
        "nodes, age), or drain one",
    )
    replicas.add_argument("--broker", metavar="MODULE[:ATTR]", help=_BROKER_HELP)
    replicas.add_argument("--address", help="the Ray address, instead of the broker's or the settings'")
    replicas.add_argument(
        "--drain", metavar="ACTOR", help="drain the pools of this actor: they finish their calls, then exit"
    )
    replicas.add_argument("--version", help="with --drain: only this version's pool")
    replicas.add_argument("--json", action="store_true", help="print what each pool reports, as JSON")

    verify = commands.add_parser("verify", help="read the blob a pointer names and check its size and SHA-256")
    verify.add_argument("pointer", metavar="POINTER")
    verify.add_argument("--broker", metavar="MODULE[:ATTR]", help=_BROKER_HELP)
    return parser
