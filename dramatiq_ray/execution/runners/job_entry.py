"""The entrypoint of a Ray job started by the ``ray_job`` runner:
``python -m dramatiq_ray.execution.runners.job_entry <job-dir>``.

It reads the job's spec (``<job-dir>/spec.json``) from the blob store of the plan in the ``DRAMATIQ_RAY_JOB_PLAN``
environment variable, imports the actor's function by module path, runs it with the message's arguments and
writes the outcome to ``<job-dir>/outcome.json``: ``{"ok": true, "result": ...}`` or ``{"ok": false, ...}`` with
the exception's form (:func:`~dramatiq_ray.callpath.crossing.to_document`: type, args, attributes, message,
traceback). A body that raises still exits 0 (its failure
is in the outcome); a non-zero exit means the entrypoint itself could not run (the job's logs say why).

The spec and the outcome are encoded with the submitting worker's Dramatiq encoder, carried in
``DRAMATIQ_RAY_JOB_ENCODER`` (Dramatiq's JSON encoder when it is absent), so a custom encoder works on both sides.
The message's spill plan (:class:`~dramatiq_ray.payloads.plan.SpillPlan`: the store, the result backend's encoder,
the threshold, ``on_store_error``, the codec options) is carried whole, pickled, in ``DRAMATIQ_RAY_JOB_PLAN``: the
job applies the very plan every other runner applies, with no field copied by hand. A result that goes nowhere
(not stored, not piped, no ``on_success``) and that the encoder cannot encode is left out of the outcome: nothing
would read it.
"""

from __future__ import annotations

import base64
import os
import pickle
import sys
from typing import Any

import dramatiq
from dramatiq.encoder import Encoder

from ... import _otel
from ...callpath import crossing, logs
from ...callpath.body import Target, run_body
from ...callpath.steering import Channel, Steering
from ...errors import ConfigurationError
from ...payloads.plan import SpillPlan

#: The environment variable carrying the (pickled, base64) spill plan of the job, its blob store included.
PLAN_ENV = "DRAMATIQ_RAY_JOB_PLAN"
#: The environment variable carrying the (pickled, base64) broker's encoder (the spec's and the outcome's).
ENCODER_ENV = "DRAMATIQ_RAY_JOB_ENCODER"
#: The environment variable carrying the (pickled, base64) channel of cancel marks and progress, when there is one
#: (configuration only: a Redis password is not in it).
CHANNEL_ENV = "DRAMATIQ_RAY_JOB_CHANNEL"


def encode_channel(channel: Channel) -> str:
    """The value of :data:`CHANNEL_ENV` for ``channel``."""
    return base64.b64encode(pickle.dumps(channel)).decode()


def decode_channel(value: str | None) -> Channel | None:
    return pickle.loads(base64.b64decode(value)) if value else None


def encode_encoder(encoder: Encoder) -> str:
    """The value of :data:`ENCODER_ENV` for the broker's encoder.

    Raises:
      ConfigurationError: it cannot be pickled, so a job cannot use it.
    """
    return _pickled(encoder, "the Dramatiq encoder")


def decode_encoder(value: str | None) -> Encoder:
    if not value:
        return dramatiq.JSONEncoder()
    encoder = pickle.loads(base64.b64decode(value))
    if not isinstance(encoder, Encoder):
        raise TypeError(f"{ENCODER_ENV} does not hold a Dramatiq encoder.")
    return encoder


def encode_plan(plan: SpillPlan) -> str:
    """The value of :data:`PLAN_ENV` for ``plan``: all of it (stores keep only configuration, never credentials).

    Raises:
      ConfigurationError: the plan encrypts (its keys would be in the job's environment, which the Ray dashboard
        shows), or its encoder cannot be pickled.
    """
    if plan.encryption is not None:
        raise ConfigurationError(
            "The ray_job runner hands the spill plan to each job in its environment, where encryption keys must "
            "not go: use runner='ray_core' for encrypted results."
        )
    return _pickled(plan, "the result backend's encoder and store")


