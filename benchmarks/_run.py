"""One run of the benchmarks: its size (quick or full) and the services it started, each started on first use and
stopped at the end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._app import AppConfig
from ._harness import ProcessSet
from ._profile import Profiler
from ._services import GCSServer, RayCluster, RedisNamespace, S3Server, WorkerProcess, unique

#: Seconds a quick run's worker gets to stop before it is killed. Every variant has all its results before it stops
#: its worker, so nothing is in flight, and Dramatiq's graceful shutdown takes 2-4 s (a second of idle sleep, thread
#: joins on the 1 s worker_timeout, detaching from Ray), which no shorter grace would see through: a full run still
#: waits for all of it.
QUICK_STOP_GRACE_S = 0.1


class Run:
    """The services of one run. ``quick`` makes every case use tiny counts; with ``profile_dir`` every worker is
    sampled by py-spy into that directory (see ``benchmarks._profile``)."""

    def __init__(self, *, quick: bool, profile_dir: Path | None = None) -> None:
        self.quick = quick
        self.profile_dir = profile_dir
        self._profilers: dict[int, Profiler] = {}
        self.redis = RedisNamespace()
        self.work_dir = tempfile.mkdtemp(prefix="dramatiq-ray-bench-")
        self._ray: RayCluster | None = None
        self._ray_starting: Future[RayCluster] | None = None
        self._s3: S3Server | None = None
        self._gcs: GCSServer | None = None
        self._workers: list[WorkerProcess] = []

    # --- services, started on first use --------------------------------------------------------------------

    @property
    def ray(self) -> RayCluster:
        """The run's single-node Ray cluster, with as many CPUs as the machine has cores."""
        if self._ray is None:
            starting, self._ray_starting = self._ray_starting, None
            self._ray = starting.result() if starting is not None else RayCluster(num_cpus=self.ray_cpus)
        return self._ray

    def start_ray_early(self) -> None:
        """Start the run's Ray cluster in a thread now; :attr:`ray` waits for it. For a quick run, whose first
        variants need no Ray: its numbers are not compared, so the start may overlap them."""
        if self._ray is None and self._ray_starting is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-start")
            self._ray_starting = pool.submit(RayCluster, num_cpus=self.ray_cpus)
            pool.shutdown(wait=False)  # the thread ends with the start

    @property
    def ray_cpus(self) -> int:
        return os.cpu_count() or 1

    @property
    def s3(self) -> S3Server:
        if self._s3 is None:
            self._s3 = S3Server()
        return self._s3

    @property
    def gcs(self) -> GCSServer:
        if self._gcs is None:
            self._gcs = GCSServer()
        return self._gcs

    # --- apps and workers ----------------------------------------------------------------------------------

    def config(self, **fields: str) -> AppConfig:
        """An app config on this run's Redis namespace with a fresh queue."""
        queue = unique("bench").replace("-", "_")
        return AppConfig(redis_url=self.redis.url, namespace=self.redis.namespace, queue=queue, **fields)

    def store_config(self, store: str) -> dict[str, str]:
        """The ``store``, ``store_location`` and ``store_endpoint`` fields for ``inline``, ``fs``, ``s3`` or ``gcs``."""
        if store == "inline":
            return {"store": "inline"}
        if store == "fs":
            return {"store": "fs", "store_location": os.path.join(self.work_dir, unique("blobs"))}
        if store == "s3":
            return {"store": "s3", "store_location": self.s3.bucket, "store_endpoint": self.s3.endpoint_url}
        if store == "gcs":
            return {"store": "gcs", "store_location": self.gcs.bucket, "store_endpoint": self.gcs.endpoint_url}
        raise ValueError(f"unknown store {store!r}")

    def start_worker(
        self,
        config: AppConfig,
        *,
        label: str,
        threads: int = 8,
        cluster: RayCluster | None = None,
        idle_poll_ms: int | None = None,
    ) -> WorkerProcess:
        """Start ``dramatiq benchmarks._worker`` for ``config``; attached to ``cluster`` (default: the run's)
        when the config executes on Ray. ``label`` names its profile. ``idle_poll_ms``: the worker's
        ``worker_timeout``, the longest its Redis consumer sleeps between empty fetches (Dramatiq's default,
        1000 ms, when ``None``); a lower one keeps a burst sent after an idle stretch from waiting for the
        consumer's backoff."""
        if config.execution == "ray":
            env = (cluster or self.ray).driver_env()
        else:
            env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
            env = {**env, **_pythonpath()}
        if idle_poll_ms is not None:
            env["dramatiq_worker_timeout"] = str(idle_poll_ms)  # read by dramatiq.worker as Worker's default
        worker = WorkerProcess(config.as_env(), threads=threads, log_dir=self.work_dir, env=env)
        self._workers.append(worker)
        if self.profile_dir is not None:
            self._profilers[id(worker)] = Profiler(worker.worker_pid, self.profile_dir / f"{label}.txt")
        return worker

    def stop_worker(self, worker: WorkerProcess) -> None:
        profiler = self._profilers.pop(id(worker), None)
        if profiler is not None:
            profiler.stop()
        worker.stop(grace=QUICK_STOP_GRACE_S if self.quick else 30)
        self._workers.remove(worker)

    # --- the processes whose CPU a case counts --------------------------------------------------------------

    def ray_processes(self, cluster: RayCluster | None = None) -> ProcessSet:
        """Every process of ``cluster`` (default: the run's): each node's ``ray start`` with its descendants (GCS
        server, raylet, agents, monitors, the Ray workers the raylet forks), and any process naming the
        cluster's temp dir in its command line."""
        cluster = cluster or self.ray
        return ProcessSet(trees=tuple(node.pid for node in cluster.nodes), marker=cluster.temp_dir)

    @staticmethod
    def worker_processes(worker: WorkerProcess) -> ProcessSet:
        """The ``dramatiq`` CLI of ``worker`` and everything it forked (its worker process)."""
        return ProcessSet(trees=(worker.proc.pid,))

    def bare_ray(
        self, *, count: int, threads: int = 8, burn: int = 0, warm_up: int | None = None, one_client: int | None = None
    ) -> dict[str, float]:
        """Run a bare-Ray baseline (see ``benchmarks._bare_ray``) in a process of its own on the run's cluster.

        The no-op baseline also reports the CPU of its loaded run: its own process (the driver) and the
        cluster's processes (see :meth:`ray_processes`), found by the driver itself. ``warm_up`` and
        ``one_client``: its unmeasured and its one-thread runs' counts (default: ``benchmarks._bare_ray``'s)."""
        options = ["--count", str(count), "--threads", str(threads), "--burn", str(burn)]
        if warm_up is not None:
            options += ["--warm-up", str(warm_up)]
        if one_client is not None:
            options += ["--one-client", str(one_client)]
        ray_processes = self.ray_processes()
        options += [f"--ray-node-pid={pid}" for pid in ray_processes.trees]
        options += [f"--ray-temp-dir={ray_processes.marker}"]
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks._bare_ray", *options],
            env=self.ray.driver_env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if result.returncode != 0:
            raise RuntimeError(f"the bare Ray baseline failed:\n{result.stderr[-4000:]}")
        summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return {key: float(value) for key, value in summary.items()}

    # --- the end -------------------------------------------------------------------------------------------

    def close(self) -> None:
        for worker in list(self._workers):
            self.stop_worker(worker)
        if self._ray_starting is not None and self._ray_starting.exception() is None:
            self._ray = self._ray_starting.result()  # started early, never used: stopped below
        for service in (self._ray, self._s3, self._gcs):
            if service is not None:
                service.stop()
        self.redis.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _pythonpath() -> dict[str, str]:
    from ._services import subprocess_env

    return {"PYTHONPATH": subprocess_env()["PYTHONPATH"], "PYTHONUNBUFFERED": "1"}
