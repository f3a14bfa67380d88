"""The command line as a demanding operator uses it: values at the edges of what a command takes,
files of the right format with something unusual in them. One line and an exit status, never a
traceback; money in plain digits."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ledger_support import (  # noqa: F401
    ledger_url,
    leftovers_dir,
    make_event,
    open_ledger,
    outbox_with_rejected_rows,
    refused_line,
    row_line,
)
from tests.proxy_support import tracking_command
from tracking.cli import main
from tracking.integrations.sql import _quarantine as quarantine_module
from tracking.integrations.sql import (
    budget_spend_with_outboxes,
    create_ledger_engine,
    quarantine_list_command,
)
from tracking.integrations.sql._schema import quarantine


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _figure(usd: str, **extra: object) -> dict[str, object]:
    return {
        "usd": usd,
        "source": "https://prices.example/",
        "retrieved": "2026-01-01",
        "confidence": "official",
        **extra,
    }


def _prices_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _entry(model: str, usd: str, **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "provider": "openai",
        "effective_from": None,
        "effective_to": None,
        "shutdown": None,
        "tokens_per_million": {"input_text": _figure(usd)},
        **extra,
    }


def test_prices_import_keeps_a_numeric_note_as_its_text_never_a_traceback(tmp_path, capsys):
    """Our format holds its prices as strings; a number elsewhere (an entry's notes, a figure's
    own remark) is read as Decimal, which ``json.dumps`` refused with a TypeError traceback."""
    entry = _entry("my-image-model", "0.011")
    entry["notes"] = 1.5
    entry["tokens_per_million"] = {"input_text": _figure("0.011", page="PAGE")}
    body = {"schema": 1, "currency": "USD", "entries": [entry]}
    # a number no float holds, written in by hand
    text = json.dumps(body).replace('"PAGE"', "0.1000000000000000000001")
    source = _prices_file(tmp_path / "mine.json", text)
    out = tmp_path / "override.json"
    code, stdout, _ = _run(capsys, "prices", "import", str(source), "--out", str(out))
    assert code == 0 and "my-image-model" in stdout
    written = json.loads(out.read_text(encoding="utf-8"))["entries"][0]
    assert written["notes"] == "1.5"
    assert written["tokens_per_million"]["input_text"]["page"] == "0.1000000000000000000001"
    assert written["tokens_per_million"]["input_text"]["usd"] == "0.011"
    # importing again into that file keeps its other models and reads it back the same way
    other = _prices_file(
        tmp_path / "other.json",
        json.dumps({"schema": 1, "currency": "USD", "entries": [_entry("other-model", "1")]}),
    )
    assert _run(capsys, "prices", "import", str(other), "--out", str(out))[0] == 0
    kept = json.loads(out.read_text(encoding="utf-8"))["entries"]
    assert [e["model"] for e in kept] == ["my-image-model", "other-model"]
    assert kept[0]["tokens_per_million"]["input_text"]["page"] == "0.1000000000000000000001"


def test_prices_list_and_diff_show_small_prices_in_plain_digits(tmp_path, capsys):
    """A price of $0.0000001 per 1M tokens was shown as ``$1E-7`` (and ``1E-7`` in the JSON),
    and a round one given as ``1E+3`` as ``$1E+3``."""
    entries = [_entry("tiny-model", "0.0000001"), _entry("round-model", "1E+3")]
    path = _prices_file(
        tmp_path / "p.json", json.dumps({"schema": 1, "currency": "USD", "entries": entries})
    )
    code, table, _ = _run(capsys, "prices", "list", "--prices-file", str(path))
    assert code == 0
    lines = {line.split()[0]: line for line in table.splitlines() if line}
    assert "$0.0000001" in lines["tiny-model"].split()
    assert "$1000" in lines["round-model"].split()
    assert "E" not in lines["tiny-model"] + lines["round-model"]
    code, listed, _ = _run(capsys, "prices", "list", "--prices-file", str(path), "--json")
    rows = {row["model"]: row for row in json.loads(listed)}
    assert rows["tiny-model"]["tokens_per_million"] == {"input_text": "0.0000001"}
    assert rows["round-model"]["tokens_per_million"] == {"input_text": "1000"}
    code, diff, _ = _run(capsys, "prices", "diff", str(path))
    assert code == 0 and "E-7" not in diff and "E+3" not in diff


def test_quarantine_replay_of_an_id_no_column_holds_is_missing_never_a_traceback(
    ledger_url,  # noqa: F811
    capsys,
):
    """``--id 99999999999999999999999`` reached the driver, which raised OverflowError (SQLite)
    or a DataError (PostgreSQL's integer out of range) as a traceback."""
    open_ledger(ledger_url).shutdown(10)  # the schema, with an empty quarantine
    huge, past_32_bits = str(10**23), str(2**31)
    code, out, err = _run(
        capsys,
        "ledger",
        "quarantine",
        "replay",
        "--id",
        huge,
        "--id",
        past_32_bits,
        "--id",
        str(-(10**23)),
        "--database-url",
        ledger_url,
    )
    assert code == 1, err
    assert "replayed 0 rows" in out
    for row_id in (huge, past_32_bits, str(-(10**23))):
        assert f"no quarantined row has id {row_id} " in out


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_a_name_the_output_encoding_cannot_write_is_one_line_never_a_traceback(tmp_path, fmt):
    """A cron job or terminal in ASCII or Latin-1 and an end user named in another script: the
    report stopped with a UnicodeEncodeError traceback. Now one line saying what to set (the
    output is never re-spelt, so a CSV cannot hold a name other than the ledger's)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        ledger.on_end(make_event(user="Zoë 日本"))
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)
    for encoding in ("ascii", "latin-1"):
        done = subprocess.run(
            [*tracking_command(), "spend", "--by", "user", "--format", fmt, "--database-url", url],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=60,
            env={**os.environ, "PYTHONIOENCODING": encoding},
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("tracking spend: error: standard output's encoding")
        assert "PYTHONIOENCODING=utf-8" in line


def test_a_relative_outbox_folder_is_read_never_a_value_error(tmp_path, monkeypatch, capsys):
    """``--outbox-dir kept`` or ``TRACKING_OUTBOX_DIR=./outbox``: the folder's files were opened
    as ``file:`` URIs, which a relative path cannot be: ``tracking ledger quarantine list``
    raised ValueError with a traceback, and so did the proxy's budgets reading the outboxes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", "outbox")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).shutdown(10)
    outbox_with_rejected_rows(Path("kept"), [refused_line()])
    argv = ["ledger", "quarantine", "list", "--database-url", url, "--outbox-dir", "kept"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert "bad-tokens" in out and "1 rows refused by the quarantine too" in out
    # the default folder, named by a relative TRACKING_OUTBOX_DIR: budgets count what it keeps
    outbox_with_rejected_rows(leftovers_dir(url), [refused_line()])
    code, out, err = _run(capsys, "ledger", "quarantine", "list", "--database-url", url)
    assert code == 0 and "bad-tokens" in out, err
    engine = create_ledger_engine(url)
    try:
        assert budget_spend_with_outboxes(engine) == Decimal("0.0420000000")
    finally:
        engine.dispose()


class _Counted:
    """A standard output that keeps only how much was written (and the last lines)."""

    def __init__(self) -> None:
        self.chars = 0
        self.tail = ""

    def write(self, text: str) -> int:
        self.chars += len(text)
        self.tail = (self.tail + text)[-400:]
        return len(text)


def _quarantine_rows(url: str, count: int, error_chars: int) -> None:
    engine = create_ledger_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                quarantine.insert(),
                [
                    {
                        "request_id": f"kept-{i}",
                        "line": row_line(f"kept-{i}"),
                        "error": f"refused {i}: " + "x" * error_chars,
                        "quarantined_at": datetime(2026, 5, 4, tzinfo=UTC),
                    }
                    for i in range(count)
                ],
            )
    finally:
        engine.dispose()


def _peak_bytes(work) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_quarantine_list_and_replay_never_hold_a_big_quarantine_in_memory(tmp_path, monkeypatch):
    """Both read every quarantined row (its line, its error) into one list first: a quarantine
    of millions of rows (a column too narrow for a month) took the memory of all of them."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).shutdown(10)
    monkeypatch.setattr(quarantine_module, "QUARANTINE_PAGE", 20, raising=False)
    rows, error_chars = 300, 100_000  # 30 MB of errors in all, 2 MB a page
    _quarantine_rows(url, rows, error_chars)
    budget = 15_000_000  # a few pages of rows, and what reading them takes

    for fmt in ("table", "json"):
        out = _Counted()
        peak = _peak_bytes(lambda: quarantine_list_command(url, fmt=fmt, out=out))  # noqa: B023
        assert peak < budget, f"{fmt}: {peak:,} bytes at the peak"
        assert out.tail.endswith(f"{rows} rows in quarantine\n" if fmt == "table" else "}\n]\n")

    code: list[int] = []
    peak = _peak_bytes(
        lambda: code.append(main(["ledger", "quarantine", "replay", "--database-url", url]))
    )
    assert code == [0] and peak < budget, f"{peak:,} bytes at the peak"
    out = _Counted()
    quarantine_list_command(url, fmt="table", out=out)
    assert out.tail == "the ledger's quarantine is empty\n"


def test_quarantine_list_json_is_the_list_it_always_was(tmp_path, monkeypatch):
    """Written a row at a time, the JSON is still exactly ``json.dump(rows, indent=2)``."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).shutdown(10)
    for count in (0, 3):
        if count:
            _quarantine_rows(url, count, 10)
        out = io.StringIO()
        assert quarantine_list_command(url, fmt="json", out=out) == 0
        listed = json.loads(out.getvalue())
        assert len(listed) == count
        assert out.getvalue() == json.dumps(listed, indent=2) + "\n"
        out = io.StringIO()
        assert quarantine_list_command(url, fmt="json", out=out, with_local=True) == 0
        both = json.loads(out.getvalue())
        assert both == {"quarantine": listed, "kept_locally": []}
        assert out.getvalue() == json.dumps(both, indent=2) + "\n"


def test_spend_since_a_time_until_that_same_whole_day(tmp_path, monkeypatch, capsys):
    """A date-only ``--until`` takes its whole day, but the check for a reversed window compared
    ``--since`` with that day's midnight: ``--since 2026-05-05T06:00 --until 2026-05-05`` (the
    rest of a day) was refused as "--since is after --until"."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        for hour in (3, 12):
            ledger.on_end(make_event(start=datetime(2026, 5, 5, hour, tzinfo=UTC)))
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)
    window = ["--since", "2026-05-05T06:00", "--until", "2026-05-05"]
    code, out, err = _run(capsys, "spend", *window, "--database-url", url)
    assert code == 0, err
    assert out.splitlines()[2].split()[:2] == ["total", "1"]  # noon's call, not three o'clock's
    for since in ("2026-05-06", "2026-05-06T00:00"):  # the next day is after the window
        code, _, err = _run(capsys, "spend", "--since", since, "--until", "2026-05-05")
        assert code == 1 and "is after --until 2026-05-05" in err


def _to_a_full_disk(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``tracking ARGV`` with its standard output on /dev/full: every write fails, ENOSPC."""
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [*tracking_command(), *argv],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )


