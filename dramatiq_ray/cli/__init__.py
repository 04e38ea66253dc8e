"""The ``dramatiq-ray`` command: check a deployment, read results, collect old blobs, verify a blob, cancel a
message or read its progress.

Built on ``argparse`` (the standard library) rather than click: the command is small, and producers and workers
should not pull in another dependency for it.

Every command takes ``--broker module[:attr]`` and then uses the store, result backend and Ray address configured
on that broker's middleware, falling back to the settings only for what the broker does not configure.

Exit codes: 0 success; 1 a check or verification failed, the message failed, or a store error; 2 a usage or
configuration error; 3 the result is not there (yet).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import IO

from ..errors import ConfigurationError, DramatiqRayError
from . import _cancel, _check, _gc, _replicas, _result, _results, _verify
from ._common import EXIT_FAILED, EXIT_MISSING, EXIT_OK, EXIT_USAGE, UsageError
from ._parser import build_parser, parse_duration

__all__ = ["EXIT_FAILED", "EXIT_MISSING", "EXIT_OK", "EXIT_USAGE", "main", "parse_duration"]

_COMMANDS: dict[str, Callable[[argparse.Namespace, IO[str]], int]] = {
    "check": _check.run,
    "result": _result.run,
    "results": _results.run,
    "gc": _gc.run,
    "replicas": _replicas.run,
    "verify": _verify.run,
    "cancel": _cancel.run_cancel,
    "progress": _cancel.run_progress,
}


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``), writing to ``out`` (default: stdout) and
    errors to stderr; returns the exit code. Usage errors exit through ``SystemExit(2)``, as argparse does."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    command = args.command
    try:
        return _COMMANDS[command](args, out)
    except UsageError as error:
        sys.stderr.write(f"dramatiq-ray {command}: {error}\n")
        return EXIT_USAGE
    except ConfigurationError as error:
        sys.stderr.write(f"dramatiq-ray {command}: configuration error: {error}\n")
        return EXIT_USAGE
    except DramatiqRayError as error:
        sys.stderr.write(f"dramatiq-ray {command}: {type(error).__name__}: {error}\n")
        return EXIT_FAILED
    except Exception as error:  # a store or backend client's error: report it as the store error it is
        sys.stderr.write(f"dramatiq-ray {command}: {type(error).__name__}: {error}\n")
        return EXIT_FAILED
