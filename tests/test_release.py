"""The release artifacts: ``python -m build`` makes an sdist and a wheel from a copy of the checkout; the wheel
holds the package and its metadata only (no tests, benchmarks or caches, even with caches in the tree); both carry
the Apache License 2.0 text; the version comes from ``dramatiq_ray.__version__`` alone; ``twine check --strict``
passes.

The build runs without isolation (the build backend is in the test extra) so that it takes seconds, not the
download of a fresh build environment; ``tox -e release`` and the no-extras check build with isolation."""

from __future__ import annotations

import ast
import configparser
import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests._services import REPO_ROOT

#: What is never copied from the checkout: version control, environments, earlier builds, tool caches.
NOT_SOURCES = (".git", ".venv", ".tox", "build", "dist", "*.egg-info", "site", "node_modules", "*_cache", ".cache")
#: A bytecode cache planted in the copy, so that the check holds even on a checkout without caches.
PLANTED = Path("dramatiq_ray") / "__pycache__" / "planted.cpython-311.pyc"
#: The SHA-256 of the Apache License 2.0 as published at https://www.apache.org/licenses/LICENSE-2.0.txt.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
#: Where a wheel's metadata keeps the license file: ``licenses/`` since PEP 639 (Metadata 2.4), at the top before.
WHEEL_LICENSE = {"licenses/LICENSE", "LICENSE"}


def package_version() -> str:
    """``__version__`` as written in ``dramatiq_ray/_version.py``, read without importing it."""
    tree = ast.parse((REPO_ROOT / "dramatiq_ray" / "_version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    raise AssertionError("dramatiq_ray/_version.py assigns no __version__")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built from a copy of the checkout (with a planted cache) into a temp dir."""
    work = tmp_path_factory.mktemp("release")
    source = work / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    (source / PLANTED).parent.mkdir(exist_ok=True)
    (source / PLANTED).write_bytes(b"not a real cache")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, (built.stdout + built.stderr)[-4000:]
    return work / "dist"


def only(dist: Path, pattern: str) -> Path:
    (found,) = dist.glob(pattern)
    return found


@pytest.mark.timeout(360)
def test_wheel_holds_the_package_modules_and_metadata_only(dist: Path) -> None:
    wheel = only(dist, "dramatiq_ray-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    metadata = f"dramatiq_ray-{package_version()}.dist-info/"
    modules = {path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "dramatiq_ray").rglob("*.py")}

    assert {name for name in names if not name.startswith(metadata)} == modules | {"dramatiq_ray/py.typed"}
    metadata_files = {name.removeprefix(metadata) for name in names if name.startswith(metadata)}
    assert len(metadata_files & WHEEL_LICENSE) == 1
    assert metadata_files - WHEEL_LICENSE == {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt"}


@pytest.mark.timeout(360)
def test_sdist_holds_the_package_and_what_builds_it_without_tests_or_caches(dist: Path) -> None:
    sdist = only(dist, "dramatiq_ray-*.tar.gz")
    root = f"dramatiq_ray-{package_version()}/"
    with tarfile.open(sdist) as archive:
        names = {member.name.removeprefix(root) for member in archive.getmembers() if member.isfile()}

    assert {"LICENSE", "README.md", "CHANGELOG.md", "setup.cfg", "pyproject.toml", "dramatiq_ray/py.typed"} <= names
    assert not [name for name in names if name.split("/")[0] in ("tests", "benchmarks", "examples", "docs")]
    assert not [name for name in names if "__pycache__" in name or name.endswith((".pyc", ".pyo"))]


def test_license_file_is_the_apache_license_2_0_that_setup_cfg_declares() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")

    assert setup["metadata"]["license"] == "Apache-2.0"
    assert setup["metadata"]["license_files"].split() == ["LICENSE"]
    assert hashlib.sha256((REPO_ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256


@pytest.mark.timeout(360)
def test_wheel_and_sdist_carry_the_license_file_unchanged(dist: Path) -> None:
    text = (REPO_ROOT / "LICENSE").read_bytes()
    wheel = zipfile.ZipFile(only(dist, "dramatiq_ray-*-py3-none-any.whl"))
    metadata = f"dramatiq_ray-{package_version()}.dist-info/"
    (license_name,) = [name for name in wheel.namelist() if name.removeprefix(metadata) in WHEEL_LICENSE]
    with tarfile.open(only(dist, "dramatiq_ray-*.tar.gz")) as sdist:
        member = sdist.extractfile(f"dramatiq_ray-{package_version()}/LICENSE")
        assert member is not None
        in_sdist = member.read()

    assert wheel.read(license_name) == text
    assert in_sdist == text
    assert "\nLicense-File: LICENSE\n" in wheel.read(f"{metadata}METADATA").decode()


@pytest.mark.timeout(360)
def test_built_version_is_the_package_version(dist: Path) -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    wheel = only(dist, "dramatiq_ray-*-py3-none-any.whl")
    metadata = zipfile.ZipFile(wheel).read(f"dramatiq_ray-{package_version()}.dist-info/METADATA").decode()

    assert setup["metadata"]["version"] == "attr: dramatiq_ray._version.__version__"
    assert f"\nVersion: {package_version()}\n" in metadata


@pytest.mark.timeout(360)
def test_twine_check_passes_on_the_sdist_and_the_wheel(dist: Path) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2
