"""Settings: defaults, sources and their precedence, typed environment parsing, validation collecting every problem."""

from __future__ import annotations

import pytest

from dramatiq_ray.errors import ConfigurationError
from dramatiq_ray.settings import SETTING_NAMES, Settings, load_settings


def problems_of(settings=None, environ=None) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(settings, environ=environ or {})
    return caught.value.problems


def test_settings_defaults_match_the_documented_table() -> None:
    settings = load_settings(environ={})
    assert settings.ray_address is None
    assert settings.ray_runtime_env == {}
    assert settings.runner == "ray_core"
    assert settings.default_concurrency == 10
    assert settings.max_task_attempts == 3
    assert settings.retry_backoff_seconds == 60
    assert settings.retry_exception_denylist == []
    assert settings.stuck_task_timeout_seconds == 300
    assert settings.max_result_size_bytes == 1048576
    assert settings.result_storage_backend == "digest"
    assert settings.result_storage_s3_prefix == "dramatiq-ray/results"
    assert settings.result_storage_gcs_prefix == "dramatiq-ray/results"


def test_settings_mapping_overrides_defaults() -> None:
    settings = load_settings({"MAX_TASK_ATTEMPTS": 5, "RAY_ADDRESS": "ray://head:10001"}, environ={})
    assert settings.max_task_attempts == 5
    assert settings.ray_address == "ray://head:10001"


def test_settings_environment_overrides_the_mapping() -> None:
    settings = load_settings({"MAX_TASK_ATTEMPTS": 5}, environ={"DRAMATIQ_RAY_MAX_TASK_ATTEMPTS": "9"})
    assert settings.max_task_attempts == 9


def test_settings_environment_parses_json_mappings_lists_and_comma_lists() -> None:
    settings = load_settings(
        environ={
            "DRAMATIQ_RAY_RAY_RUNTIME_ENV": '{"env_vars": {"A": "1"}}',
            "DRAMATIQ_RAY_RETRY_EXCEPTION_DENYLIST": "ValueError, myapp.errors.PermanentError",
            "DRAMATIQ_RAY_RETRY_BACKOFF_SECONDS": "2.5",
            "DRAMATIQ_RAY_RAY_ADDRESS": "none",
        }
    )
    assert settings.ray_runtime_env == {"env_vars": {"A": "1"}}
    assert settings.retry_exception_denylist == ["ValueError", "myapp.errors.PermanentError"]
    assert settings.retry_backoff_seconds == 2.5
    assert settings.ray_address is None
    json_list = load_settings(environ={"DRAMATIQ_RAY_RETRY_EXCEPTION_DENYLIST": '["KeyError"]'})
    assert json_list.retry_exception_denylist == ["KeyError"]


def test_settings_module_attribute_is_read_from_the_settings_variable() -> None:
    settings = load_settings(environ={"DRAMATIQ_RAY_SETTINGS": "tests.settings_fixtures.sample:DRAMATIQ_RAY"})
    assert settings.max_task_attempts == 7
    assert settings.result_storage_backend == "filesystem"


def test_settings_module_that_is_not_a_mapping_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigurationError, match="NOT_A_MAPPING must be a mapping"):
        load_settings(environ={"DRAMATIQ_RAY_SETTINGS": "tests.settings_fixtures.sample:NOT_A_MAPPING"})


def test_settings_module_that_cannot_be_imported_is_refused_with_the_expected_form() -> None:
    with pytest.raises(ConfigurationError, match=r"package\.module:ATTRIBUTE"):
        load_settings(environ={"DRAMATIQ_RAY_SETTINGS": "tests.no_such_module:X"})


def test_settings_unknown_name_gets_a_did_you_mean() -> None:
    assert problems_of({"MAX_TASK_ATEMPTS": 3}) == [
        "'MAX_TASK_ATEMPTS' is not a setting; did you mean MAX_TASK_ATTEMPTS?"
    ]


def test_settings_misspelled_environment_variable_gets_a_did_you_mean() -> None:
    (problem,) = problems_of(environ={"DRAMATIQ_RAY_MAX_RESULT_SIZE_BYTE": "10"})
    assert "did you mean DRAMATIQ_RAY_MAX_RESULT_SIZE_BYTES" in problem


def test_settings_unrelated_environment_variables_with_the_prefix_are_ignored() -> None:
    assert load_settings(environ={"DRAMATIQ_RAY_REQUIRE_SERVICES": "1"}).max_task_attempts == 3


