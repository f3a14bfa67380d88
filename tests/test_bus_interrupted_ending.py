"""A call whose ending is interrupted still reaches every receiver (a QA pass's finding).

An async call's task cancelled while a durable ledger awaited its row's acknowledgement (an
``asyncio.wait_for`` running out while another process held the SQLite file's lock) left the
row written but the integrations after the ledger and every user callback without the call:
a billed call missing from Prometheus, structlog and the user's own billing. A Ctrl-C during a
sync call's ``on_end`` did the same. The rest now get the event without waiting, then the
interruption is passed on.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tracking.events import ImageEditEvent
from tracking.integrations.sql import SqlLedger, spend_logs


class Collecting:
    """An integration that keeps the events it is given."""

    def __init__(self, interrupt: bool = False) -> None:
        self.events: list[ImageEditEvent] = []
        self.interrupt = interrupt

    def on_start(self, call: Any) -> None:
        return None

    def on_end(self, event: ImageEditEvent) -> None:
        self.events.append(event)
        if self.interrupt:
            raise KeyboardInterrupt

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        return None


def _params(upstream: dict[str, str], user: str) -> dict[str, Any]:
    return {
        "model": "gpt-image-2",
        "prompt": "a hat",
        "image": make_png(16, 16),
        "quality": "low",
        "size": "1024x1024",
        "user": user,
        **upstream,
    }


def test_an_async_call_cancelled_while_the_ledger_waits_reaches_the_rest(
    upstream: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqlLedger(f"sqlite:///{path}", mode="durable", auto_migrate=True)
    later = Collecting()
    billed: list[tuple[str, object]] = []

    def billing(kwargs: dict[str, Any], *_: Any) -> None:
        billed.append((kwargs["user"], kwargs["response_cost"]))

    monkeypatch.setattr(tracking, "callbacks", [ledger, later])
    monkeypatch.setattr(tracking, "success_callback", [billing])
    monkeypatch.setattr(tracking, "failure_callback", [billing])
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # the ledger's commit waits for this lock

        async def main() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(tracking.aimage_edit(**_params(upstream, "victim")), 1.0)

        asyncio.run(main())
        assert [e.end_user for e in later.events] == ["victim"]  # handed over, not lost
        holder.execute("COMMIT")
        assert tracking.flush(15)
        (event,) = later.events
        assert event.status == "success" and event.cost_usd and event.cost_usd > 0
        assert billed == [("victim", float(event.cost_usd))]
        with ledger.engine.connect() as conn:
            rows = conn.execute(spend_logs.select()).mappings().all()
        assert [(r["end_user"], r["status"]) for r in rows] == [("victim", "success")]
    finally:
        holder.close()
        ledger.shutdown(10)


def test_a_ctrl_c_in_one_integration_still_reaches_the_rest_then_is_passed_on(
    upstream: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupted, later = Collecting(interrupt=True), Collecting()
    billed: list[str] = []
    monkeypatch.setattr(tracking, "callbacks", [interrupted, later])
    monkeypatch.setattr(tracking, "success_callback", [lambda k, *_: billed.append(k["user"])])
    with pytest.raises(KeyboardInterrupt):
        tracking.image_edit(**_params(upstream, "ctrl-c"))
    assert [e.end_user for e in later.events] == ["ctrl-c"]
    assert tracking.flush(15)
    assert billed == ["ctrl-c"]
