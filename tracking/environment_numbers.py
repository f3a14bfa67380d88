"""Numbers read from environment variables (``TRACKING_REDIS_RETRY_SECONDS``, the key cache's
seconds, ``TRACKING_WORKER_RESTARTS``...): unset gives the default; a value that cannot be read,
or is not finite and >= 0, is logged and the default used, never a failed start."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import TypeVar

__all__ = ["number_from_environment", "seconds_from_environment"]

log = logging.getLogger("tracking")

_Number = TypeVar("_Number", int, float)


def seconds_from_environment(name: str, default: float) -> float:
    """The environment variable ``name`` as a number of seconds, ``default`` when it is unset;
    a value that is not a finite number >= 0 is logged and ``default`` used ("inf" would cache
    a deleted key forever, or never try Redis again)."""
    return number_from_environment(name, default, float, "a number of seconds")


def number_from_environment(
    name: str, default: _Number, kind: Callable[[str], _Number], what: str
) -> _Number:
    """The environment variable ``name`` read with ``kind`` (``float``, ``int``), ``default``
    when it is unset; a value it cannot read, or that is not finite and >= 0, is logged as not
    ``what`` and ``default`` used."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0:
        log.warning("%s=%r is not %s; using %g", name, raw, what, default)
        return default
    return value