def test_a_full_disk_or_a_closed_output_is_never_a_traceback(tmp_path, monkeypatch):
    """``tracking spend --format csv > report.csv`` on a full disk, or a command started with its
    standard output closed (``>&-``): an OSError (an AttributeError on ``None``) traceback.
    Now a full disk is one line and exit 1, and a closed output goes nowhere, as ``print``'s."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        ledger.on_end(make_event())
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)
    commands = [["prices", "list"], ["spend", "--format", "csv", "--database-url", url]]
    for argv in commands:
        done = _to_a_full_disk(argv)
        assert done.returncode == 1, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.endswith("error: cannot write standard output: No space left on device")
        closed = subprocess.run(
            ["sh", "-c", 'exec "$@" >&-', "sh", *tracking_command(), *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert closed.returncode == 0 and closed.stderr == "", closed.stderr


def _at_most_1_5_gb() -> None:  # the unbounded read fails fast, never takes the machine
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))


@pytest.mark.parametrize(
    "argv",
    [
        ["prices", "list", "--prices-file", "/dev/zero"],
        ["prices", "diff", "/dev/zero"],
        ["prices", "import", "/dev/zero", "--out", "never.json"],
    ],
)
def test_a_price_file_with_no_end_is_refused_past_its_bound(tmp_path, argv):
    """A device, a pipe or a growing file has no size to check first: the price file was read
    whole (``read_text``; ``import`` trusted ``stat``'s 0) and the command died of a
    MemoryError traceback. Now it is read up to its bound, then refused in one line."""
    done = subprocess.run(
        [*tracking_command(), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        preexec_fn=_at_most_1_5_gb,  # the test starts no threads in the child
    )
    assert done.returncode == 1, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("tracking prices: error:") and "/dev/zero: larger than" in line
    assert not (tmp_path / "never.json").exists()


def test_models_check_of_a_list_nested_past_the_parser_is_exit_2_never_1(capsys):
    """``tracking models check`` exits 1 when a model is retired, 2 when the list cannot be
    read. A list nested past the JSON parser's depth raised RecursionError: a traceback and exit
    1, which a deploy pipeline reads as "retired"."""
    from aiohttp import web

    from tracking.testing.app_thread import AppThread

    async def models(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    server = AppThread(app, name="deep-models", shutdown_timeout=0.1)
    base = f"http://127.0.0.1:{server.start()}/v1"
    try:
        code, _, err = _run(capsys, "models", "check", "--api-base", base, "--api-key", "sk-x")
    finally:
        server.stop()
    assert code == 2
    assert err == f"tracking models: error: {base}/models: the answer is not JSON\n"


_WITHOUT = (
    "import sys\n"
    "sys.modules[sys.argv[1]] = None\n"
    "from tracking.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def test_reconcile_and_models_check_that_cannot_run_exit_2_never_1(tmp_path, monkeypatch, fake):
    """``reconcile``'s 1 is drift and ``models check``'s a retired model: a missing ``sql`` extra
    or an output on a full disk exited 1 too, which a scheduled job or a deploy pipeline read
    as drift or a retired model."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).shutdown(10)
    admin = ["--admin-key", "sk-admin-operator-0123456789", "--api-base", fake.url]
    reconcile = ["reconcile", "--since", "2026-05-01", "--database-url", url, *admin]
    models = ["models", "check", "--api-base", fake.url, "--api-key", "sk-x"]
    for argv in (reconcile, models):
        done = _to_a_full_disk(argv)
        assert done.returncode == 2, done.stderr
        assert "cannot write standard output" in done.stderr
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT, "sqlalchemy", *reconcile],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "sqlalchemy is not installed" in done.stderr and "Traceback" not in done.stderr


