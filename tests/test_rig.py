"""The test rig itself: one real round trip through every service the suite relies on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import dramatiq

from tests._services import wait_until


def test_package_imports_without_ray_or_object_storage_clients(python_subprocess_env: dict[str, str]) -> None:
    # Given an interpreter in which ray, boto3 and google-cloud-storage cannot be imported at all
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'boto3', 'botocore', 'google'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import dramatiq_ray\n"
        "print(len(dramatiq_ray.__all__))\n"
    )
    # When the package is imported
    result = subprocess.run(
        [sys.executable, "-c", blocker], env=python_subprocess_env, capture_output=True, text=True, timeout=60
    )
    # Then it imports
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0


def test_redis_broker_delivers_a_message_to_an_in_process_worker(redis_broker, start_worker) -> None:
    seen: list[int] = []
    done = threading.Event()

    @dramatiq.actor(broker=redis_broker)
    def collect(value: int) -> None:
        seen.append(value)
        done.set()

    start_worker(redis_broker)
    collect.send(41)
    assert done.wait(30)
    assert seen == [41]


def test_rabbitmq_broker_delivers_a_message_to_an_in_process_worker(rabbitmq_broker, start_worker, queue_name) -> None:
    seen: list[int] = []
    done = threading.Event()

    @dramatiq.actor(broker=rabbitmq_broker, queue_name=queue_name)
    def collect(value: int) -> None:
        seen.append(value)
        done.set()

    start_worker(rabbitmq_broker)
    collect.send(42)
    assert done.wait(30)
    assert seen == [42]


def test_local_ray_runs_a_task_in_another_process(ray_local) -> None:
    @ray_local.remote
    def pid_and_double(value: int) -> tuple[int, int]:
        return os.getpid(), value * 2

    pid, doubled = ray_local.get(pid_and_double.remote(21), timeout=60)
    assert doubled == 42
    assert pid != os.getpid()


def test_s3_server_stores_and_returns_an_object_over_http(s3_server, s3_bucket) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="probe", Body=b"round trip")
    body = client.get_object(Bucket=s3_bucket, Key="probe")["Body"].read()
    assert body == b"round trip"
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")


def test_gcs_emulator_stores_and_returns_a_blob_over_http(gcs_server, gcs_bucket) -> None:
    bucket = gcs_server.client().bucket(gcs_bucket)
    bucket.blob("probe").upload_from_string(b"round trip")
    assert bucket.blob("probe").download_as_bytes() == b"round trip"


def test_dramatiq_cli_processes_messages_and_exits_cleanly_on_sigterm(
    dramatiq_cli, redis_url, redis_namespace, redis_client
) -> None:
    env = {"DRAMATIQ_RAY_TEST_BROKER_URL": redis_url, "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace}
    cli = dramatiq_cli("tests.apps.echo", "--processes", "1", "--threads", "2", env=env)
    cli.wait_ready(processes=1)

    from dramatiq.brokers.redis import RedisBroker

    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    producer.enqueue(dramatiq.Message(queue_name="default", actor_name="record", args=(7,), kwargs={}, options={}))
    records = wait_until(
        lambda: redis_client.lrange(f"{redis_namespace}:records", 0, -1),
        timeout=60,
        what="the CLI worker to record the message",
    )
    value, pid = records[0].decode().split(":")
    assert value == "7"
    assert int(pid) != os.getpid()
    assert cli.stop() == 0, cli.output()
    producer.close()
