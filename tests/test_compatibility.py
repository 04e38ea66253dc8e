"""The supported versions stay true: what setup.cfg accepts, what ``scripts/version-smoke`` runs in CI, the Ray
versions the private-API workarounds were checked on, and docs/compatibility.md say the same thing."""

from __future__ import annotations

import configparser
import os
import re

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

from dramatiq_ray.execution.ray_compat import CHECKED_ON
from tests._services import REPO_ROOT

SMOKE = REPO_ROOT / "scripts" / "version-smoke"


def setup_cfg() -> configparser.ConfigParser:
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(REPO_ROOT / "setup.cfg")
    return setup


def classifier_pythons() -> list[str]:
    found = re.findall(r"Programming Language :: Python :: (3\.\d+)", setup_cfg()["metadata"]["classifiers"])
    return sorted(found, key=Version)


def ray_requirement(python: str) -> Requirement:
    """The one Ray requirement of setup.cfg that applies on ``python`` (e.g. ``"3.13"``)."""
    lines = [line.strip() for line in setup_cfg()["options"]["install_requires"].splitlines()]
    environment = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0"}
    found = [
        requirement
        for requirement in (Requirement(line) for line in lines if line and not line.startswith("#"))
        if requirement.name == "ray" and (requirement.marker is None or requirement.marker.evaluate(environment))
    ]
    assert len(found) == 1, f"setup.cfg has {len(found)} Ray requirements for Python {python}"
    return found[0]


def floor(requirement: Requirement) -> Version:
    (lowest,) = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    return lowest


def smoke_combinations() -> list[tuple[str, str]]:
    """The (Python, Ray) pairs ``scripts/version-smoke`` runs, in its order."""
    block = re.search(r"^COMBINATIONS=\(\n(.*?)^\)", SMOKE.read_text(), re.MULTILINE | re.DOTALL)
    assert block, "scripts/version-smoke has no COMBINATIONS=( ... ) block"
    return re.findall(r'^\s+"(3\.\d+) (\d+\.\d+\.\d+)"$', block.group(1), re.MULTILINE)


def test_every_classified_python_gets_exactly_one_ray_requirement_with_extras_and_a_major_bound() -> None:
    for python in classifier_pythons():
        requirement = ray_requirement(python)

        assert requirement.extras == {"default"}
        assert "<3" in {str(spec) for spec in requirement.specifier}


def test_ray_floor_on_python_3_13_is_the_first_ray_with_python_3_13_wheels() -> None:
    assert floor(ray_requirement("3.11")) == floor(ray_requirement("3.12")) == Version("2.40")
    assert floor(ray_requirement("3.13")) == Version("2.45")


def test_version_smoke_runs_the_oldest_ray_on_the_oldest_python_and_the_newest_on_the_newest() -> None:
    pythons = classifier_pythons()
    (oldest_python, oldest_ray), (newest_python, newest_ray) = smoke_combinations()

    assert (oldest_python, newest_python) == (pythons[0], pythons[-1])
    assert Version(oldest_ray) == floor(ray_requirement(oldest_python))
    assert Version(newest_ray) in ray_requirement(newest_python).specifier


def test_version_smoke_rays_are_the_bounds_the_ray_workarounds_were_checked_on() -> None:
    rays = [Version(ray) for _, ray in smoke_combinations()]

    assert [(ray.major, ray.minor) for ray in (min(rays), max(rays))] == list(CHECKED_ON)


@pytest.mark.parametrize("index", [0, 1], ids=["oldest", "newest"])
def test_compatibility_doc_lists_the_smoke_combination_as_run_in_ci(index: int) -> None:
    python, ray = smoke_combinations()[index]
    rows = [line for line in (REPO_ROOT / "docs" / "compatibility.md").read_text().splitlines() if line.startswith("|")]

    assert [row for row in rows if row.startswith(f"| {python} | {ray} |") and "`scripts/version-smoke`" in row]


def test_version_smoke_runs_in_ci_after_the_tests() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()

    assert ci.index("bash scripts/test") < ci.index("bash scripts/version-smoke")
    assert os.access(SMOKE, os.X_OK)
