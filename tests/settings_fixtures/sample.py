"""A settings module, as a project would keep one, for the DRAMATIQ_RAY_SETTINGS tests."""

DRAMATIQ_RAY = {"MAX_TASK_ATTEMPTS": 7, "RESULT_STORAGE_BACKEND": "filesystem", "RESULT_STORAGE_FILESYSTEM_PATH": "/x"}
NOT_A_MAPPING = ["MAX_TASK_ATTEMPTS"]
