"""The module the ``dramatiq`` CLI loads in the benchmarks' worker process: the app built from ``BENCH_*``."""

from __future__ import annotations

import dramatiq

from ._app import AppConfig, build

app = build(AppConfig.from_env())
broker = app.broker
dramatiq.set_broker(broker)
