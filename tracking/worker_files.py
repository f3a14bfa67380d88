"""Per-worker JSON files in a folder the workers of one server share (Prometheus multiprocess
mode's ``PROMETHEUS_MULTIPROC_DIR``): each process writes its own ``<prefix><pid>.json``
whole (a reader sees the old text or the new, never half), and any of them reads the others'.
The ledger's figures (:mod:`tracking.ledger_stats`) and the bus's counters
(:mod:`tracking.bus_sharing`) are shared this way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["others", "write_own"]


def write_own(directory: Path, prefix: str, pid: int, text: str) -> None:
    """Replace process ``pid``'s file in ``directory`` with ``text``; ``OSError`` on failure."""
    path = directory / f"{prefix}{pid}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def others(directory: str | os.PathLike[str], prefix: str) -> Iterator[tuple[int, str]]:
    """``(pid, text)`` of every other process's file in ``directory``; a file being replaced,
    or not one of ours, is skipped (the next read gets it)."""
    own = os.getpid()
    for path in Path(directory).glob(f"{prefix}*.json"):
        digits = path.stem.removeprefix(prefix)
        if not digits.isdigit() or int(digits) == own:
            continue
        try:
            yield int(digits), path.read_text(encoding="utf-8")
        except OSError:
            continue
