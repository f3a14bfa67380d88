"""Intents: a call is written down before it is sent, so a crash leaves a row, never nothing.

With ``SqlLedger(intents=True)`` (the proxy's durable ledger), the ledger's ``on_start`` hook,
which the call path runs before the first request goes upstream, writes the call's *intent*: the
row the call would leave if the process died before its own row is written, marked
``status="incomplete"``, ``error_type="incomplete"``, with what its estimate needs; the estimate
(the most the call could be expected to cost, ``cost_source="estimate"``) is worked out when a
dead process's intent is recovered (:func:`priced`), not on the call path. Once the call's own
row is acknowledged, the intent is marked done (``-`` and the request id, appended at once).

The intents go to an append-only file of the process's own, ``intents-<pid>.log`` beside the
outboxes, locked (``flock``) for as long as the process lives: one append per call, ``+`` and
the intent's values for an intent (:func:`intent_line`: a JSON array; recovery builds the row
from them), ``-`` and the request id for one done. The file's blocks
are reserved (``posix_fallocate``) and the file is mapped into memory (``MAP_SHARED``), so an
append is a copy into the kernel's own page cache of the file: no system call, so the thread
writing an intent (the proxy's event loop) never hands the GIL to another thread mid-call, as
a ``write`` did. The pages are the file's, so an intent survives the process's death (kill -9),
though not a power cut, as a ``write`` would; it costs no fsync. Where the blocks cannot be
reserved (a full disk, a file system without ``fallocate``) the file is written with ``write``
instead: a copy into a mapping whose blocks are not reserved could fault (SIGBUS) on a full
disk. The unused tail of a mapped file reads as NUL bytes, which readers ignore; the file is
cut to its length when closed. The file is rewritten with only the open intents once an append
would pass :data:`ROTATE_BYTES`, and removed at a clean stop.

A log whose lock can be taken belongs to a dead process. When a ledger with intents starts, and
again at every rescan of its shipper while it runs (so a peer killed beside a running proxy is
recovered within :data:`~tracking.integrations.sql._shipper.RESCAN_SECONDS`, not at the next
start), it claims those: their open intents become rows in its journal outbox (an outbox file
of its own, :mod:`tracking.integrations.sql._outbox`) and its
:class:`~tracking.integrations.sql._shipper.OutboxShipper` ships them into the target like any
other row. The target's insert lets a call's own row replace an ``incomplete`` one with the same
request id, and never the other way round, so the order in which a dead process's rows and intents
arrive does not matter.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tracking.pricing import price_day
from tracking.pricing.estimate import estimate_first_priced
from tracking.unknown_outcomes import ESTIMATE_REF

from ._codec import decode_row, encode_plain, encode_row, line_request_id, wire_time
from ._outbox import Outbox, lock_own_file, open_own_outbox, try_lock
from ._schema import plain_json
from ._shipper import OutboxShipper, ShipperOwner
from ._target import SpendLogsInserter

if TYPE_CHECKING:
    from tracking.integration import CallStart
    from tracking.pricing import Cost
    from tracking.request import ImageEditRequest

__all__ = [
    "INCOMPLETE",
    "ROTATE_BYTES",
    "IntentJournal",
    "IntentLog",
    "intent_line",
    "intent_line_row",
    "intent_row",
    "open_intents",
    "priced",
    "recover_dead_logs",
]

log = logging.getLogger("tracking.ledger")

#: ``status`` and ``error_type`` of a row left by a call whose process died in the middle of it.
INCOMPLETE = "incomplete"
#: Bytes an intents file may grow to before it is rewritten with only the open intents (the
#: size of a mapped file, whose blocks are reserved at once).
ROTATE_BYTES = 8 * 1024 * 1024
#: The key of an intent's line holding what its estimate needs (not a column).
_ESTIMATE = "tracking_estimate"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


#: The version tag that opens a compact intent line (``intent_line``): a JSON array of the values
#: an intent's row is built from, in :func:`_intent_values` order. A line that is a JSON object
#: is an intent written whole as its row (before 2026-12-04), still read back.
_COMPACT = "[1,"


def _intent_values(call: CallStart) -> list[Any]:
    """What varies from one call's intent to the next, in the order of ``_row_of_values``."""
    request, options = call.request, call.options
    metadata: Any = options.metadata
    if type(metadata) is not MappingProxyType and not isinstance(metadata, Mapping):
        metadata = {}  # a frozen call's is a MappingProxyType: no ABC test (see plain_json)
    return [
        call.request_id,
        call.call_type,
        request.user,
        _str(metadata.get("user_api_key_hash")),
        _str(metadata.get("user_api_key_alias")),
        options.team,  # read from the metadata as the call's event reads it
        list(options.tags),
        plain_json(metadata),
        request.model,
        request.upstream_model,
        request.provider,
        call.api_base,
        request.n,
        request.size,
        request.quality,
        request.base_model,
        len(request.prompt),
        len(request.images),
        call.start_time,
    ]


