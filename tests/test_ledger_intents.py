"""Intents: every request the upstream received has a row, even across a kill -9 (issue 18,
finding 4).

The proxy commits each call's intent before sending it; a process killed with calls in flight
leaves them as intents, which the next process turns into rows marked ``incomplete`` with an
estimated cost. The check is against the fake upstream's own request log: each request carries
a unique ``user``, and every ``user`` the upstream saw must be in ``spend_logs`` exactly once.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.ledger_support import intent_line_of as _intent_line
from tests.ledger_support import ledger_url, make_event  # noqa: F401
from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.testing import FakeOpenAI

from .conftest import API_KEY, make_png
from .proxy_support import MASTER_KEY, ProxyProcess
from .test_reliability_faults import proxy_config
from .test_reliability_ledger import LoadUntilStopped, _migrate

PNG = make_png(16, 16)


_users = itertools.count()


def edit_as_a_new_user(url: str) -> httpx.Response:
    """One edit whose ``user`` no other request had: the upstream's log names each request."""
    return httpx.post(
        f"{url}/v1/images/edits",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        data={
            "model": "gpt-image-1",
            "prompt": "hat",
            "quality": "low",
            "user": f"u-{next(_users)}",
        },
        files={"image": ("a.png", PNG, "image/png")},
        timeout=20,
    )


