"""The one place where dramatiq-ray uses Ray's private API, each workaround guarded by the Ray versions it was
checked on.

Outside those versions a workaround does nothing but log a WARNING that names it, so an upgrade of Ray degrades
to Ray's own behaviour instead of failing. Nothing here assigns to an attribute of a Ray module.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)

#: The Ray versions (major, minor), inclusive, on which each workaround below was checked.
CHECKED_ON = ((2, 40), (2, 60))


def ray_version() -> tuple[int, int]:
    """The (major, minor) version of the installed Ray, read without importing Ray."""
    from importlib.metadata import version

    major, minor = [*version("ray").split("."), "0", "0"][:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def checked(version: tuple[int, int] | None = None) -> bool:
    """Whether ``version`` (default: the installed Ray's) is one the workarounds were checked on."""
    low, high = CHECKED_ON
    return low <= (version or ray_version()) <= high


def reload_auth_config(version: tuple[int, int] | None = None) -> bool:
    """Make an already imported Ray read ``RAY_AUTH_MODE`` and its token again.

    Ray reads its authentication settings once, when ``ray._raylet`` is imported; a process that imported Ray
    before it knew it would attach to a token-protected head (``ray start``) would otherwise keep sending no token.
    Returns whether the reload ran (``False`` when Ray is not imported yet, which needs no reload, when the
    installed Ray, or ``version`` when given, is outside :data:`CHECKED_ON`, or when the installed Ray has no token
    authentication, as Ray 2.40 has none: nothing there reads ``RAY_AUTH_MODE``).
    """
    raylet: Any = sys.modules.get("ray._raylet")
    if raylet is None:
        return False
    version = version or ray_version()
    if not checked(version):
        logger.warning(
            "Ray %s.%s is outside the versions dramatiq-ray's auth-config reload was checked on; if attaching "
            "fails with an authentication error, set RAY_AUTH_MODE=token before the process imports Ray.",
            *version,
        )
        return False
    if not hasattr(raylet, "AuthenticationTokenLoader"):
        # Without token authentication, re-initialising Ray's configuration would only reset it, for nothing.
        return False
    with contextlib.suppress(Exception):
        raylet.Config.initialize("")
        raylet.AuthenticationTokenLoader.instance().reset_cache()
        return True
    return False
