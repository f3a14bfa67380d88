"""``tracking models check`` reports a malformed ``shutdown_date`` as such and exits 2.

OpenAI's List models answer gives each model a ``shutdown_date``, ``YYYY-MM-DD`` or null. A value
that was neither (``"soon"``, a number, an impossible date) was read as null: the model was
reported ``live`` and the check passed (exit 0), when whether it is retired is not known. Exit 2
is the command's "could not tell" (1 is "a model is retired").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.proxy_support import write_config
from tracking.cli import main
from tracking.testing.app_thread import AppThread

#: What the upstream lists, set by each test.
LISTED: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": LISTED})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    server = AppThread(app, name="models-list", shutdown_timeout=0.1)
    try:
        yield f"http://127.0.0.1:{server.start()}/v1"
    finally:
        server.stop()


def _listed(**dates: Any) -> None:
    LISTED[:] = [
        {"id": model, "object": "model", "shutdown_date": day} for model, day in dates.items()
    ]


def _config(folder: Path, base: str, *models: str) -> str:
    deployments = [
        {"model_name": m, "litellm_params": {"model": m, "api_base": base, "api_key": "sk-x"}}
        for m in models
    ]
    return str(write_config(folder / "config.yaml", {"model_list": deployments}))


def _check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["models", "check", *argv])
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("soon", "soon"),
        ("2026-13-45", "2026-13-45"),
        ("", '""'),
        (20261023, "20261023"),
        ({"day": "2026-10-23"}, '{"day": "2026-10-23"}'),
        ("\x1b[2Jlive", repr("\x1b[2Jlive")),  # quoted: a terminal would act on it
    ],
)
def test_a_malformed_shutdown_date_in_a_config_is_reported_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str, raw: Any, shown: str
) -> None:
    _listed(**{"gpt-image-2": raw, "gpt-image-1.5": None})
    code, out = _check(capsys, "--config", _config(tmp_path, base, "gpt-image-2", "gpt-image-1.5"))
    assert code == 2, out
    lines = out.splitlines()
    assert lines[0].split() == [
        "gpt-image-2",
        "shutdown_date",
        "malformed",
        *f"({shown}):".split(),
        "retired",
        "or",
        "not",
        "is",
        "unknown",
    ]
    assert lines[1].split() == ["gpt-image-1.5", "live"]
    assert lines[2].endswith("; 0 retired; 1 with a malformed shutdown_date")


def test_a_malformed_date_beside_a_retired_model_still_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str
) -> None:
    """The retired model is reported; the exit says the check could not tell for another."""
    _listed(**{"gpt-image-2": "tomorrow", "gpt-image-1": "2026-01-01"})
    code, out = _check(capsys, "--config", _config(tmp_path, base, "gpt-image-2", "gpt-image-1"))
    assert code == 2, out
    assert "gpt-image-1  retired 2026-01-01" in out
    assert out.splitlines()[-1].endswith("; 1 retired; 1 with a malformed shutdown_date")


def test_a_malformed_date_of_a_priced_model_exits_2_and_is_no_stale_table(
    capsys: pytest.CaptureFixture[str], base: str
) -> None:
    """Without ``--config`` the price table's models are checked: a malformed date says nothing
    of the table, whose own date for the model is not compared with it."""
    _listed(**{"gpt-image-2": "n/a"})
    code, out = _check(capsys, "--api-base", base, "--api-key", "sk-x")
    assert code == 2, out
    (line,) = [row for row in out.splitlines() if row.startswith("gpt-image-2 ")]
    assert line.split()[1:] == [
        "shutdown_date",
        "malformed",
        "(n/a):",
        "retired",
        "or",
        "not",
        "is",
        "unknown",
    ]
    assert "1 with a malformed shutdown_date; 0 the price table does not know of" in out


def test_null_and_well_formed_dates_exit_as_before(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str
) -> None:
    _listed(**{"gpt-image-2": None, "gpt-image-1.5": "2099-01-01"})
    code, out = _check(capsys, "--config", _config(tmp_path, base, "gpt-image-2", "gpt-image-1.5"))
    assert code == 0, out
    assert "malformed" not in out
