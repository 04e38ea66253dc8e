"""Render exported spans as a text tree: each span's name, kind, duration and the process it ran in, under its
parent.

The spans are what the OpenTelemetry SDK exported (``ConsoleSpanExporter``'s JSON, one object a line), from any
number of processes; a span whose parent is not among them is a root.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Span", "load_spans", "render"]


@dataclass
class Span:
    name: str
    kind: str
    span_id: str
    parent_id: str | None
    start: datetime.datetime
    end: datetime.datetime
    service: str
    children: list[Span] = field(default_factory=list)

    @property
    def milliseconds(self) -> float:
        return (self.end - self.start).total_seconds() * 1000


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def load_spans(path: str | Path) -> list[Span]:
    """The spans in ``path``, one JSON object a line (blank lines skipped)."""
    spans = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            spans.append(
                Span(
                    name=data["name"],
                    kind=data["kind"].removeprefix("SpanKind."),
                    span_id=data["context"]["span_id"],
                    parent_id=data.get("parent_id"),
                    start=_time(data["start_time"]),
                    end=_time(data["end_time"]),
                    service=data["resource"]["attributes"].get("service.name", "?"),
                )
            )
    return spans


def render(spans: list[Span]) -> str:
    """The tree of ``spans``, children in order of start, one line each: name, kind, duration, process."""
    by_id = {span.span_id: span for span in spans}
    roots = []
    for span in sorted(spans, key=lambda span: span.start):
        parent = by_id.get(span.parent_id) if span.parent_id else None
        (parent.children if parent is not None else roots).append(span)
    rows: list[tuple[str, str, str, str]] = []

    def walk(span: Span, lead: str, branch: str, below: str) -> None:
        rows.append((lead + branch + span.name, span.kind, f"{span.milliseconds:.1f} ms", span.service))
        for index, child in enumerate(span.children):
            last = index == len(span.children) - 1
            walk(child, below, "└─ " if last else "├─ ", below + ("   " if last else "│  "))

    for root in roots:
        walk(root, "", "", "")
    header = ("span", "kind", "duration", "process")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(3)]
    lines = []
    for row in [header, *rows]:
        name, kind, duration, service = row
        lines.append(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {duration:>{widths[2]}}  {service}")
    return "\n".join(lines)
