"""Fault case 6 (load): many messages, 1% of them with results over the spill threshold, through two CLI worker
processes of eight threads sharing one local Ray. Every result is correct, Redis holds only pointers for spilled
results, and worker memory does not grow beyond a stated bound.

The size comes from ``DRAMATIQ_RAY_SOAK_MESSAGES`` (default 1,000, the bounded form CI runs; the full form is
10,000). Figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import os

import psutil
import pytest

from tests._services import wait_until
from tests.faults.conftest import assert_all_gone, cli_worker_pids

pytestmark = [pytest.mark.soak, pytest.mark.cli]

MESSAGES = int(os.environ.get("DRAMATIQ_RAY_SOAK_MESSAGES", "1000"))
SPILLED_SIZE = 4_000  # characters: over the app's 1,024-byte threshold
#: Largest Redis memory for one spilled result's key: a pointer, never the payload.
POINTER_KEY_BYTES = 512
#: Largest RSS growth of any worker process between 10% of the run and its end.
RSS_GROWTH_BOUND = 150 * 1024 * 1024


def size_of(value: int) -> int:
    return SPILLED_SIZE if value % 100 == 0 else 0


def rss(pids: set[int]) -> dict[int, int]:
    return {pid: psutil.Process(pid).memory_info().rss for pid in pids}


def test_load_every_result_correct_with_redis_holding_pointers_and_bounded_worker_memory(
    dramatiq_cli, fault_env, redis_url, redis_namespace, queue_name, ledger, messages_of
) -> None:
    from dramatiq.brokers.redis import RedisBroker

    # Given two CLI worker processes of eight threads sharing one embedded Ray head
    cli = dramatiq_cli("tests.faults.app", "--processes", "2", "--threads", "8", env=fault_env)
    cli.wait_ready(processes=2)
    pids = cli_worker_pids(cli)
    batch = messages_of(queue_name, range(MESSAGES), size_of=size_of)

    # When the messages are sent
    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    try:
        for message, _ in batch:
            producer.enqueue(message)
        wait_until(lambda: len(ledger.attempts()) >= MESSAGES // 10, timeout=600, what="10% of the bodies")
        early = rss(pids)
        # Then every result is correct and stored once
        assert ledger.assert_every_outcome(batch) == MESSAGES
    finally:
        producer.close()
    late = rss(pids)

    # And Redis keeps a pointer, not the payload, for every spilled result
    spilled = [message for message, (value, size) in batch if size]
    key_bytes = [ledger.redis.client.memory_usage(ledger.redis.build_message_key(m)) for m in spilled]
    assert spilled and max(key_bytes) < POINTER_KEY_BYTES
    # And no worker process grew beyond the bound over the run
    growth = {pid: late[pid] - early[pid] for pid in pids}
    print(
        f"\nload figures: messages={MESSAGES} spilled={len(spilled)} attempts={len(ledger.attempts())} "
        f"lost=0 max_spilled_key_bytes={max(key_bytes)} "
        f"rss_mb_early={[round(v / 2**20) for v in early.values()]} "
        f"rss_mb_late={[round(v / 2**20) for v in late.values()]}"
    )
    assert max(growth.values()) < RSS_GROWTH_BOUND, growth
    assert cli.stop() == 0, cli.output()
    assert_all_gone(pids, what="the worker processes")