def _rows(url: str) -> list[tuple[str | None, str, str, object]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.select(
                spend_logs.c.end_user,
                spend_logs.c.status,
                spend_logs.c.cost_source,
                spend_logs.c.cost_usd,
            )
            return [tuple(r) for r in conn.execute(query)]  # type: ignore[misc]
    finally:
        engine.dispose()


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_kill_9_under_load_leaves_a_row_for_every_request_the_upstream_received(
    tmp_path: Path, monkeypatch, request, target: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    if target == "postgres":
        url = request.getfixturevalue("postgres_url")
        _migrate(url)
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # Slow answers: at any moment most of the 8 clients' calls are in flight upstream.
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=0.4;always"]) as upstream:
        config = proxy_config(tmp_path, upstream.url, general={"database_url": url})
        current = {"proxy": ProxyProcess(config).start()}
        try:
            with LoadUntilStopped(lambda: current["proxy"].url, post=edit_as_a_new_user) as load:
                load.wait_for(16)
                deadline = time.monotonic() + 60
                while upstream.hits - len(load.successes) < 3:  # calls in flight upstream
                    assert time.monotonic() < deadline, "no calls in flight to kill"
                    time.sleep(0.01)
                current["proxy"].process.kill()  # SIGKILL with calls in flight
                current["proxy"].process.wait(10)
                current["proxy"] = ProxyProcess(config).start(timeout=60)  # a loaded machine
                load.wait_for(len(load.successes) + 8, timeout=60)
            time.sleep(0.5)  # the last answers' rows
            received = {r.fields["user"] for r in upstream.requests}
            deadline = time.monotonic() + 60
            while True:
                rows = _rows(url)
                users = Counter(user for user, *_ in rows)
                if received <= set(users) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        finally:
            current["proxy"].stop()
    missing = received - set(users)
    assert not missing, f"{len(missing)} requests the upstream received have no row"
    assert [u for u, n in users.items() if n > 1] == []
    incomplete = [row for row in rows if row[1] == "incomplete"]
    assert incomplete, "the kill left no call in flight: the test proved nothing"
    for _, _, source, cost in incomplete:
        assert source == "estimate" and cost is not None and float(str(cost)) > 0
    print(f"{len(received)} requests upstream, {len(incomplete)} incomplete rows")


def test_a_calls_own_row_replaces_its_incomplete_one_never_the_reverse(
    tmp_path: Path,
    ledger_url: str,  # noqa: F811
) -> None:
    """A dead process's intent and its acknowledged row may reach the target in either order."""
    from tracking.integrations.sql import event_to_row

    ledger = SqlLedger(ledger_url, auto_migrate=True, mode="durable", outbox_dir=tmp_path)
    try:
        real = make_event(request_id="call-1")
        incomplete = event_to_row(make_event(request_id="call-1", user="someone-else"))
        incomplete.update(status="incomplete", cost_source="estimate")
        ledger.writer.submit_many([incomplete])
        assert ledger.flush(10)
        ledger.on_end(real)  # arrives second: replaces the incomplete row
        ledger.writer.submit_many([incomplete])  # arrives third: changes nothing
        assert ledger.flush(10)
        with ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(spend_logs.c.status, spend_logs.c.end_user)).all()
    finally:
        ledger.shutdown(10)
    assert [tuple(r) for r in rows] == [("success", "alice")]


def test_a_dead_processes_log_leaves_its_open_intents_priced_and_nothing_else(tmp_path: Path):
    """Done intents are skipped, a torn last line too; open ones become estimated rows."""
    import json
    from datetime import UTC, datetime

    from tracking.integration import CallStart
    from tracking.integrations.sql._codec import decode_row
    from tracking.integrations.sql._intents import IntentLog, intent_line, open_intents
    from tracking.request import parse_call

    request, options = parse_call(
        model="gpt-image-1", prompt="a hat", image=PNG, api_key="sk-x", user="zoe", quality="low"
    )
    log = IntentLog(tmp_path)
    for request_id in ("open-1", "done-1", "open-2"):
        call = CallStart(request_id, "aimage_edit", request, options, "h", datetime.now(UTC))
        log.record(request_id, intent_line(call))
    log.complete("done-1")
    log.record("open-3", "{torn")  # a write cut short
    text = log.path.read_text()
    rows = [decode_row(line) for line in open_intents(text)]
    assert [r["request_id"] for r in rows] == ["open-1", "open-2"]
    for row in rows:
        assert row["status"] == "incomplete" and row["end_user"] == "zoe"
        assert row["cost_source"] == "estimate" and row["cost_usd"] > 0
        assert "tracking_estimate" not in row
        json.dumps(row, default=str)
    log.close()
    assert log.path.exists()  # open intents stay for the next start


def test_an_intent_is_written_as_its_values_and_recovered_as_the_whole_row(tmp_path: Path):
    """The compact line the call path writes gives back exactly the row ``intent_row`` builds
    (metadata, tags, key, team, estimate inputs), and costs a fraction of encoding that row."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from tracking.integration import CallStart
    from tracking.integrations.sql._codec import decode_row, encode_row
    from tracking.integrations.sql._intents import intent_line, intent_line_row, intent_row
    from tracking.request import parse_call

    request, options = parse_call(
        model="openai/gpt-image-2",
        prompt='a hat \u00e9\n"quoted"',
        image=[PNG, PNG],
        api_key="sk-x",
        user="zoe",
        quality="high",
        size="1024x1536",
        n=2,
        base_model="gpt-image-2",
        metadata={
            "user_api_key_hash": "h" * 64,
            "user_api_key_alias": "team-key",
            "team": "design",
            "tags": ["a", "7"],
            "budget": Decimal("1.50"),
            "nested": {"when": datetime(2026, 12, 4, tzinfo=UTC)},
        },
    )
    call = CallStart("req-9", "aimage_edit", request, options, "[::1]:8443", datetime.now(UTC))
    line = intent_line(call)
    whole = encode_row(intent_row(call))
    assert line.startswith("[1,") and len(line) < len(whole) / 2
    assert intent_line_row(line) == decode_row(whole)
    assert intent_line_row(whole) == decode_row(whole)  # a whole-row line of an older version


def test_an_intents_team_and_tags_are_read_as_the_calls_event_reads_them() -> None:
    """An integer team id is the team's text in the incomplete row too (it was NULL there)."""
    from datetime import UTC, datetime

    from tracking.integration import CallStart
    from tracking.integrations.sql._intents import intent_line, intent_line_row
    from tracking.request import parse_call

    request, options = parse_call(
        model="gpt-image-2",
        prompt="a hat",
        image=PNG,
        api_key="sk-x",
        metadata={"team": 5, "tags": ["a", "7"]},
    )
    call = CallStart("req-team", "image_edit", request, options, "h", datetime.now(UTC))
    row = intent_line_row(intent_line(call))
    assert (row["team"], row["tags"]) == ("5", ["a", "7"])


def test_whole_row_intents_left_by_an_older_version_are_still_recovered(tmp_path: Path):
    """A process of a version that wrote intents as whole rows died: its open intents (and a
    done one, in the compact form the new version writes next to it) are read back."""
    from datetime import UTC, datetime

    from tracking.integration import CallStart
    from tracking.integrations.sql._codec import decode_row, encode_row
    from tracking.integrations.sql._intents import intent_row, open_intents
    from tracking.request import parse_call

    request, options = parse_call(
        model="gpt-image-2", prompt="a hat", image=PNG, api_key="sk-x", user="ann"
    )
    lines = []
    for request_id in ("old-1", "old-2"):
        call = CallStart(request_id, "aimage_edit", request, options, "h", datetime.now(UTC))
        lines.append(f"+{encode_row(intent_row(call))}\n")
    text = "".join(lines) + "-old-2\n" + _intent_line("new-1").join(["+", "\n"])
    rows = [decode_row(line) for line in open_intents(text)]
    assert [r["request_id"] for r in rows] == ["old-1", "new-1"]
    assert all(r["cost_source"] == "estimate" and r["cost_usd"] > 0 for r in rows)
    assert rows[0]["end_user"] == "ann" and rows[1]["end_user"] == "zoe"


def _open_ids(path: Path) -> list[str]:
    from tracking.integrations.sql._codec import decode_row
    from tracking.integrations.sql._intents import open_intents

    return [decode_row(row)["request_id"] for row in open_intents(path.read_text())]


def test_intents_are_copied_into_the_mapped_file_without_a_system_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write() would hand the GIL to another thread in the middle of every proxied call."""
    import os

    from tracking.integrations.sql import _intents

    log = _intents.IntentLog(tmp_path)

    def no_write(fd: int, data: object) -> int:
        raise AssertionError("an intent was written with a system call")

    monkeypatch.setattr(_intents.os, "write", no_write)
    for n in range(50):
        log.record(f"call-{n}", _intent_line(f"call-{n}"))
    for n in range(0, 50, 2):
        log.complete(f"call-{n}")
    log.record("call-50", _intent_line("call-50"))  # carries the done marks
    # Read while the process lives, as after a kill -9: the file's unused tail is NULs.
    assert os.path.getsize(log.path) == _intents.ROTATE_BYTES
    still_open = [f"call-{n}" for n in (*range(1, 51, 2), 50)]
    assert _open_ids(log.path) == still_open
    monkeypatch.undo()
    log.close()
    assert b"\x00" not in log.path.read_bytes()  # cut to its length at a clean stop
    assert _open_ids(log.path) == still_open


def _killed_with_intents_open(directory: Path, prefix: str) -> None:
    """A child process records two intents and finishes one between them (``<prefix>-open``,
    ``<prefix>-done``, ``<prefix>-open-2``), then is killed (kill -9) without a word."""
    import os
    import signal

    from tracking.integrations.sql._intents import IntentLog

    pid = os.fork()
    if pid == 0:
        log = IntentLog(directory)
        log.record(f"{prefix}-open", _intent_line(f"{prefix}-open"))
        log.record(f"{prefix}-done", _intent_line(f"{prefix}-done"))
        log.complete(f"{prefix}-done")
        log.record(f"{prefix}-open-2", _intent_line(f"{prefix}-open-2"))
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_an_intent_survives_a_kill_9_of_its_process(tmp_path: Path) -> None:
    _killed_with_intents_open(tmp_path, "call")
    (path,) = tmp_path.glob("intents-*.log")
    assert _open_ids(path) == ["call-open", "call-open-2"]


def test_a_call_done_before_an_idle_kill_9_is_not_recovered_as_in_flight(
    tmp_path: Path,
) -> None:
    """The done mark waited for the next intent's write: a process killed while idle left its
    last calls "in flight", and a call whose own row was quarantined was counted twice."""
    import os
    import signal

    from tracking.integrations.sql._intents import IntentLog

    pid = os.fork()
    if pid == 0:
        log = IntentLog(tmp_path)
        log.record("first", _intent_line("first"))
        log.record("last", _intent_line("last"))
        log.complete("first")
        log.complete("last")
        os.kill(os.getpid(), signal.SIGKILL)  # idle: no intent written after the last call
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    (path,) = tmp_path.glob("intents-*.log")
    assert _open_ids(path) == []


def test_without_reserved_blocks_intents_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that cannot reserve the blocks (a full disk): write(), never a mapping a
    full disk could fault on."""
    import errno

    from tracking.integrations.sql import _intents

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_intents.os, "posix_fallocate", full)
    log = _intents.IntentLog(tmp_path)
    log.record("open-1", _intent_line("open-1"))
    log.record("done-1", _intent_line("done-1"))
    log.complete("done-1")
    log.record("open-2", _intent_line("open-2"))
    assert b"\x00" not in log.path.read_bytes()
    assert _open_ids(log.path) == ["open-1", "open-2"]
    log.close()
    assert _open_ids(log.path) == ["open-1", "open-2"]


