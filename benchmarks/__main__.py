"""``python -m benchmarks``: run the cases, write the JSON report, render the docs page."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import arguments, big_results, cpu_scaling, offload, replicas, spill, sql
from ._harness import CaseReport, describe_machine
from ._report import render_markdown, write_json
from ._run import Run

ROOT = Path(__file__).resolve().parent.parent

CASES: dict[str, Callable[[Run], CaseReport]] = {
    "offload": offload.run_case,
    "cpu_scaling": cpu_scaling.run_case,
    "spill": spill.run_case,
    "big_results": big_results.run_case,
    "arguments": arguments.run_case,
    "sql": sql.run_case,
    "replicas": replicas.run_case,
}
#: The cases that use the run's Ray cluster: a quick run starts it at once and runs the other cases first.
RAY_CASES = {"offload", "cpu_scaling", "big_results", "arguments", "replicas"}
TITLES = {
    "offload": "Offload overhead",
    "cpu_scaling": "CPU-bound scaling",
    "spill": "Spill",
    "big_results": "Big results from Ray",
    "arguments": "Big inputs by reference",
    "sql": "SQL result backend",
    "replicas": "Warm replicas",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts (seconds): keeps the harness alive in CI")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(CASES),
        metavar="CASE",
        help=f"run only this case (repeatable): {', '.join(CASES)}",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out", help="where report.json goes")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the Markdown page")
    parser.add_argument("--no-docs", action="store_true", help="do not render the Markdown page and charts")
    parser.add_argument(
        "--render", type=Path, metavar="REPORT", help="only render the page from an existing report.json, run nothing"
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample every worker with py-spy into OUT/profiles (slows them a bit)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        render_markdown(json.loads(args.render.read_text()), args.docs)
        return 0
    started = time.perf_counter()
    report: dict[str, Any] = {
        "version": 1,
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe_machine(),
        "cases": [],
    }
    failed = False
    run = Run(quick=args.quick, profile_dir=args.out / "profiles" if args.profile else None)
    names = list(dict.fromkeys(args.only or CASES))
    early_ray = args.quick and bool(RAY_CASES & set(names))
    # Quick: the cases without Ray first, while the cluster starts; the report keeps the cases' order.
    order = sorted(names, key=lambda name: name in RAY_CASES) if early_ray else names
    cases: dict[str, dict[str, Any]] = {}
    try:
        if early_ray:
            run.start_ray_early()
        for name in order:
            print(f"{name}:", flush=True)
            try:
                cases[name] = CASES[name](run).to_json()
            except Exception as error:
                traceback.print_exc()
                failed = True
                cases[name] = CaseReport(name=name, title=TITLES[name], description="").to_json()
                cases[name]["error"] = f"{type(error).__name__}: {error}"
    finally:
        run.close()
    report["cases"] = [cases[name] for name in names if name in cases]
    report["duration_s"] = time.perf_counter() - started
    write_json(report, args.out / "report.json")
    print(f"wrote {args.out / 'report.json'}", flush=True)
    if not args.no_docs:
        render_markdown(report, args.docs)
    for case in report["cases"]:
        for target in case["targets"]:
            verdict = {True: "pass", False: "SHORT", None: "not measured"}[target["passed"]]
            ratio = "n/a" if target["ratio"] is None else f"{target['ratio']:.3g}"
            print(f"{case['name']:12} {target['name']}: ratio {ratio} (goal {target['goal']}) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