#: The number of values :func:`_intent_values` gives (a line may add one: the lost attempts).
_VALUES = 19


def _row_of_values(values: list[Any]) -> dict[str, Any]:
    """The ``spend_logs`` row (plus what its estimate needs) of an intent's values."""
    (
        request_id,
        call_type,
        end_user,
        api_key_hash,
        key_alias,
        team,
        tags,
        metadata,
        model,
        upstream_model,
        provider,
        api_base,
        n,
        size,
        quality,
        base_model,
        prompt_chars,
        images,
        start_time,
    ) = values
    models = [base_model, f"{provider}/{upstream_model}", model]
    return {
        "request_id": request_id,
        "call_type": call_type,
        "status": INCOMPLETE,
        "upstream_request_id": None,
        "end_user": end_user,
        "api_key_hash": api_key_hash,
        "key_alias": key_alias,
        "team": team,
        "tags": tags,
        "metadata": metadata,
        "model": model,
        "model_group": model,
        "served_model": upstream_model,
        "provider": provider,
        "deployment_id": None,
        "api_base": api_base,
        "n": n or 1,
        "images_returned": 0,
        "size": size,
        "quality": quality,
        "input_text_tokens": None,
        "input_image_tokens": None,
        "cached_input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        # Priced when recovered (``priced``), not on the call path: what the estimate needs.
        "cost_usd": None,
        "cost_per_image_usd": None,
        "cost_source": "estimate",
        "price_ref": None,
        _ESTIMATE: {
            "models": [m for m in dict.fromkeys(models) if m],
            "n": n,
            "size": size,
            "quality": quality,
            "prompt_chars": prompt_chars,
            "images": images,
        },
        "start_time": start_time,
        "end_time": start_time,
        "latency_ms": 0.0,
        "attempts": 1,
        "retries": 0,
        "fallback_from": [],
        "error_type": INCOMPLETE,
        "http_status": None,
    }


def intent_row(call: CallStart) -> dict[str, Any]:
    """The ``spend_logs`` row a call leaves if its process dies before the call's own row."""
    return _row_of_values(_intent_values(call))


def intent_line(call: CallStart, lost: Sequence[ImageEditRequest] = ()) -> str:
    """The call's intent as written to the log: its values only, not the row they make.

    On the proxy's call path, before the request leaves: about a third of the work of encoding
    the whole row (:func:`intent_row`), which recovery builds instead (:func:`intent_line_row`).
    ``lost``: the requests of earlier attempts whose answer was lost, each estimated too (one
    more value at the end of the line).
    """
    values = _intent_values(call)
    values[-1] = wire_time(call.start_time)
    if lost:
        values.append([_estimate_spec(r) for r in lost])
    return _COMPACT + encode_plain(values)[1:]


def _estimate_spec(request: ImageEditRequest) -> dict[str, Any]:
    """What the estimate of one attempt of ``request`` needs (see :func:`priced`)."""
    models = [request.base_model, f"{request.provider}/{request.upstream_model}", request.model]
    return {
        "models": [m for m in dict.fromkeys(models) if m],
        "n": request.n,
        "size": request.size,
        "quality": request.quality,
        "prompt_chars": len(request.prompt),
        "images": len(request.images),
    }


def intent_line_row(line: str) -> dict[str, Any]:
    """The row (with what its estimate needs) of an intent's line, compact or whole."""
    if not line.startswith(_COMPACT):
        return decode_row(line)
    values = json.loads(line)[1:]
    lost = values.pop() if len(values) > _VALUES else []  # earlier attempts' answers lost
    values[-1] = datetime.fromisoformat(values[-1])
    row = _row_of_values(values)
    if lost:
        row[_ESTIMATE]["lost"] = lost
        row["attempts"] = 1 + len(lost)
        row["retries"] = len(lost)
    return row


#: What reading back a damaged intent's line can raise: a bad value (ValueError, TypeError,
#: AttributeError), a number out of range (OverflowError: an ``n`` of ``1e400``), a missing
#: value, or a nesting deeper than Python's recursion limit (RecursionError).
_DAMAGED = (ValueError, TypeError, AttributeError, ArithmeticError, LookupError, RecursionError)


