"""The README's first example: its tasks module imports without sending or waiting (a worker imports it), and the
producer that waits for a result is a module of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests._services import REPO_ROOT, free_port

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.DOTALL)


def block(first_line: str) -> str:
    found = [text for text in BLOCKS if text.startswith(first_line)]
    assert found, f"the README has no python block starting with {first_line!r}"
    return found[0]


def test_readme_tasks_module_imports_without_touching_the_broker(tmp_path: Path, python_subprocess_env) -> None:
    # Given the README's tasks module, with its Redis URL pointing where nothing listens
    source = block("# myapp/tasks.py").replace("localhost:6379", f"127.0.0.1:{free_port()}")
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tasks.py").write_text(source)
    # When a process imports it as a worker does, then it imports (nothing is sent, nothing waits)
    check = "import myapp.tasks as t; print(t.render.actor_name)"
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=python_subprocess_env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "render"


def test_readme_producer_imports_the_tasks_module_and_waits_for_the_result() -> None:
    producer = block("# send.py")
    compile(producer, "send.py", "exec")
    assert "from myapp.tasks import render" in producer and "get_result(block=True" in producer
    assert "get_result" not in block("# myapp/tasks.py")
