"""The proxy's ledger (tracking/proxy/ledger.py): durable unless the config says background, and
in durable mode an async call returns only once its row is committed, the loop staying free."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import tracking
from tests.conftest import make_png
from tests.proxy_support import one_deployment_config
from tracking.config import parse_config
from tracking.proxy.ledger import open_ledger


def _config(path, **general):
    return parse_config(
        one_deployment_config(
            model_name="m",
            model="gpt-image-1",
            api_key=None,
            general_settings={"database_url": f"sqlite:///{path}", **general},
        )
    )


def _committed(path, request_id: str) -> bool:
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT 1 FROM spend_logs WHERE request_id = ?", (request_id,))
        return found.fetchone() is not None


def test_the_mode_follows_general_settings(tmp_path):
    durable = open_ledger(_config(tmp_path / "a.db"))
    background = open_ledger(_config(tmp_path / "b.db", ledger_mode="background"))
    try:
        assert (durable.mode, background.mode) == ("durable", "background")
    finally:
        durable.shutdown(5)
        background.shutdown(5)


async def test_durable_calls_return_with_their_row_committed_and_the_loop_free(
    tmp_path, upstream, monkeypatch
):
    path = tmp_path / "ledger.db"
    ledger = open_ledger(_config(path))
    monkeypatch.setattr(tracking, "callbacks", [ledger])
    ticks = 0

    async def heartbeat() -> None:  # runs only while the loop is free
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def one() -> tuple[str, bool]:
        response = await tracking.aimage_edit(
            image=make_png(), prompt="p", model="gpt-image-1", **upstream
        )
        return response.request_id, _committed(path, response.request_id)

    beating = asyncio.create_task(heartbeat())
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(50))), 60)
    finally:
        beating.cancel()
        ledger.shutdown(10)
    assert len({request_id for request_id, _ in answers}) == 50
    assert all(committed for _, committed in answers)
    assert ticks > 0


@pytest.mark.parametrize("mode", ["durable", "background"])
async def test_a_failed_call_is_recorded_too(tmp_path, upstream, monkeypatch, mode):
    path = tmp_path / "ledger.db"
    ledger = open_ledger(_config(path, ledger_mode=mode))
    monkeypatch.setattr(tracking, "callbacks", [ledger])
    with pytest.raises(tracking.ValidationError) as caught:
        await tracking.aimage_edit(image=make_png(), prompt="p", model="gpt-image-1", n=99)
    try:
        if mode == "background":
            assert ledger.flush(10)
        assert _committed(path, caught.value.request_id)
    finally:
        ledger.shutdown(10)
