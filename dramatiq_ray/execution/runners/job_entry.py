"""The entrypoint of a Ray job started by the ``ray_job`` runner:
``python -m dramatiq_ray.execution.runners.job_entry <job-dir>``.

It reads the job's spec (``<job-dir>/spec.json``) from the blob store named by the ``DRAMATIQ_RAY_JOB_STORE``
environment variable, imports the actor's function by module path, runs it with the message's arguments and
writes the outcome to ``<job-dir>/outcome.json``: ``{"ok": true, "result": ...}`` or ``{"ok": false, "type":
"module.Name", "args": [...], "message": ..., "traceback": ...}``. A body that raises still exits 0 (its failure
is in the outcome); a non-zero exit means the entrypoint itself could not run (the job's logs say why).

The spec and the outcome are encoded with the submitting worker's Dramatiq encoder, and results with its result
backend's, both carried in ``DRAMATIQ_RAY_JOB_ENCODERS`` (Dramatiq's JSON encoder when it is absent), so a
custom encoder works on both sides. A result that goes nowhere (not stored, not piped, no ``on_success``) and
that the encoder cannot encode is left out of the outcome: nothing would read it.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import sys
import traceback
from typing import Any

import dramatiq
from dramatiq.encoder import Encoder

from ... import _otel
from ...callpath import logs
from ...callpath.body import Target, run_body
from ...callpath.steering import Channel, Steering
from ...errors import ConfigurationError
from ...payloads.plan import SpillPlan
from ...payloads.stores.base import BlobStore

#: The environment variable carrying the (pickled, base64) blob store of the job.
STORE_ENV = "DRAMATIQ_RAY_JOB_STORE"
#: The environment variable carrying the (pickled, base64) encoders of the job: the broker's (spec, outcome) and
#: the result backend's (the spill plan's).
ENCODERS_ENV = "DRAMATIQ_RAY_JOB_ENCODERS"
#: The environment variable carrying the (pickled, base64) channel of cancel marks and progress, when there is one
#: (configuration only: a Redis password is not in it).
CHANNEL_ENV = "DRAMATIQ_RAY_JOB_CHANNEL"


def encode_channel(channel: Channel) -> str:
    """The value of :data:`CHANNEL_ENV` for ``channel``."""
    return base64.b64encode(pickle.dumps(channel)).decode()


def decode_channel(value: str | None) -> Channel | None:
    return pickle.loads(base64.b64decode(value)) if value else None


def encode_encoders(messages: Encoder, results: Encoder) -> str:
    """The value of :data:`ENCODERS_ENV` for these encoders.

    Raises:
      ConfigurationError: an encoder cannot be pickled, so a job cannot use it.
    """
    try:
        return base64.b64encode(pickle.dumps((messages, results))).decode()
    except Exception as error:
        raise ConfigurationError(
            f"The ray_job runner hands the Dramatiq and result encoders to each job, and they cannot be pickled "
            f"({type(error).__name__}: {error}): make the encoder classes picklable, or use runner='ray_core'."
        ) from None


def decode_encoders(value: str | None) -> tuple[Encoder, Encoder]:
    if not value:
        return dramatiq.JSONEncoder(), dramatiq.JSONEncoder()
    messages, results = pickle.loads(base64.b64decode(value))
    return messages, results


def encode_store(store: BlobStore) -> str:
    """The value of :data:`STORE_ENV` for ``store`` (stores keep only configuration, never credentials)."""
    return base64.b64encode(pickle.dumps(store)).decode()


def decode_store(value: str) -> BlobStore:
    store = pickle.loads(base64.b64decode(value))
    if not isinstance(store, BlobStore):
        raise TypeError(f"{STORE_ENV} does not hold a blob store.")
    return store


def run(
    spec: dict[str, Any],
    store: BlobStore | None = None,
    encoders: tuple[Encoder, Encoder] | None = None,
    channel: Channel | None = None,
) -> dict[str, Any]:
    """Run the body a spec describes (reading piped inputs from ``store`` and spilling an oversized result to it);
    return its outcome document, which ``encoders[0]`` (the broker's) can encode. With the spec's ``log_level``,
    the records the body logs at that level or above are in the outcome too (``"logs"``), whether it returned
    or raised.

    Parameters:
      encoders: the broker's encoder (for the outcome) and the result backend's (for the spill plan); ``None``:
        Dramatiq's JSON encoder for both.
    """
    trace_ctx = spec.get("trace_ctx")
    if trace_ctx:
        _otel.setup_once()
        attributes = {"dramatiq.actor": spec["actor"], "messaging.message.id": spec["message"]["message_id"]}
        with _otel.span(f"run {spec['actor']}", parent=trace_ctx, attributes=attributes) as span:
            outcome = _logged(spec, store, encoders, channel)
            if span is not None and not outcome.get("ok"):
                from opentelemetry import trace

                span.set_status(trace.Status(trace.StatusCode.ERROR, str(outcome.get("type"))))
            return outcome
    return _logged(spec, store, encoders, channel)


def _logged(
    spec: dict[str, Any],
    store: BlobStore | None,
    encoders: tuple[Encoder, Encoder] | None,
    channel: Channel | None,
) -> dict[str, Any]:
    level = spec.get("log_level")
    if level is None:
        return _run(spec, store, encoders, channel)
    with logs.capture(int(level)) as captured:
        outcome = _run(spec, store, encoders, channel)
    return {**outcome, "logs": captured.taken().to_dict()}


def _run(
    spec: dict[str, Any],
    store: BlobStore | None = None,
    encoders: tuple[Encoder, Encoder] | None = None,
    channel: Channel | None = None,
) -> dict[str, Any]:
    encoder, results_encoder = encoders or decode_encoders(None)
    message: dramatiq.Message[Any] = dramatiq.Message(**spec["message"])
    plan = (
        SpillPlan(
            store,
            results_encoder,
            spec.get("max_inline_bytes"),
            allow_pickle=bool(spec.get("allow_pickle")),
            compression=spec.get("compression"),
            compression_level=spec.get("compression_level"),
        )
        if store is not None
        else None
    )
    try:
        fn = Target(spec["actor"], module=spec["module"], qualname=spec["qualname"]).resolve()
        steering = Steering(channel, message.message_id) if channel is not None else None
        result = run_body(fn, tuple(spec["args"]), dict(spec["kwargs"]), message, plan, steering)
        outcome = {"ok": True, "result": result}
        if spec.get("max_inline_bytes") is None and result is not None:
            # The result goes nowhere: it need not survive the trip back, so one the encoder refuses is dropped.
            try:
                encoder.encode(outcome)
            except Exception:
                print(f"The result ({type(result).__name__}) is not sent back: nothing reads it.", flush=True)
                return {"ok": True, "result": None}
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
    encoders = decode_encoders(os.environ.get(ENCODERS_ENV))
    spec = encoders[0].decode(raw)
    print(f"Running actor {spec['actor']!r} for message {spec['message']['message_id']}.", flush=True)
    outcome = run(spec, store, encoders, decode_channel(os.environ.get(CHANNEL_ENV)))
    store.put_named(f"{job_dir}/outcome.json", encoders[0].encode(outcome))
    print("Actor finished." if outcome["ok"] else f"Actor raised {outcome['type']}.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
