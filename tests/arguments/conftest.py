from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest


@pytest.fixture(autouse=True)
def restore_global_encoder() -> Iterator[None]:
    """Sending with max_inline_arg_bytes wraps Dramatiq's global encoder; later tests get the one they expect."""
    encoder = dramatiq.get_encoder()
    yield
    dramatiq.set_encoder(encoder)