def test_settings_validation_collects_every_problem_at_once() -> None:
    problems = problems_of(
        {
            "MAX_TASK_ATTEMPTS": 0,
            "DEFAULT_CONCURRENCY": "ten",
            "RUNNER": "celery",
            "RAY_ADDRESS": "not an address",
            "RAY_RUNTIME_ENV": ["pip"],
            "RETRY_EXCEPTION_DENYLIST": ["ValueError", "not a name!", 3],
            "MAX_RESULT_SIZE_BYTES": -1,
            "RETRY_BACKOFF_SECONDS": True,
        }
    )
    joined = "\n".join(problems)
    assert len(problems) == 9, joined
    for fragment in (
        "MAX_TASK_ATTEMPTS must be an integer >= 1, not 0",
        "DEFAULT_CONCURRENCY must be an integer, not str 'ten'",
        "RUNNER must be one of ray_core, ray_job, not 'celery'",
        "RAY_ADDRESS must be None",
        "RAY_RUNTIME_ENV must be a mapping",
        "entry 'not a name!'",
        "entry 3",
        "MAX_RESULT_SIZE_BYTES must be an integer number of bytes >= 0, not -1",
        "RETRY_BACKOFF_SECONDS must be a number, not bool True",
    ):
        assert fragment in joined


def test_settings_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"MAX_TASK_ATTEMPTS": 0, "RUNNER": "x"}, environ={})
    assert "2 problem(s)" in str(caught.value)
    assert "MAX_TASK_ATTEMPTS" in str(caught.value) and "RUNNER" in str(caught.value)


def test_settings_unparseable_environment_value_is_reported_with_its_variable() -> None:
    (problem,) = problems_of(environ={"DRAMATIQ_RAY_MAX_TASK_ATTEMPTS": "three"})
    assert problem.startswith("DRAMATIQ_RAY_MAX_TASK_ATTEMPTS='three' cannot be parsed")


@pytest.mark.parametrize(
    ("backend", "required"),
    [
        ("filesystem", "RESULT_STORAGE_FILESYSTEM_PATH"),
        ("s3", "RESULT_STORAGE_S3_BUCKET"),
        ("gcs", "RESULT_STORAGE_GCS_BUCKET"),
    ],
)
def test_settings_storage_backend_without_its_required_setting_is_refused(backend: str, required: str) -> None:
    assert problems_of({"RESULT_STORAGE_BACKEND": backend}) == [
        f"RESULT_STORAGE_BACKEND={backend!r} needs {required} to be set."
    ]


def test_settings_unknown_storage_backend_is_refused() -> None:
    assert problems_of({"RESULT_STORAGE_BACKEND": "ftp"}) == [
        "RESULT_STORAGE_BACKEND must be one of digest, filesystem, s3, gcs, not 'ftp'."
    ]


def test_settings_storage_backend_whose_extra_is_missing_names_the_pip_line(monkeypatch) -> None:
    # boto3 is installed for the test suite; hide it from the availability check only.
    from dramatiq_ray.settings import _results as module

    monkeypatch.setattr(module, "module_available", lambda name: name != "boto3")
    assert problems_of({"RESULT_STORAGE_BACKEND": "s3", "RESULT_STORAGE_S3_BUCKET": "b"}) == [
        "RESULT_STORAGE_BACKEND='s3' needs the 'boto3' package: pip install \"dramatiq-ray[s3]\""
    ]


def test_settings_skip_validation_variable_skips_validation() -> None:
    settings = load_settings({"MAX_TASK_ATTEMPTS": 0}, environ={"DRAMATIQ_RAY_SKIP_VALIDATION": "1"})
    assert settings.max_task_attempts == 0


def test_settings_redacted_masks_credentials_in_urls_and_runtime_env() -> None:
    settings = Settings(
        ray_address="ray://user:secret@head:10001",
        ray_runtime_env={"env_vars": {"TOKEN": "secret"}},
        result_storage_s3_endpoint_url="https://key:secret@minio:9000",
    )
    shown = repr(settings.redacted())
    assert "secret" not in shown
    assert "head:10001" in shown and "minio:9000" in shown


def test_settings_names_cover_every_documented_setting() -> None:
    documented = {
        "RAY_ADDRESS", "RAY_RUNTIME_ENV", "RUNNER", "DEFAULT_CONCURRENCY", "MAX_TASK_ATTEMPTS",
        "RETRY_BACKOFF_SECONDS", "RETRY_EXCEPTION_DENYLIST", "STUCK_TASK_TIMEOUT_SECONDS", "MAX_RESULT_SIZE_BYTES",
        "RESULT_STORAGE_BACKEND", "RESULT_STORAGE_FILESYSTEM_PATH", "RESULT_STORAGE_S3_BUCKET",
        "RESULT_STORAGE_S3_PREFIX", "RESULT_STORAGE_S3_REGION", "RESULT_STORAGE_S3_ENDPOINT_URL",
        "RESULT_STORAGE_GCS_BUCKET", "RESULT_STORAGE_GCS_PREFIX",
    }  # fmt: skip
    assert documented <= set(SETTING_NAMES)


def test_settings_backoff_beyond_seven_days_is_refused() -> None:
    (problem,) = problems_of({"RETRY_MAX_BACKOFF_SECONDS": 8 * 86400})
    assert problem == "RETRY_MAX_BACKOFF_SECONDS must be a number <= 604800, not 691200."


def test_relative_filesystem_store_path_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="RESULT_STORAGE_FILESYSTEM_PATH must be an absolute path"):
        load_settings({"RESULT_STORAGE_BACKEND": "filesystem", "RESULT_STORAGE_FILESYSTEM_PATH": "results"})