def test_prices_import_through_a_symbolic_link_writes_the_file_it_names(tmp_path, capsys):
    """``TRACKING_PRICES_FILE`` is often a link a configuration manager keeps: the import's
    rename replaced the link with a file of its own and left the real file as it was."""
    (tmp_path / "managed").mkdir()
    real = _prices_file(
        tmp_path / "managed" / "prices.json",
        json.dumps({"schema": 1, "currency": "USD", "entries": [_entry("old-model", "1")]}),
    )
    link = tmp_path / "prices.json"
    link.symlink_to(real)
    source = _prices_file(
        tmp_path / "new.json",
        json.dumps({"schema": 1, "currency": "USD", "entries": [_entry("new-model", "2")]}),
    )
    code, _, err = _run(capsys, "prices", "import", str(source), "--out", str(link))
    assert code == 0, err
    assert link.is_symlink() and link.resolve() == real.resolve()
    models = [e["model"] for e in json.loads(real.read_text(encoding="utf-8"))["entries"]]
    assert models == ["old-model", "new-model"]


def test_quarantine_list_shows_escape_sequences_quoted_never_raw(tmp_path, monkeypatch, capsys):
    """The table printed a row's request id and error as they were: an escape sequence (in an
    id, or in a database's error quoting the value it refused) could hide or forge rows on the
    operator's terminal, as spend's and reconcile's tables already prevent."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).shutdown(10)
    engine = create_ledger_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                quarantine.insert(),
                {
                    "request_id": "req\x1b[2K",
                    "line": row_line("req"),
                    "error": "refused '\x1b[31mred\x1b[0m'\r\nforged",
                    "quarantined_at": datetime(2026, 5, 4, tzinfo=UTC),
                },
            )
    finally:
        engine.dispose()
    outbox_with_rejected_rows(tmp_path / "kept", [row_line("kept\x1b[2K")])
    argv = ["ledger", "quarantine", "list", "--database-url", url]
    code, out, err = _run(capsys, *argv, "--outbox-dir", str(tmp_path / "kept"))
    assert code == 0, err
    assert "\x1b" not in out and "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 4, out  # the row, its count, the row kept locally, its count
    assert "'req\\x1b[2K'" in lines[0] and "\\x1b[31mred" in lines[0]
    assert "'kept\\x1b[2K'" in lines[2]


def test_prices_commands_show_escape_sequences_quoted_never_raw(tmp_path, capsys):
    """A price file, perhaps imported from a URL, names models, providers and sources the
    commands printed raw: an escape sequence in one could hide or forge lines on the terminal."""
    entry = _entry("evil\x1b[2Kmodel", "1")
    entry["provider"] = "open\x1b[31mai"
    entry["tokens_per_million"]["input_text"]["source"] = "https://x.example/\x1b[2J"  # type: ignore[index]
    path = _prices_file(
        tmp_path / "p.json", json.dumps({"schema": 1, "currency": "USD", "entries": [entry]})
    )
    runs = [
        ["prices", "list", "--prices-file", str(path)],
        ["prices", "diff", str(path)],
        ["prices", "import", str(path), "--out", str(tmp_path / "out.json")],
    ]
    for argv in runs:
        code, out, err = _run(capsys, *argv)
        assert code == 0, err
        assert "\x1b" not in out and "'evil\\x1b[2Kmodel'" in out, out