def _intent_request_id(line: str) -> str:
    try:
        if not line.startswith(_COMPACT):
            return line_request_id(line)
        found = json.loads(line)[1]
    except _DAMAGED:
        return "(unreadable)"
    return found if isinstance(found, str) else "(unreadable)"


class _AppendFile:
    """An append-only file of at most ``capacity`` bytes, mapped when its blocks can be
    reserved, else written with ``write`` (see the module docstring)."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.capacity = capacity
        self.size = 0
        self.map: mmap.mmap | None = None
        try:
            os.posix_fallocate(self.fd, 0, capacity)
            self.map = mmap.mmap(self.fd, capacity)  # shared: the file's own pages
        except (OSError, ValueError):
            os.ftruncate(self.fd, 0)  # written with write() from its start

    def fits(self, size: int) -> bool:
        return self.size + size <= self.capacity

    def append(self, data: bytes) -> None:
        """Append ``data``; the caller checked that it ``fits``."""
        end = self.size + len(data)
        if self.map is not None:
            self.map[self.size : end] = data
        else:
            try:
                _write_all(self.fd, data)
            except OSError:
                # A full disk may have taken a part: cut it off, else the next intent's line,
                # joined to it, could not be read back (until 2026-12-05).
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.size)
                os.lseek(self.fd, self.size, os.SEEK_SET)
                raise
        self.size = end

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            os.ftruncate(self.fd, self.size)  # no NUL tail left for a reader
        os.close(self.fd)


class IntentLog:
    """This process's intents file; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        base, self._lock_fd = lock_own_file(directory, "intents")
        self.path = base.with_name(f"{base.name}.log")
        self._lock = threading.Lock()
        self._file = _AppendFile(self.path, ROTATE_BYTES)
        self._open: dict[str, str] = {}  # request id -> line, for a rewrite
        self.closed = False

    def record(self, request_id: str, line: str) -> None:
        """Write one intent."""
        with self._lock:
            if self.closed:
                return
            data = f"+{line}\n".encode()
            if not self._file.fits(len(data)):
                self._rewrite(len(data))
            self._file.append(data)
            self._open[request_id] = line

    def complete(self, request_id: str) -> None:
        """The call's own row is acknowledged: its intent is done, written at once (a process
        killed while idle must not leave calls that ended as "in flight": were the call's own
        row quarantined, its recovered estimate would count the call twice)."""
        with self._lock:
            if self.closed or self._open.pop(request_id, None) is None:
                return
            data = f"-{request_id}\n".encode()
            if self._file.fits(len(data)):
                self._file.append(data)
            else:  # the rewrite holds only the intents still open
                self._rewrite(0)

    def _rewrite(self, room: int) -> None:
        # Replaced in one rename: a crash leaves the old file or the new one, both complete.
        fresh_path = self.path.with_name(f"{self.path.name}.new")
        data = "".join(f"+{line}\n" for line in self._open.values()).encode()
        fresh = _AppendFile(fresh_path, max(ROTATE_BYTES, 2 * (len(data) + room)))
        fresh.append(data)
        os.replace(fresh_path, self.path)
        self._file.close()
        self._file = fresh

    def close(self) -> None:
        """Stop; the file goes when no intent is open (else the next start recovers them)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._file.close()
            if not self._open:
                self.path.unlink(missing_ok=True)
                self.path.with_name(self.path.name.removesuffix(".log") + ".lock").unlink(
                    missing_ok=True
                )
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def priced(line: str) -> str:
    """An intent's line as a ``spend_logs`` row, with its estimated cost (None: unpriced)."""
    row = intent_line_row(line)
    spec = row.pop(_ESTIMATE, None)
    cost = None
    if isinstance(spec, dict):
        lost = spec.get("lost")
        specs = [spec, *(lost if isinstance(lost, list) else ())]
        start = row.get("start_time")
        day = price_day(start) if isinstance(start, datetime) else None
        estimates = [_estimate_of(s, day) if isinstance(s, dict) else None for s in specs]
        if all(e is not None for e in estimates):  # a part of the sum would pass for the whole
            cost = sum((e.usd for e in estimates if e and e.usd is not None), Decimal(0))
            refs = dict.fromkeys(f"{ESTIMATE_REF}:{e.price_ref}" for e in estimates if e)
            row["price_ref"] = "+".join(refs)
    row["cost_usd"] = cost
    row["cost_source"] = "estimate" if cost is not None else "unpriced"
    return encode_row(row)


