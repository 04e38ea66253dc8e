"""Installed the way a user installs it, the built wheel without extras: the examples and the demo run and leave
nothing behind, and what needs an extra says which one."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests import _services
from tests._services import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "no-extras-check"
#: A fresh virtual environment with Ray in it, the basic example and the demo: minutes on a small machine.
SCRIPT_TIMEOUT = 1500


def script_env(redis_url: str) -> dict[str, str]:
    """This environment without what points Python at the checkout or at the test's virtual environment."""
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env.pop("RAY_ADDRESS", None)
    return {**env, "REDIS_URL": redis_url, "PYTHON": sys.executable}


@pytest.mark.cli
@pytest.mark.timeout(SCRIPT_TIMEOUT + 60)
def test_install_without_extras_runs_the_examples_and_leaves_nothing_behind(redis_url: str) -> None:
    if shutil.which("bash") is None:
        _services.unavailable("bash is not installed")
    venv = subprocess.run([sys.executable, "-c", "import ensurepip, venv"], capture_output=True, text=True)
    if venv.returncode != 0:
        _services.unavailable(f"this Python cannot create virtual environments: {venv.stderr.strip()[-300:]}")

    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env=script_env(redis_url),
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "no-extras-check: OK: installed from the built wheel" in result.stdout
    built = re.search(r"built and checked (.+)\.$", result.stdout, re.MULTILINE)
    assert built and sorted(name.endswith("-py3-none-any.whl") for name in built.group(1).split()) == [False, True]
    assert any(name.endswith(".tar.gz") for name in built.group(1).split())
    assert "python -m examples.basic left no process and no shared head temp dir behind." in result.stdout
    assert "python -m dramatiq_ray.demo left no process and no shared head temp dir behind." in result.stdout


def run_s3_example_without_boto3() -> subprocess.CompletedProcess[str]:
    # As in an environment without the s3 extra: boto3 cannot be imported.
    code = "import runpy, sys; sys.modules['boto3'] = None; runpy.run_module('examples.s3', run_name='__main__')"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_s3_example_without_boto3_names_the_extra_in_one_line_and_exits_2() -> None:
    result = run_s3_example_without_boto3()

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.strip().splitlines() == [
        'The S3 example needs boto3: install the package with its s3 extra (pip install ".[s3]").'
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "install"),
    [
        ("basic", "`pip install .`"),
        ("pipelines", "`pip install .`"),
        ("cluster", "`pip install .`"),
        ("s3", '`pip install ".[s3]"`'),
    ],
)
def test_example_readme_says_which_environment_runs_it(name: str, install: str) -> None:
    readme = (REPO_ROOT / "examples" / name / "README.md").read_text()

    assert "virtual environment" in readme
    assert install in readme
    assert "Redis on `localhost:6379`" in readme


def test_s3_readme_gives_the_size_of_the_result_the_example_produces() -> None:
    # The size of the object the example writes: the result's compact JSON, computed by the example's own actor.
    code = (
        "import json; from examples.s3.send import COUNT; from examples.s3.tasks import measurements; "
        "print(len(json.dumps(measurements.fn('boiler-7', COUNT), separators=(',', ':')).encode()))"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    size = int(result.stdout.strip())

    readme = " ".join((REPO_ROOT / "examples" / "s3" / "README.md").read_text().split())
    stated = re.search(r"result is about (\d+) KB", readme)
    assert stated, "examples/s3/README.md does not say how large the result is"
    assert abs(int(stated.group(1)) * 1000 - size) <= size * 0.05, f"the example's result is {size} bytes"


def test_quickstart_installs_from_a_checkout_until_a_release_exists() -> None:
    for path in (REPO_ROOT / "docs" / "quickstart.md", REPO_ROOT / "README.md"):
        text = path.read_text()
        assert "pip install dramatiq-ray" not in text, path
        assert "pip install ." in text, path


def test_docs_env_builds_from_the_sources_without_installing_the_package() -> None:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO_ROOT / "tox.ini")
    mkdocs = (REPO_ROOT / "mkdocs.yml").read_text()

    assert tox["testenv:docs"].get("skip_install") == "true"
    assert "extras" not in tox["testenv:docs"]
    # mkdocstrings reads the package from the checkout, statically
    assert re.search(r"^\s+paths: \[\.\]$", mkdocs, re.MULTILINE)


def test_no_extras_check_runs_in_ci_after_the_tests() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()

    assert "set -euo pipefail" in ci
    assert ci.index("bash scripts/test") < ci.index("bash scripts/no-extras-check")
    assert os.access(SCRIPT, os.X_OK)