@pytest.mark.parametrize("reserved", [True, False])
def test_a_full_intents_file_is_rewritten_with_only_the_open_intents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reserved: bool
) -> None:
    from tracking.integrations.sql import _intents

    if not reserved:
        monkeypatch.setattr(_intents.os, "posix_fallocate", _no_fallocate)
    monkeypatch.setattr(_intents, "ROTATE_BYTES", 16 * 1024)
    log = _intents.IntentLog(tmp_path)
    line = _intent_line("x")
    for n in range(200):  # about 15 times the file's size
        log.record(f"call-{n}", line.replace('"x"', f'"call-{n}"', 1))
        if n % 50:
            log.complete(f"call-{n}")
    open_now = [f"call-{n}" for n in range(0, 200, 50)]
    assert log.path.stat().st_size <= 16 * 1024
    assert _open_ids(log.path) == open_now  # every done mark written when it was done
    assert not list(tmp_path.glob("*.new"))
    log.close()
    assert _open_ids(log.path) == open_now


def _no_fallocate(fd: int, offset: int, length: int) -> None:
    raise OSError(95, "Operation not supported")


def test_rows_recovered_from_a_dead_processes_intents_count_as_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ledger.replayed_rows`` left out the rows recovered from a dead process's intents,
    which ``ledger_stats()`` and the replay hooks counted."""
    from tracking.integrations.sql import SqlLedger
    from tracking.integrations.sql._engine import outbox_target, resolve_url
    from tracking.integrations.sql._intents import IntentLog
    from tracking.integrations.sql._outbox import default_outbox_dir

    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    directory = default_outbox_dir(outbox_target(resolve_url(url)))
    directory.mkdir(parents=True)
    dead = IntentLog(directory)
    dead.record("open-1", _intent_line("open-1"))
    dead.close()  # its process is gone: the intent stays open for the next start
    ledger = SqlLedger(url, mode="durable", intents=True, auto_migrate=True)
    try:
        deadline = time.monotonic() + 60
        while ledger.ledger_stats().replayed_rows < 1:
            assert time.monotonic() < deadline, "the dead process's intent was not shipped"
            time.sleep(0.05)
        assert ledger.replayed_rows == ledger.ledger_stats().replayed_rows == 1
    finally:
        ledger.shutdown(10)


def _killed_mid_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faults: list[str], hits: int, **call: Any
) -> Any:
    """The row recovered for one call that retries, made in a forked child with a durable
    ledger and killed (kill -9) once the fake has seen ``hits`` requests (its last attempt
    waits there); a streamed call's events are read."""
    import os
    import signal

    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with FakeOpenAI(api_keys=[API_KEY], faults=faults) as fake:
        pid = os.fork()
        if pid == 0:  # the child: the call, killed by the parent
            try:
                import tracking
                from tracking import flow

                flow._INITIAL_BACKOFF = 0.001
                tracking.callbacks = [SqlLedger(url, mode="durable", intents=True)]
                answer = tracking.image_edit(
                    image=PNG, prompt="a red hat", model="gpt-image-2", quality="low",
                    api_base=fake.url, api_key=API_KEY, **call,
                )  # fmt: skip
                for _ in answer if call.get("stream") else ():
                    pass
            finally:
                os._exit(1)  # never reached while the last attempt waits
        deadline = time.monotonic() + 60
        while fake.hits < hits:  # the last attempt is in flight
            assert time.monotonic() < deadline, "the child never made its last attempt"
            time.sleep(0.02)
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    ledger = SqlLedger(url, mode="durable", intents=True)
    try:
        deadline = time.monotonic() + 60
        while ledger.ledger_stats().replayed_rows < 1:
            assert time.monotonic() < deadline, "the dead process's intent was not shipped"
            time.sleep(0.05)
        with ledger.engine.connect() as conn:
            return conn.execute(
                sa.select(
                    spend_logs.c.status, spend_logs.c.attempts, spend_logs.c.cost_usd,
                    spend_logs.c.cost_source, spend_logs.c.price_ref,
                )
            ).one()  # fmt: skip
    finally:
        ledger.shutdown(10)


