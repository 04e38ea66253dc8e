"""Several processes of several threads at once: 2 processes x 8 threads writing results, and processes starting
together on a database with no schema yet, on SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from dramatiq_ray import SQLBackend
from dramatiq_ray.results.sql.schema import SCHEMA_VERSION
from tests._services import REPO_ROOT
from tests.sql.conftest import Database

RUN_TIMEOUT = 300


def run_together(
    mode: str, database: Database, env: dict[str, str], *, processes: int, threads: int, count: int
) -> list[Any]:
    """Start the processes, wait until each is ready, release them at once; return each one's report."""
    started = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.sql._concurrent", mode, database.url, database.prefix),
                *(str(index), str(threads), str(count)),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(processes)
    ]
    try:
        for proc in started:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
        for proc in started:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in started:
            output, errors = proc.communicate(timeout=RUN_TIMEOUT)
            assert proc.returncode == 0, output + errors
            reports.append(json.loads(output.strip().splitlines()[-1]))
        return reports
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_two_processes_of_eight_threads_store_every_result(
    database: Database, python_subprocess_env: dict[str, str]
) -> None:
    # Given 2 processes x 8 threads, each storing 25 results at once into one database
    reports = run_together("write", database, python_subprocess_env, processes=2, threads=8, count=25)

    # Then none failed, each read back all of its own, and the database holds all 400
    assert [report["errors"] for report in reports] == [[], []]
    assert [sorted(report["outcomes"]) for report in reports] == [[25] * 8, [25] * 8]
    backend = SQLBackend(url=database.url, table_prefix=database.prefix)
    try:
        records = backend.query(status="success", limit=1000)
    finally:
        backend.close()
    assert len(records) == 400
    assert {record.message_id for record in records} == {
        f"p{process}-t{thread}-{n}" for process in range(2) for thread in range(8) for n in range(25)
    }


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_processes_starting_together_create_the_schema_once(
    database: Database, python_subprocess_env: dict[str, str]
) -> None:
    # Given a database without the tables, and 3 processes x 4 threads that each start a backend at once
    reports = run_together("migrate", database, python_subprocess_env, processes=3, threads=4, count=0)

    # Then every start succeeded at the current version, and the version is recorded once
    assert [report["errors"] for report in reports] == [[], [], []]
    assert [report["outcomes"] for report in reports] == [[SCHEMA_VERSION] * 4] * 3
    backend = SQLBackend(url=database.url, table_prefix=database.prefix)
    try:
        backend.migrate()
        reader, _ = backend._connections()
        with reader.connect() as connection:
            rows = list(connection.execute(backend.tables.version.select()))
    finally:
        backend.close()
    assert [(row.id, row.version) for row in rows] == [(1, SCHEMA_VERSION)]
