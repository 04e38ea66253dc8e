"""``dramatiq-ray replicas``: list the pools of warm replicas on the Ray cluster, and drain one."""

from __future__ import annotations

import argparse
import json
import time
from typing import IO, Any

from ._common import EXIT_FAILED, EXIT_OK, Sources


def _pools(ray: Any) -> list[tuple[str, Any]]:
    from ..execution.replica_pool import NAMESPACE

    names = sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE and entry["name"].startswith("pool:")
    )
    found = []
    for name in names:
        try:
            found.append((name, ray.get_actor(name, namespace=NAMESPACE)))
        except ValueError:
            continue  # it exited meanwhile
    return found


def _describe(ray: Any, pools: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    described = []
    for name, handle in pools:
        try:
            described.append(ray.get(handle.describe.remote(), timeout=30))
        except Exception as error:
            described.append({"pool": name, "error": f"{type(error).__name__}: {error}"})
    return described


def _row(pool: dict[str, Any]) -> str:
    if "error" in pool:
        return f"{pool['pool']}  (not answering: {pool['error']})"
    replicas = pool["replicas"]
    ready = sum(1 for replica in replicas if replica["state"] == "ready")
    in_flight = sum(int(replica.get("in_flight", 0)) for replica in replicas)
    nodes = sorted({str(replica.get("node", "?"))[:8] for replica in replicas if replica.get("node")})
    state = "draining" if pool["draining"] else f"{ready}/{len(replicas)} ready (min {pool['min']}, max {pool['max']})"
    notes = [text for text in (pool.get("setup_error"), pool.get("unplaced")) if text]
    line = (
        f"{pool['actor']:<24} {pool['version']:<12} {state:<30} in flight {in_flight:<4} "
        f"nodes {','.join(nodes) or '-':<20} age {_age(pool['age_s'])}"
    )
    return line + "".join(f"\n    {note}" for note in notes)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """List pools (actor, version, replicas, calls in flight, nodes, age); with ``--drain``, drain the pools of that
    actor (one version with ``--version``): they stop handing out replicas, finish their calls, then exit."""
    sources = Sources.load(args.broker)
    runtime, _source = sources.ray_runtime()
    if args.address:
        from ..execution.connection import RayRuntime

        runtime = RayRuntime(address=args.address)
    runtime.attach()
    try:
        import ray

        pools = _pools(ray)
        if args.drain:
            wanted = f"pool:{args.drain}:{args.version}" if args.version else None
            chosen = [
                (name, handle)
                for name, handle in pools
                if name == wanted or (wanted is None and name.startswith(f"pool:{args.drain}:"))
            ]
            if not chosen:
                out.write(f"No pool of actor {args.drain!r}{' version ' + args.version if args.version else ''}.\n")
                return EXIT_FAILED
            for name, handle in chosen:
                ray.get(handle.drain.remote(), timeout=30)
                out.write(f"Draining {name}: its replicas finish their calls, then it exits.\n")
            return EXIT_OK
        described = _describe(ray, pools)
        if args.json:
            out.write(json.dumps(described, indent=2, default=str) + "\n")
        elif not described:
            out.write("No pools of replicas on this Ray cluster.\n")
        else:
            out.write(
                f"{'ACTOR':<24} {'VERSION':<12} {'REPLICAS':<30} {'':<14} {'':<26} (at {time.strftime('%H:%M:%S')})\n"
            )
            for pool in described:
                out.write(_row(pool) + "\n")
        return EXIT_OK
    finally:
        runtime.detach()