def test_a_process_killed_mid_retry_leaves_a_row_counting_the_attempts_it_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two attempts sent whole whose answers were lost (maybe billed), then a kill -9 during the
    third: the recovered row estimates all three, not only the one in flight."""
    from tracking.pricing.estimate import estimate_call_cost

    faults = ["drop;times=2", "latency=60"]
    row = _killed_mid_retry(tmp_path, monkeypatch, faults, 3, max_retries=2)
    each = estimate_call_cost("gpt-image-2", None, "low", prompt_chars=9, input_images=1)
    assert each.usd is not None
    assert (row.status, row.attempts, row.cost_source) == ("incomplete", 3, "estimate")
    assert Decimal(str(row.cost_usd)) == 3 * each.usd
    assert row.price_ref == f"estimate:outcome-unknown:{each.price_ref}"


def test_a_process_killed_mid_retry_counts_a_stream_that_broke_before_its_first_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed attempt answered 2xx that broke off before its first event is retried and
    billed as an incomplete stream; a kill -9 during the retry left a row estimating only the
    attempt in flight (the intent was told only of answers that never came)."""
    faults = ["break_after=0", "latency=60"]
    row = _killed_mid_retry(tmp_path, monkeypatch, faults, 2, max_retries=1, stream=True)
    assert (row.status, row.attempts, row.cost_source) == ("incomplete", 2, "estimate")