def decode_plan(value: str) -> SpillPlan:
    plan = pickle.loads(base64.b64decode(value))
    if not isinstance(plan, SpillPlan) or plan.store is None:
        raise TypeError(f"{PLAN_ENV} does not hold a spill plan with a blob store.")
    return plan


def _pickled(value: Any, what: str) -> str:
    try:
        return base64.b64encode(pickle.dumps(value)).decode()
    except Exception as error:
        raise ConfigurationError(
            f"The ray_job runner hands {what} to each job, and they cannot be pickled ({type(error).__name__}: "
            f"{error}): make the encoder classes picklable, or use runner='ray_core'."
        ) from None


def run(spec: dict[str, Any], plan: SpillPlan, encoder: Encoder, channel: Channel | None = None) -> dict[str, Any]:
    """Run the body a spec describes with ``plan`` (reading piped inputs and spilling an oversized result, as
    every runner does); return its outcome document, which ``encoder`` (the broker's) can encode. With the spec's
    ``log_level``, the records the body logs at that level or above are in the outcome too (``"logs"``), whether
    it returned or raised."""
    trace_ctx = spec.get("trace_ctx")
    if trace_ctx:
        _otel.setup_once()
        attributes = {"dramatiq.actor": spec["actor"], "messaging.message.id": spec["message"]["message_id"]}
        with _otel.span(f"run {spec['actor']}", parent=trace_ctx, attributes=attributes) as span:
            outcome = _logged(spec, plan, encoder, channel)
            if span is not None and not outcome.get("ok"):
                from opentelemetry import trace

                span.set_status(trace.Status(trace.StatusCode.ERROR, str(outcome.get("type"))))
            return outcome
    return _logged(spec, plan, encoder, channel)


def _logged(spec: dict[str, Any], plan: SpillPlan, encoder: Encoder, channel: Channel | None) -> dict[str, Any]:
    level = spec.get("log_level")
    if level is None:
        return _run(spec, plan, encoder, channel)
    with logs.capture(int(level)) as captured:
        outcome = _run(spec, plan, encoder, channel)
    return {**outcome, "logs": captured.taken().to_dict()}


def _run(spec: dict[str, Any], plan: SpillPlan, encoder: Encoder, channel: Channel | None) -> dict[str, Any]:
    message: dramatiq.Message[Any] = dramatiq.Message(**spec["message"])
    try:
        fn = Target(spec["actor"], module=spec["module"], qualname=spec["qualname"]).resolve()
        steering = Steering(channel, message.message_id) if channel is not None else None
        result = run_body(fn, tuple(spec["args"]), dict(spec["kwargs"]), message, plan, steering)
        outcome = {"ok": True, "result": result}
        if plan.max_inline_bytes is None and result is not None:
            # The result goes nowhere: it need not survive the trip back, so one the encoder refuses is dropped.
            try:
                encoder.encode(outcome)
            except Exception:
                print(f"The result ({type(result).__name__}) is not sent back: nothing reads it.", flush=True)
                return {"ok": True, "result": None}
        encoder.encode(outcome)
        return outcome
    except Exception as error:
        return {"ok": False, **crossing.to_document(error, encoder)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m dramatiq_ray.execution.runners.job_entry <job-dir>", file=sys.stderr)
        return 2
    job_dir = argv[1]
    plan = decode_plan(os.environ[PLAN_ENV])
    store = plan.store
    assert store is not None  # decode_plan checked it
    raw = store.get_named(f"{job_dir}/spec.json")
    if raw is None:
        print(f"No job spec at {job_dir}/spec.json in {store.describe()}.", file=sys.stderr)
        return 1
    encoder = decode_encoder(os.environ.get(ENCODER_ENV))
    spec = encoder.decode(raw)
    print(f"Running actor {spec['actor']!r} for message {spec['message']['message_id']}.", flush=True)
    outcome = run(spec, plan, encoder, decode_channel(os.environ.get(CHANNEL_ENV)))
    store.put_named(f"{job_dir}/outcome.json", encoder.encode(outcome))
    print("Actor finished." if outcome["ok"] else f"Actor raised {outcome['type']}.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
