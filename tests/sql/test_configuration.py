"""Configuring the SQL backend: bad URLs and arguments raise ConfigurationError, a missing extra is named, the
package imports without it, and setup() builds the backend from RESULT_BACKEND and RESULT_BACKEND_URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

import dramatiq_ray
from dramatiq_ray import ConfigurationError, SQLBackend, load_settings
from tests._services import REPO_ROOT


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "needs a database URL"),
        (42, "needs a database URL"),
        ("not a url", "is not a database URL"),
        ("mysql://root@localhost/results", "supports SQLite .* and PostgreSQL"),
        ("postgresql+psycopg2://u@h/db", "supports SQLite .* and PostgreSQL"),
        ("sqlite://", "in-memory SQLite database"),
        ("sqlite:///:memory:", "in-memory SQLite database"),
        ("sqlite:////no/such/directory/results.db", "directory of the SQLite database"),
        ("postgresql://u@localhost", "names no database"),
    ],
)
def test_bad_url_raises_configuration_error_saying_what_to_use(url: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        SQLBackend(url=url)


def test_url_password_is_not_repeated_in_errors_or_repr() -> None:
    with pytest.raises(ConfigurationError) as error:
        SQLBackend(url="postgresql://user:s3cret@localhost")
    assert "s3cret" not in str(error.value)
    assert "s3cret" not in repr(SQLBackend(url="postgresql://user:s3cret@localhost/db"))


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"table_prefix": "Bad-Prefix"}, "table_prefix must be"),
        ({"record_args": "yes"}, "record_args must be True or False"),
        ({"store_timeout": -1}, "store_timeout must be an integer number of milliseconds"),
        ({"poll_cap": 0}, "poll_cap must be an integer number of milliseconds >= 1"),
    ],
)
def test_bad_argument_raises_configuration_error(tmp_path: Path, arguments: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        SQLBackend(url=f"sqlite:///{tmp_path / 'r.db'}", **arguments)


BLOCKED = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('sqlalchemy', 'psycopg'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def run_blocked(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED + code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_package_imports_without_the_sql_extra_and_names_it_when_used(
    python_subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    # Given an interpreter where SQLAlchemy and psycopg cannot be imported
    code = (
        "import dramatiq_ray\n"
        "try:\n"
        f"    dramatiq_ray.SQLBackend(url='sqlite:///{tmp_path}/r.db')\n"
        "except dramatiq_ray.MissingDependencyError as error:\n"
        "    print(error)\n"
    )
    result = run_blocked(code, python_subprocess_env)

    assert result.returncode == 0, result.stderr
    assert 'pip install "dramatiq-ray[sql]"' in result.stdout


def test_package_import_loads_neither_sqlalchemy_nor_psycopg(python_subprocess_env: dict[str, str]) -> None:
    code = (
        "import sys, dramatiq_ray\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'psycopg')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=python_subprocess_env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- settings --------------------------------------------------------------------------------------------------


def test_setup_installs_an_sql_backend_from_the_settings(tmp_path: Path) -> None:
    broker = StubBroker()
    try:
        installed = dramatiq_ray.setup(
            broker, {"RESULT_BACKEND": "sql", "RESULT_BACKEND_URL": f"sqlite:///{tmp_path / 'results.db'}"}
        )

        assert installed.results is not None
        inner = installed.results.backend.backend
        assert isinstance(inner, SQLBackend) and inner.database.kind == "sqlite"
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"RESULT_BACKEND": "sql"}, "RESULT_BACKEND='sql' needs RESULT_BACKEND_URL"),
        ({"RESULT_BACKEND": "sql", "RESULT_BACKEND_URL": "mysql://x/y"}, "RESULT_BACKEND_URL must start with sqlite:"),
        ({"RESULT_BACKEND": "memcached"}, "RESULT_BACKEND must be None, redis or sql"),
        ({"RESULT_BACKEND_URL": "sqlite:////r.db"}, "RESULT_BACKEND_URL is set but RESULT_BACKEND is not"),
    ],
)
def test_bad_result_backend_settings_are_listed_as_problems(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(settings, environ={})
    assert any(problem in line for line in error.value.problems), error.value.problems


def test_result_backend_settings_come_from_the_environment_and_hide_the_password() -> None:
    loaded = load_settings(
        environ={
            "DRAMATIQ_RAY_RESULT_BACKEND": "SQL",
            "DRAMATIQ_RAY_RESULT_BACKEND_URL": "postgresql://app:s3cret@db/results",
        }
    )

    assert (loaded.result_backend, loaded.result_backend_url) == ("sql", "postgresql://app:s3cret@db/results")
    assert "s3cret" not in str(loaded.redacted())


def test_redis_result_backend_setting_shares_a_redis_broker_connection(redis_url: str, redis_namespace: str) -> None:
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results.backends import RedisBackend

    broker = RedisBroker(url=redis_url, namespace=redis_namespace)
    try:
        installed = dramatiq_ray.setup(broker, {"RESULT_BACKEND": "redis"})

        assert installed.results is not None
        inner = installed.results.backend.backend
        assert isinstance(inner, RedisBackend) and inner.client is broker.client
    finally:
        broker.close()
