"""Running actor bodies where they belong: in the worker, as Ray tasks or as Ray jobs, through one call path."""

from __future__ import annotations

from .middleware import RayExecutionMiddleware, merge_runtime_envs

__all__ = ["RayExecutionMiddleware", "merge_runtime_envs"]
