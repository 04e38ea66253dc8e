"""The SQL results example runs with its one command and no services, and its README says how."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests._services import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "sql_results"


def test_sql_results_example_lists_the_failures_with_redacted_arguments(
    python_subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **python_subprocess_env,
        "SQL_RESULTS_DB": str(tmp_path / "results.db"),
        "RESULTS_DIR": str(tmp_path / "blobs"),
    }

    result = subprocess.run(
        [sys.executable, "-m", "examples.sql_results"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Sent 10 render messages: 8 succeeded, 2 failed." in out
    assert "args=[5] kwargs={'api_key': '***'}  ValueError: frame 5 is corrupt" in out
    assert "sk-live-123" not in out
    assert "exit 0, 2 record(s)" in out and "All results are as expected." in out
    assert re.search(r"keeps the pointer resultfs://sha256/[0-9a-f]{64}", out)
    assert len(list((tmp_path / "blobs").rglob("*.json"))) == 1


def test_sql_results_example_readme_gives_its_command_environment_and_settings() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    tasks = (EXAMPLE / "tasks.py").read_text()

    assert "python -m examples.sql_results" in readme and "virtual environment" in readme
    assert 'pip install ".[sql]"' in readme
    for variable in re.findall(r'os\.environ\.get\("([A-Z0-9_]+)"', tasks):
        assert variable in readme
