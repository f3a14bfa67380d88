"""Faults the fake upstream can inject: a status, latency, Retry-After, bad JSON, a dropped
connection, a slow body, a stream that breaks off or pauses between events.

A fault is written as ``key=value`` items joined by ``;`` (or ``,``), for example
``status=503;retry_after=0.1`` or ``drop`` or ``latency=0.2;slow_body=1``:

=================  =========================================================================
``status=N``       answer with HTTP status N and an OpenAI-shaped error body
``retry_after=S``  with ``status``: send ``Retry-After`` (whole seconds, rounded up) and
                   ``retry-after-ms`` (exact), as OpenAI does
``message=TEXT``   with ``status``: the error message (else OpenAI's usual wording)
``code=TEXT``      with ``status``: the error ``code`` (e.g. ``moderation_blocked``)
``type=TEXT``      with ``status``: the error ``type`` (e.g. ``image_generation_user_error``)
``latency=S``      wait S seconds before answering (combines with everything else)
``malformed``      answer 200 with a JSON body cut in the middle
``drop``           read the request, then close the connection without any answer
``slow_body=S``    send the headers and half the body, wait S seconds, send the rest
``break_after=N``  a streamed answer: send N events, then close the connection mid-stream
``event_delay=S``  a streamed answer: wait S seconds before each event after the first
``big_body=N``     answer 200 with a JSON body of N bytes (one huge ``b64_json``), sent in
                   chunks without a Content-Length and generated as it goes
``no_usage``       a plain (not streamed) answer as usual, but without its ``usage``: the
                   call is made and billed (the fake's billing counts it), its cost unsaid
``times=N``        (server faults only) apply to the next N requests; ``always`` (or
                   ``times=always``): every one
=================  =========================================================================

Per request, send the fault in the ``x-fake-fault`` header (``extra_headers`` in the SDK); per
server, pass ``faults=[...]`` to :class:`~tracking.testing.FakeOpenAI`, call its ``inject(...)``,
or run ``tracking fake-openai --fault SPEC``. A request's header wins over the server's queue.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FAULT_HEADER", "Fault", "next_fault", "parse_fault"]

FAULT_HEADER = "x-fake-fault"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault to inject; see the module docstring for what each field does."""

    status: int | None = None
    retry_after: float | None = None
    message: str | None = None
    code: str | None = None
    type: str | None = None
    latency: float = 0.0
    malformed: bool = False
    drop: bool = False
    slow_body: float = 0.0
    #: a streamed answer: the events sent before the connection is closed (None: all of them)
    break_after: int | None = None
    #: a streamed answer: seconds between one event and the next
    event_delay: float = 0.0
    #: answer 200 with a JSON body of this many bytes, chunked (None: a normal answer)
    big_body: int | None = None
    #: answer as usual, but leave the ``usage`` out of a plain answer's JSON
    no_usage: bool = False
    #: how many requests a server fault applies to; None: every request until cleared
    times: int | None = 1

    def __post_init__(self) -> None:
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status (100-599), got {self.status}")
        for name in (
            "latency",
            "slow_body",
            "retry_after",
            "event_delay",
            "break_after",
            "big_body",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be at least 1, got {self.times}")

    def with_changes(self, **changes: Any) -> Fault:
        return dataclasses.replace(self, **changes)


_NUMBERS = {
    "retry_after": float,
    "latency": float,
    "slow_body": float,
    "status": int,
    "times": int,
    "break_after": int,
    "event_delay": float,
    "big_body": int,
}
_TEXTS = ("message", "code", "type")
_FLAGS = ("malformed", "drop", "no_usage")


def parse_fault(spec: str) -> Fault:
    """Read a fault written as ``key=value;flag;...``; a ``ValueError`` says what is wrong."""
    values: dict[str, Any] = {}
    for item in spec.replace(",", ";").split(";"):
        key, sep, raw = item.strip().partition("=")
        key = key.strip().lower().replace("-", "_")
        raw = raw.strip()
        if not key:
            continue
        if key in _FLAGS and not sep:
            values[key] = True
        elif (key == "always" and not sep) or (key == "times" and raw.lower() == "always"):
            values["times"] = None
        elif key in _NUMBERS and sep:
            try:
                values[key] = _NUMBERS[key](raw)
            except ValueError:
                raise ValueError(f"fault {key}: expected a number, got {raw!r}") from None
        elif key in _TEXTS and sep:
            values[key] = raw
        else:
            known = ", ".join([*_NUMBERS, *_TEXTS, *_FLAGS, "always"])
            raise ValueError(f"fault: cannot read {item.strip()!r}; known items: {known}")
    return Fault(**values)


def next_fault(
    headers: Mapping[str, str], queue: list[Fault], lock: threading.Lock
) -> Fault | None:
    """The request's own fault header, else the next queued server fault (consuming it: a
    fault with ``times`` applies to that many requests, ``None`` to every one)."""
    spec = headers.get(FAULT_HEADER)
    if spec is not None:
        return parse_fault(spec)
    if not queue:
        return None
    with lock:
        if not queue:
            return None
        fault = queue[0]
        if fault.times is not None:
            if fault.times <= 1:
                queue.pop(0)
            else:
                queue[0] = fault.with_changes(times=fault.times - 1)
        return fault
