"""A ``dramatiq`` CLI app whose one actor runs as a durable Ray job, configured from the environment by the test:
RabbitMQ broker, results in Redis with job files in a FilesystemStore, the test's Ray head and its Jobs API."""

from __future__ import annotations

import os
import sys

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, SpillingBackend
from tests.apps import ray_jobs

env = os.environ
broker = RabbitmqBroker(url=env["JOBS_APP_RABBITMQ_URL"])
backend = SpillingBackend(
    RedisBackend(url=env["JOBS_APP_REDIS_URL"], namespace=env["JOBS_APP_REDIS_NAMESPACE"]),
    store=FilesystemStore(env["JOBS_APP_STORE"]),
)
broker.add_middleware(Results(backend=backend, store_results=True))
if "JOBS_APP_RAY_ADDRESS" in env:
    execution = RayExecutionMiddleware(
        runner="ray_job",
        address=env["JOBS_APP_RAY_ADDRESS"],
        job_address=env["JOBS_APP_JOBS_ADDRESS"],
        job_python=sys.executable,
        runtime_env={"env_vars": {"PYTHONPATH": env["JOBS_APP_PYTHONPATH"]}},
        wait_slice=0.2,
    )
else:  # the embedded default: the CLI's shared head, with its dashboard
    execution = RayExecutionMiddleware(runner="ray_job", wait_slice=0.2)
broker.add_middleware(execution)
dramatiq.set_broker(broker)

count_then_wait = dramatiq.actor(ray_jobs.count_then_wait, queue_name=env["JOBS_APP_QUEUE"], max_retries=0)
add = dramatiq.actor(ray_jobs.add, queue_name=env["JOBS_APP_QUEUE"], max_retries=0)
