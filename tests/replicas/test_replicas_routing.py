"""Which replica a worker sends a message to (pure functions: no Ray needed)."""

from __future__ import annotations

from dramatiq_ray.execution.runners.replicas import _choose

REPLICAS = [(f"replica:infer:1:{n}", f"handle-{n}") for n in range(1, 5)]


def test_message_goes_to_the_same_replica_from_any_fresh_worker() -> None:
    # A redelivered message lands in a worker with no calls of its own: it picks what the first worker picked
    chosen = {_choose("message-1:0", REPLICAS, {}, capacity=1) for _ in range(3)}

    assert len(chosen) == 1


def test_messages_spread_over_the_replicas() -> None:
    chosen = {_choose(f"message-{n}:0", REPLICAS, {}, capacity=1)[0] for n in range(200)}  # type: ignore[index]

    assert chosen == {name for name, _ in REPLICAS}


def test_message_whose_replica_is_busy_here_goes_to_the_least_busy_one() -> None:
    preferred = _choose("message-1:0", REPLICAS, {}, capacity=2)
    idle = next(replica for replica in REPLICAS if replica != preferred)
    in_flight = {name: 1 for name, _ in REPLICAS}
    in_flight[idle[0]] = 0

    assert _choose("message-1:0", REPLICAS, in_flight, capacity=2) == idle


def test_no_replica_with_room_means_waiting() -> None:
    in_flight = {name: 1 for name, _ in REPLICAS}

    assert _choose("message-1:0", REPLICAS, in_flight, capacity=1) is None


def test_scaling_up_moves_only_some_messages() -> None:
    before = {n: _choose(f"m-{n}:0", REPLICAS[:3], {}, capacity=1) for n in range(300)}
    after = {n: _choose(f"m-{n}:0", REPLICAS, {}, capacity=1) for n in range(300)}

    moved = [n for n in before if before[n] != after[n]]
    assert all(after[n] == REPLICAS[3] for n in moved)  # rendezvous hashing: only to the new replica
