"""``python -m examples.tracing``: one traced message through a worker of this process and a Ray task, its spans
exported by the OpenTelemetry SDK from both processes to one file, then rendered as a tree, after the body's log
lines as the worker shows them.

Needs ``pip install "dramatiq-ray[otel]" opentelemetry-sdk``; starts a local Ray (two CPUs) unless ``RAY_ADDRESS``
names one.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

from .render import load_spans, render
from .tasks import export_spans_to, trace_one_message

#: The dramatiq CLI's log format.
LOG_FORMAT = "[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] %(message)s"


def main() -> int:
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        print('This example needs the OpenTelemetry SDK: pip install "dramatiq-ray[otel]" opentelemetry-sdk')
        return 2
    import ray

    # INFO at the root, so the body's INFO records come back from Ray (log_level follows the root logger's level)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout)
    for quiet in ("dramatiq", "dramatiq_ray", "ray"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="dramatiq-ray-trace-") as directory:
        spans_path = os.path.join(directory, "spans.jsonl")
        provider = export_spans_to(spans_path, "dramatiq-worker")
        print("The body's log records, as the worker re-emits them:")
        loss = trace_one_message(spans_path)
        provider.shutdown()
        ray.shutdown()  # the Ray worker processes write their last spans as they end
        print(f"\nThe result: {loss}. The trace, from the spans both processes exported:\n")
        print(render(load_spans(spans_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
