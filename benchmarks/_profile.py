"""``--profile``: where a worker's time goes, sampled with py-spy while a case runs.

Each profiled worker gets a collapsed-stacks file (``<label>.txt``, for flamegraph tools or speedscope) and a short
summary (``<label>.top.txt``): the functions most often on the CPU (self) and on the stack (inclusive).
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import sys
from pathlib import Path


class Profiler:
    """py-spy recording one process until :meth:`stop`: non-blocking sampling (the process is not paused) of the
    thread holding the GIL only, so the profile shows where Python spends CPU, not where threads wait."""

    def __init__(self, pid: int, output: Path) -> None:
        beside = Path(sys.executable).parent / "py-spy"
        binary = str(beside) if beside.exists() else shutil.which("py-spy")
        if binary is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output = output
        command = [binary, "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--gil", "--format", "raw"]
        self._proc = subprocess.Popen(
            [*command, "--output", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop sampling, let py-spy write its file, and write the summary beside it."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=60)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self.output.exists():
            self.output.with_suffix(".top.txt").write_text(summarize(self.output.read_text()))


def summarize(collapsed: str, *, top: int = 25) -> str:
    """The ``top`` functions by self and by inclusive samples in py-spy's collapsed-stacks text."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines += ["", f"top {top} by {title}:"]
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / max(total, 1):6.1f}%  {frame}")
    return "\n".join(lines) + "\n"
