"""The bus's counters across the worker processes of one server (Prometheus multiprocess mode).

:func:`tracking.bus.counters` is one process's memory. With ``PROMETHEUS_MULTIPROC_DIR`` set
(``tracking serve --workers N``) a scrape is answered by one worker, so each worker writes its
counters to ``bus-<pid>.json`` in that folder (:func:`share`: once a second, from the thread
that shares the ledger's figures, :mod:`tracking.ledger_stats`, and once more when the
Prometheus integration shuts down, after the last callbacks ran), and :func:`shared_counters`
sums them for whichever worker is scraped: its own counters live, the others' at most a second
old. A worker that has ended keeps its counts in the totals: counters never go down.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import bus
from .worker_files import others, write_own

__all__ = ["share", "shared_counters"]

_FILE_PREFIX = "bus-"
#: The text each folder was last written with by this process (nothing new: no write).
_last: dict[Path, str] = {}
_lock = threading.Lock()


def share(directory: str | os.PathLike[str]) -> None:
    """Write this process's counters to ``directory`` when they changed; never raises."""
    folder = Path(directory)
    text = json.dumps(bus.counters(), separators=(",", ":"), sort_keys=True)
    with _lock:
        if _last.get(folder) == text:
            return
        try:
            write_own(folder, _FILE_PREFIX, os.getpid(), text)
        except OSError as exc:
            if folder.is_dir():
                bus.report_failure("prometheus", "sharing the bus counters failed", exc)
            return
        _last[folder] = text


def shared_counters(directory: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """This process's counters plus every other worker's file in ``directory``, summed."""
    total = bus.counters()
    for _, text in others(directory, _FILE_PREFIX):
        try:
            counts = json.loads(text)
        except ValueError:
            continue  # not ours: skipped
        _add(total, counts)
    return total


def _add(total: dict[str, dict[str, int]], counts: Any) -> None:
    if not isinstance(counts, Mapping):
        return
    for kind, table in total.items():
        theirs = counts.get(kind)
        if not isinstance(theirs, Mapping):
            continue
        for name, count in theirs.items():
            if isinstance(name, str) and isinstance(count, int) and not isinstance(count, bool):
                table[name] = table.get(name, 0) + count