def test_a_running_ledger_recovers_the_intents_of_a_peer_killed_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two proxies on one outbox folder: when one is killed with calls in flight, the other,
    still running, leaves their ``incomplete`` rows; it took a process starting on the folder."""
    from tracking.integrations.sql import _shipper
    from tracking.integrations.sql._engine import outbox_target, resolve_url
    from tracking.integrations.sql._outbox import default_outbox_dir

    monkeypatch.setattr(_shipper, "RESCAN_SECONDS", 0.2)
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    directory = default_outbox_dir(outbox_target(resolve_url(url)))
    ledger = SqlLedger(url, mode="durable", intents=True, auto_migrate=True)
    try:
        _killed_with_intents_open(directory, "peer")
        deadline = time.monotonic() + 60
        while ledger.ledger_stats().replayed_rows < 2:
            assert time.monotonic() < deadline, "the killed peer's intents were not recovered"
            time.sleep(0.05)
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(spend_logs.c.request_id, spend_logs.c.status, spend_logs.c.cost_usd)
                ).all()
        finally:
            engine.dispose()
        assert sorted(r.request_id for r in rows) == ["peer-open", "peer-open-2"]
        assert all(r.status == "incomplete" and r.cost_usd > 0 for r in rows)
        assert not list(directory.glob("intents-*.log"))[1:]  # only this ledger's own log
    finally:
        ledger.shutdown(10)


def test_a_damaged_log_of_a_dead_process_stops_no_ledger_and_keeps_its_good_intents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line nested past the recursion limit or holding an ``n`` of 1e400 raised out of the
    recovery: no ledger on the folder could open (nor the proxy start), and the log's good
    intents were never recovered."""
    import json

    from tracking.integrations.sql._engine import outbox_target, resolve_url
    from tracking.integrations.sql._intents import IntentLog
    from tracking.integrations.sql._outbox import default_outbox_dir

    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    directory = default_outbox_dir(outbox_target(resolve_url(url)))
    directory.mkdir(parents=True)
    huge_n = json.loads(_intent_line("huge-n"))
    huge_n[13] = 1e400  # n, read back as infinity
    dead = IntentLog(directory)
    dead.record("deep", "[1," + "[" * 100_000)
    dead.record("deep-row", '{"request_id": ' + "[" * 100_000)
    dead.record("huge-n", json.dumps(huge_n))
    dead.record("good", _intent_line("good"))
    dead.close()  # its process is gone: the intents stay open for the next start
    ledger = SqlLedger(url, mode="durable", intents=True, auto_migrate=True)
    try:
        assert ledger.flush(20)
    finally:
        ledger.shutdown(10)
    rows = _rows(url)
    assert [(status, source) for _, status, source, _ in rows] == [("incomplete", "estimate")]
    assert not list(directory.glob("intents-*.log"))


