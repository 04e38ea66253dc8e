"""``python -m dramatiq_ray.cli``: the same as the ``dramatiq-ray`` command."""

from __future__ import annotations

import sys

from . import main

try:
    sys.exit(main())
except KeyboardInterrupt:
    sys.exit(130)
