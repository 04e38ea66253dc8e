"""Delivering results where they are needed: signed webhooks, presigned download URLs, waiting from asyncio."""

from __future__ import annotations

from .presign import get_result_url
from .waiting import get_result_async
from .webhooks import Webhooks

__all__ = ["Webhooks", "get_result_async", "get_result_url"]