def test_an_intent_a_full_disk_cut_short_leaves_the_next_one_readable(tmp_path: Path) -> None:
    """Written with write() (no blocks reserved), an intent a full disk took only part of stayed
    in the file, and the next intent's line, joined to it, could not be read back: that call,
    killed in flight, left no row. A file size limit is the full disk here, in a child."""
    import resource
    import signal

    from tracking.integrations.sql._intents import IntentLog

    from .conftest import in_forked_child

    line = _intent_line("call-0")

    def child() -> str:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(line) * 5 // 2, resource.RLIM_INFINITY))
        log = IntentLog(tmp_path)  # no room for the reserved blocks: written with write()
        failed = []
        for n in range(4):
            try:
                log.record(f"call-{n}", _intent_line(f"call-{n}"))
            except OSError:
                failed.append(n)
            if n == 2:
                resource.setrlimit(resource.RLIMIT_FSIZE, unlimited)  # room again
        return f"{failed} {log._file.map is None}"  # left without a clean stop, as killed

    assert in_forked_child(child) == "[2] True"
    (path,) = tmp_path.glob("intents-*.log")
    assert _open_ids(path) == ["call-0", "call-1", "call-3"]


def test_a_call_cancelled_while_its_row_is_written_leaves_no_intent_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task cancelled while the durable ledger awaited its row's acknowledgement (a client
    gone) left the call's intent open for the process's life: in memory, in every rewrite of
    the log, and recovered as an ``incomplete`` row at the next start."""
    import asyncio
    import sqlite3

    import tracking
    from tracking.integrations.sql._engine import outbox_target, resolve_url
    from tracking.integrations.sql._outbox import default_outbox_dir

    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = SqlLedger(url, mode="durable", intents=True, auto_migrate=True)
    monkeypatch.setattr(tracking, "success_callback", [ledger])
    monkeypatch.setattr(tracking, "failure_callback", [ledger])
    (log_path,) = default_outbox_dir(outbox_target(resolve_url(url))).glob("intents-*.log")
    holder = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        with FakeOpenAI(api_keys=[API_KEY]) as upstream:

            async def cancelled_while_written() -> None:
                holder.execute("BEGIN IMMEDIATE")  # the row waits for the file's write lock
                call = asyncio.ensure_future(
                    tracking.aimage_edit(
                        model="gpt-image-1",
                        image=PNG,
                        prompt="a hat",
                        user="gone",
                        api_base=upstream.url,
                        api_key=API_KEY,
                    )
                )
                deadline = time.monotonic() + 60
                while ledger.queue_depth() < 1:  # answered; its row handed over, not written
                    assert time.monotonic() < deadline and not call.done()
                    await asyncio.sleep(0.01)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call

            asyncio.run(cancelled_while_written())
        holder.execute("ROLLBACK")
        assert ledger.flush(20)
        assert [(user, status) for user, status, *_ in _rows(url)] == [("gone", "success")]
        assert _open_ids(log_path) == []
    finally:
        holder.close()
        ledger.shutdown(10)
    assert not log_path.exists()  # no intent left open for the next start to recover