def _estimate_of(spec: dict[str, Any], day: date | None) -> Cost | None:
    """The estimate of one attempt described by ``spec``, at the prices of ``day`` (the day its
    call started, as the call's own row would have been priced; None: today); None when no
    model of it is priced."""
    return estimate_first_priced(
        (str(model) for model in spec.get("models") or ()),
        spec.get("size"),
        spec.get("quality"),
        int(spec.get("n") or 1),
        prompt_chars=int(spec.get("prompt_chars") or 0),
        input_images=int(spec.get("images") or 0),
        day=day,
    )


def open_intents(text: str) -> list[str]:
    """The rows the intents a log's text leaves open make (a torn last line is skipped, and so
    is the NUL tail of a mapped file its process did not live to cut). A line that cannot be
    read back is logged and skipped, never in the way of the others: a damaged log of a dead
    process stopped every ledger on the folder from opening (until 2026-12-05)."""
    open_: dict[str, str] = {}
    for entry in text.split("\x00", 1)[0].splitlines():
        if entry.startswith("+"):
            line = entry[1:]
            request_id = _intent_request_id(line)
            if request_id != "(unreadable)":
                open_[request_id] = line
        elif entry.startswith("-"):
            open_.pop(entry[1:], None)
    rows = []
    for line in open_.values():
        try:
            rows.append(priced(line))
        except _DAMAGED:  # a damaged file: the other intents are still recovered
            log.exception("ledger: an intent cannot be read back; skipped: %s", line[:200])
    return rows


def recover_dead_logs(directory: Path, into: Outbox) -> int:
    """Move the open intents of dead processes' logs into ``into``; returns how many."""
    recovered = 0
    for path in sorted(directory.glob("intents-*.log")):
        lock_path = path.with_name(path.name.removesuffix(".log") + ".lock")
        fd = try_lock(lock_path)
        if fd is None:
            continue  # its process is alive
        try:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                text = ""  # removed by its owner at a clean stop while we looked
            lines = open_intents(text)
            if lines:
                into.append(lines)
                recovered += len(lines)
                log.warning(
                    "ledger: %d calls were in flight when process %s died; recorded as incomplete",
                    len(lines),
                    path.stem.removeprefix("intents-"),
                )
            path.unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    return recovered


class IntentJournal(ShipperOwner):
    """This process's intents, and the shipper of what dead processes' intents left."""

    def __init__(
        self,
        directory: Path,
        inserter: SpendLogsInserter,
        *,
        replay_hooks: list[Callable[[int], None]],
        quarantine_hooks: list[Callable[[int], None]],
        retry_max: float,
    ) -> None:
        self.directory = directory
        self._inserter = inserter
        self._replay_hooks = replay_hooks
        self._quarantine_hooks = quarantine_hooks
        self._retry_max = retry_max
        self._pid = 0
        self._shipper: OutboxShipper | None = None
        self._log: IntentLog | None = None
        self.shipper()

    def shipper(self) -> OutboxShipper:
        """The journal's shipper (a forked child opens a journal of its own)."""
        if self._shipper is None or self._pid != os.getpid():
            outbox = open_own_outbox(self.directory, synchronous="NORMAL")
            recover_dead_logs(self.directory, outbox)  # before the shipper first looks
            self._shipper = OutboxShipper(
                outbox,
                self._inserter,
                retry_max=self._retry_max,
                replay_hooks=self._replay_hooks,
                quarantine_hooks=self._quarantine_hooks,
                on_scan=lambda: recover_dead_logs(self.directory, outbox),
            )
            self._log = IntentLog(self.directory)
            self._pid = os.getpid()
        return self._shipper

    def record(self, call: CallStart, lost: Sequence[ImageEditRequest] = ()) -> None:
        """Write the call's intent (before it is sent), or write it again before an attempt
        that follows ``lost`` ones (the last line of a request id is the one recovered)."""
        line = intent_line(call, lost)
        if self._pid != os.getpid():
            self.shipper()
        assert self._log is not None
        self._log.record(call.request_id, line)

    def complete(self, request_id: str) -> None:
        """The call's own row is acknowledged: its intent is done."""
        if self._log is not None and self._pid == os.getpid():
            self._log.complete(request_id)

    def close(self, timeout: float | None) -> None:
        """Close the log, ship what came from dead processes' logs, stop."""
        if self._shipper is None or self._pid != os.getpid():
            return
        if self._log is not None:
            self._log.close()
        self.ship_then_close(self._shipper, timeout)
