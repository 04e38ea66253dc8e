"""The entrypoint of a Ray job started by the ``ray_job`` runner:
``python -m dramatiq_ray.execution.runners.job_entry <job-dir>``.

It reads the job's spec (``<job-dir>/spec.json``) from the blob store named by the ``DRAMATIQ_RAY_JOB_STORE``
environment variable, imports the actor's function by module path, runs it with the message's arguments and
writes the outcome to ``<job-dir>/outcome.json``: ``{"ok": true, "result": ...}`` or ``{"ok": false, "type":
"module.Name", "args": [...], "message": ..., "traceback": ...}``. A body that raises still exits 0 (its failure
is in the outcome); a non-zero exit means the entrypoint itself could not run (the job's logs say why).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import inspect
import json
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from typing import Any

import dramatiq

from ... import context
from ...results.stores.base import BlobStore
from ..body import actor_function

#: The environment variable carrying the (pickled, base64) blob store of the job.
STORE_ENV = "DRAMATIQ_RAY_JOB_STORE"


def encode_store(store: BlobStore) -> str:
    """The value of :data:`STORE_ENV` for ``store`` (stores keep only configuration, never credentials)."""
    return base64.b64encode(pickle.dumps(store)).decode()


def decode_store(value: str) -> BlobStore:
    store = pickle.loads(base64.b64decode(value))
    if not isinstance(store, BlobStore):
        raise TypeError(f"{STORE_ENV} does not hold a blob store.")
    return store


def find_function(module: str, qualname: str) -> Callable[..., Any]:
    """The function an actor (or the plain function an actor was declared from) at ``module.qualname`` runs."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    fn = actor_function(obj)
    if fn is None and callable(obj):
        fn = obj
    if fn is None:
        raise TypeError(f"{module}.{qualname} is neither a Dramatiq actor nor a function.")
    return fn


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the body a spec describes; return its outcome document."""
    encoder = dramatiq.get_encoder()
    message: dramatiq.Message[Any] = dramatiq.Message(**spec["message"])
    token = context._current.set(message)
    try:
        fn = find_function(spec["module"], spec["qualname"])
        result = fn(*spec["args"], **spec["kwargs"])
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        outcome = {"ok": True, "result": result}
        encoder.encode(outcome)
        return outcome
    except Exception as error:
        args: list[Any] = list(error.args)
        try:
            json.dumps(args)
        except (TypeError, ValueError):
            args = [str(error)]
        return {
            "ok": False,
            "type": f"{type(error).__module__}.{type(error).__qualname__}",
            "args": args,
            "message": str(error),
            "traceback": traceback.format_exc(),
        }
    finally:
        context._current.reset(token)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m dramatiq_ray.execution.runners.job_entry <job-dir>", file=sys.stderr)
        return 2
    job_dir = argv[1]
    store = decode_store(os.environ[STORE_ENV])
    raw = store.get_named(f"{job_dir}/spec.json")
    if raw is None:
        print(f"No job spec at {job_dir}/spec.json in {store.describe()}.", file=sys.stderr)
        return 1
    encoder = dramatiq.get_encoder()
    spec = encoder.decode(raw)
    print(f"Running actor {spec['actor']!r} for message {spec['message']['message_id']}.", flush=True)
    outcome = run(spec)
    store.put_named(f"{job_dir}/outcome.json", encoder.encode(outcome))
    print("Actor finished." if outcome["ok"] else f"Actor raised {outcome['type']}.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
