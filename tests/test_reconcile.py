"""``tracking reconcile`` against the fake upstream's Usage and Costs admin endpoints: agreement,
planted price drift with the implied prices, calls made around the tracker, pagination, a refused
admin key."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import tracking
from tests.conftest import make_png
from tests.proxy_support import ProxyProcess, one_deployment_config, write_config
from tracking.cli import main
from tracking.integrations.sql import SqlLedger
from tracking.pricing import reset_prices
from tracking.testing import FakeOpenAI

KEY = "sk-reconcile-0123456789abcdef"
ADMIN = "sk-admin-reconcile-0123456789"
UNPRICED = "acme-image-edit-1"  #: a model the fake serves and bills, and no price entry covers


def today() -> date:
    """Today in UTC, read when asked: a run that crosses midnight must not compare yesterday."""
    return datetime.now(UTC).date()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[KEY], extra_models=[UNPRICED]) as server:
        yield server


@pytest.fixture
def ledger(fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh ledger file and a fresh bill: SDK calls are recorded durably into it."""
    fake.billing.served.clear()
    fake.billing.factor.clear()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    sink = SqlLedger(url, auto_migrate=True)
    monkeypatch.setattr(tracking, "success_callback", [sink])
    monkeypatch.setattr(tracking, "failure_callback", [sink])
    yield url
    sink.shutdown(10)


def edit(fake: FakeOpenAI, *, quality: str = "low", n: int = 1, model: str = "gpt-image-1") -> None:
    tracking.image_edit(
        image=make_png(),
        prompt="a hat",
        model=model,
        quality=quality,
        n=n,
        size="1024x1024",
        api_base=fake.url,
        api_key=KEY,
    )
    assert tracking.flush(10)  # the ledger's row is written before the bill is compared


def run(
    capsys: pytest.CaptureFixture[str], ledger: str, fake: FakeOpenAI, *args: str, days: int = 1
):
    code = main(
        [
            "reconcile",
            "--since",
            (today() - timedelta(days=days)).isoformat(),
            "--database-url",
            ledger,
            "--api-base",
            fake.url,
            "--admin-key",
            ADMIN,
            *args,
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_calls_through_the_sdk_and_the_proxy_agree_with_the_bill(capsys, fake, ledger, tmp_path):
    edit(fake, quality="low")
    edit(fake, quality="high", n=2)
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(fake.url, api_key=KEY, general_settings={"database_url": ledger}),
    )
    with ProxyProcess(config) as proxy:
        answer = httpx.post(
            f"{proxy.url}/v1/images/edits",
            data={"model": "gpt-image-1", "prompt": "through the proxy", "quality": "medium"},
            files={"image": ("a.png", make_png(), "image/png")},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
    code, out, _ = run(capsys, ledger, fake, "--format", "json")
    assert code == 0, out
    (row,) = json.loads(out)
    assert row["model"] == "gpt-image-1"
    assert (row["our_images"], row["their_images"]) == (4, 4)
    assert Decimal(row["our_cost_usd"]) == Decimal(row["their_cost_usd"]) > 0
    assert Decimal(row["diff_usd"]) == 0 and not row["drift"] and row["note"] == "agrees"


def test_a_planted_price_change_is_drift_with_the_implied_prices(capsys, fake, ledger):
    edit(fake)
    edit(fake, quality="medium")
    fake.billing.factor["gpt-image-1"] = Decimal("1.25")
    code, out, _ = run(capsys, ledger, fake)
    assert code == 1
    assert "DRIFT gpt-image-1: same images, billed 1.2500x our prices" in out
    implied = json.loads(out[out.index("{") :])
    (entry,) = implied["entries"]
    assert entry["model"] == "gpt-image-1"
    assert entry["tokens_per_million"]["output_image"]["usd"] == "50.0000"  # 40 x 1.25
    assert entry["tokens_per_million"]["input_text"]["usd"] == "6.2500"
    code, out, _ = run(capsys, ledger, fake, "--format", "json")
    (row,) = json.loads(out)
    assert Decimal(row["diff_pct"]) == Decimal("-20.00")  # ours is 20% below the bill


def test_generations_are_counted_on_both_sides(capsys, fake, ledger):
    # The provider's usage was asked for image.edit only, while the ledger holds generations
    # too: every generation read as "the ledger counted 1 more image".
    edit(fake)
    tracking.image_generation(
        prompt="a hat", model="gpt-image-1", quality="low", size="1024x1024",
        api_base=fake.url, api_key=KEY,
    )  # fmt: skip
    assert tracking.flush(10)
    code, out, _ = run(capsys, ledger, fake, "--format", "json")
    (row,) = json.loads(out)
    assert (row["our_images"], row["their_images"]) == (2, 2) and row["note"] == "agrees", row
    assert code == 0


def test_a_stream_is_one_image_on_both_sides_and_one_of_two_images_is_never_sent(
    capsys, fake, ledger
):
    """A stream is one image (OpenAI refuses ``stream`` with ``n`` above 1): a call asking for
    two is refused before sending, so neither side has it; the fake bills a stream's one image,
    which is what the SDK records."""
    params = {
        "prompt": "a hat", "model": "gpt-image-1", "quality": "low", "size": "1024x1024",
        "stream": True, "partial_images": 1, "api_base": fake.url, "api_key": KEY,
    }  # fmt: skip
    with pytest.raises(tracking.ValidationError):
        tracking.image_generation(n=2, **params)
    stream = tracking.image_generation(**params)
    kinds = [event.type for event in stream]
    assert kinds == ["image_generation.partial_image", "image_generation.completed"]
    assert tracking.flush(10)
    code, out, _ = run(capsys, ledger, fake, "--format", "json")
    (row,) = json.loads(out)
    assert (row["our_images"], row["their_images"]) == (1, 1) and row["note"] == "agrees", row
    assert code == 0


def test_a_failed_calls_estimate_is_never_read_as_a_price_change(capsys, fake, ledger):
    # A dropped answer is estimated (maybe billed); the provider did not bill it. It was read
    # as "same images, billed 0.15x our prices" with implied prices 85% lower.
    edit(fake)
    fake.inject("drop", times=3)  # the call and its two retries: each estimated
    with pytest.raises(tracking.APIConnectionError):
        edit(fake)
    assert tracking.flush(10)
    code, out, _ = run(capsys, ledger, fake, "--format", "json")
    (row,) = json.loads(out)
    assert (row["our_images"], row["their_images"]) == (1, 1)
    assert row["drift"] and code == 1  # ours is more than the bill: still reported
    assert row["implied_prices"] is None
    assert "estimate of failed calls whose outcome was never learnt" in row["note"]


def test_a_successful_calls_estimate_is_never_read_as_a_price_change(capsys, fake, ledger):
    # The first attempt's answer is lost (estimated), the retry served and was billed alone:
    # the row's cost is its price plus the estimate. It was read as "billed 0.38x our prices"
    # with implied prices that would have cut every later call's price.
    fake.inject("drop", times=1)
    edit(fake)
    code, out, _ = run(capsys, ledger, fake, "--format", "json")
    (row,) = json.loads(out)
    assert (row["our_images"], row["their_images"]) == (1, 1)
    assert Decimal(row["our_cost_usd"]) > Decimal(row["their_cost_usd"]) > 0
    assert row["drift"] and code == 1
    assert row["implied_prices"] is None
    assert "1 successful call(s) of ours include estimates" in row["note"]


def test_calls_made_around_the_tracker_are_reported_missing_from_the_ledger(capsys, fake, ledger):
    edit(fake)
    around = httpx.post(
        f"{fake.url}/images/edits",
        data={"model": "gpt-image-1", "prompt": "not tracked", "quality": "low"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert around.status_code == 200
    code, out, _ = run(capsys, ledger, fake)
    assert code == 1
    assert "the provider counted 1 more image(s): calls made outside the tracker" in out


def test_the_bill_is_read_across_pages_and_by_day(capsys, fake, ledger):
    before = today()
    edit(fake)
    after = today()
    # 45 days of daily buckets: two pages of at most 31; today's bucket is on the second.
    code, out, _ = run(capsys, ledger, fake, "--by", "day", "--format", "json", days=45)
    assert code == 0, out
    (row,) = json.loads(out)
    assert row["day"] in {before.isoformat(), after.isoformat()} and row["their_images"] == 1


def test_by_day_counts_the_bill_of_a_model_priced_outside_the_families(capsys, fake, ledger):
    """A model the user priced (no family of ours knows it) is counted by day as by model: its
    line items were left out by day, a false drift of its whole cost."""
    prices = {"input_text": "5", "input_image": "8", "output_image": "30"}  # the fake's bill
    tracking.register_prices(UNPRICED, tokens_per_million=prices)
    try:
        edit(fake, model=UNPRICED)
        for by in ("model", "day"):
            code, out, _ = run(capsys, ledger, fake, "--by", by, "--format", "json")
            (row,) = json.loads(out)
            assert code == 0 and row["note"] == "agrees", (by, row)
            assert Decimal(row["their_cost_usd"]) == Decimal(row["our_cost_usd"]) > 0
    finally:
        reset_prices()


def test_threshold_zero_drifts_on_any_difference_the_rounded_percent_hides(capsys, fake, ledger):
    edit(fake)
    fake.billing.factor["gpt-image-1"] = Decimal("1.00004")  # -0.004%: "-0.00" when rounded
    code, out, _ = run(capsys, ledger, fake, "--threshold", "0", "--format", "json")
    (row,) = json.loads(out)
    assert row["diff_pct"] == "-0.00" and row["drift"] and code == 1, row
    assert run(capsys, ledger, fake, "--format", "json")[0] == 0  # within the default 2%


def test_implied_prices_come_from_the_entry_that_priced_the_window(capsys, fake, ledger):
    """Run after a price change for a window before it: the implied prices are the window's
    prices times the ratio, from the window's first day on (null would reprice all history)."""
    tomorrow = (today() + timedelta(days=1)).isoformat()
    dearer = {"input_text": "9", "input_image": "9", "output_image": "90"}
    tracking.register_prices(
        "gpt-image-1",
        tokens_per_million={"input_text": "5", "input_image": "10", "output_image": "40"},
        effective_to=today().isoformat(),
    )
    tracking.register_prices(
        "openai/gpt-image-1", tokens_per_million=dearer, effective_from=tomorrow
    )
    try:
        edit(fake)
        fake.billing.factor["gpt-image-1"] = Decimal("1.1")
        code, out, _ = run(capsys, ledger, fake, "--by", "model", "--format", "json")
    finally:
        reset_prices()
    (row,) = json.loads(out)
    assert code == 1 and row["drift"], row
    (entry,) = row["implied_prices"]["entries"]
    assert entry["tokens_per_million"]["output_image"]["usd"] == "44.0000"  # 40 x 1.1
    assert entry["effective_from"] == (today() - timedelta(days=1)).isoformat()


def test_a_provider_name_with_control_characters_cannot_forge_a_table_line(capsys, fake, ledger):
    def answer(path: str) -> bytes:
        start = int(datetime.combine(today(), datetime.min.time(), UTC).timestamp())
        result = {"model": "gpt-image-1\nDRIFT forged\x1b[2K", "images": 1}
        body = {"data": [{"start_time": start, "results": [result] if "/usage/" in path else []}]}
        return json.dumps(body).encode()

    _reconcile_against(_answering(answer), ledger, "--by", "model")
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert not any(line.startswith("DRIFT forged") for line in out.split("\n"))
    assert "'gpt-image-1\\nDRIFT forged\\x1b[2K'" in out


def test_a_base_url_that_is_no_url_is_one_line_and_exit_2(capsys, ledger):
    window = ["--since", today().isoformat(), "--database-url", ledger, "--admin-key", ADMIN]
    assert main(["reconcile", *window, "--api-base", "http://[::1"]) == 2
    err = capsys.readouterr().err
    assert err == "tracking reconcile: error: the admin API's base URL (--api-base) is not a URL\n"


def test_calls_the_ledger_could_not_price_are_named_never_read_as_a_price(capsys, fake, ledger):
    """An unpriced call has no cost in the ledger, so our side is short by its price: the row
    says so and drifts, and no implied price is read from a sum that leaves it out."""
    edit(fake)
    edit(fake, model=UNPRICED)
    code, out, _ = run(capsys, ledger, fake, "--by", "model", "--format", "json")
    assert code == 1, out
    rows = {row["model"]: row for row in json.loads(out)}
    assert rows["gpt-image-1"]["note"] == "agrees"
    unpriced = rows[UNPRICED]
    assert unpriced["our_images"] == unpriced["their_images"] == 1 and unpriced["drift"]
    assert unpriced["note"].startswith("1 call(s) of ours have no price"), unpriced["note"]
    assert unpriced.get("implied_prices") is None


def test_a_bad_admin_key_is_one_clear_line_and_exit_2(capsys, fake, ledger):
    code = main(
        [
            "reconcile",
            "--since",
            today().isoformat(),
            "--database-url",
            ledger,
            "--api-base",
            fake.url,
            "--admin-key",
            "sk-not-an-admin-key",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "refused the admin key (HTTP 401)" in err


def test_by_project_lists_the_providers_side_only(capsys, fake, ledger):
    edit(fake)
    code, out, _ = run(capsys, ledger, fake, "--by", "project", "--format", "json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["project"] == "proj_fake" and row["their_images"] == 1
    assert row["our_images"] is None and "does not know OpenAI projects" in row["note"]


def test_a_missing_or_stray_ledger_and_bad_windows_are_one_line_errors(capsys, fake, tmp_path):
    base = ["reconcile", "--api-base", fake.url, "--admin-key", ADMIN]
    missing = tmp_path / "missing.db"
    code = main([*base, "--since", today().isoformat(), "--database-url", f"sqlite:///{missing}"])
    err = capsys.readouterr().err
    assert code == 2 and "no ledger at" in err and "Traceback" not in err
    assert not missing.exists()  # reconciling never creates a ledger

    stray = tmp_path / "stray.db"
    stray.write_bytes(b"\x00garbage" * 512)
    code = main([*base, "--since", today().isoformat(), "--database-url", f"sqlite:///{stray}"])
    err = capsys.readouterr().err
    assert code == 2 and "file is not a database" in err and "Traceback" not in err

    code = main([*base, "--since", "2026-05-09", "--until", "2026-05-01"])
    err = capsys.readouterr().err
    assert code == 2 and "is after --until" in err  # never 1 (drift)

    requests = len(fake.requests)
    for since, until, said in (
        ("0001-01-01", "2026-05-01", "more than 367 days"),
        ("2025-01-01", "2026-01-03", "more than 367 days"),
        ("1969-12-01", "1970-01-02", "before 1970-01-01"),
    ):
        code = main([*base, "--since", since, "--until", until])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, err
    assert len(fake.requests) == requests  # refused before asking the provider anything
    code = main([*base, "--since", "2025-01-01", "--until", "2026-01-02", "--database-url", "x"])
    assert "more than" not in capsys.readouterr().err  # a leap year and a day is a window

    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--since", "2026-05-01", "--until", "9999-12-31"])
    assert exit_info.value.code == 2
    assert "out of range" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:  # Decimal reads "1_0" as 10
        main([*base, "--since", "2026-05-01", "--threshold", "1_0"])
    assert exit_info.value.code == 2
    assert "'1_0' is not a number" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:  # it overflowed the comparison's arithmetic
        main([*base, "--since", "2026-05-01", "--threshold", "9e999999"])
    assert exit_info.value.code == 2
    assert "a percentage from 0 to 1,000,000" in capsys.readouterr().err


_HOSTILE_COSTS = {
    "nan": b'{"data": [{"start_time": 1767225600, "results": '
    b'[{"line_item": "gpt-image-1, input", "amount": {"value": NaN}}]}]}',
    "infinity": b'{"data": [{"start_time": 1767225600, "results": '
    b'[{"line_item": "gpt-image-1, input", "amount": {"value": "Infinity"}}]}]}',
    "text": b'{"data": [{"start_time": 1767225600, "results": '
    b'[{"line_item": "gpt-image-1, input", "amount": {"value": "twelve"}}]}]}',
    "huge": b'{"data": [{"start_time": 1767225600, "results": '
    b'[{"line_item": "gpt-image-1, input", "amount": {"value": 1e999999999}}]}]}',
    "a list": b"[1, 2]",
    "a bucket that is a number": b'{"data": [1]}',
    "a start that is text": b'{"data": [{"start_time": "monday", "results": '
    b'[{"line_item": "gpt-image-1, input", "amount": {"value": 1}}]}]}',
    "tiny": b'{"data": [{"start_time": 1767225600, "results": [{"line_item": "gpt-image-1, '
    b'input", "amount": {"value": "0.000000000000000000000000001"}}]}]}',
    "underscores": b'{"data": [{"start_time": 1767225600, "results": '
    b'[{"line_item": "gpt-image-1, input", "amount": {"value": "1_0"}}]}]}',
    "euros": b'{"data": [{"start_time": 1767225600, "results": '
    b'[{"line_item": "gpt-image-1, input", "amount": {"value": 1, "currency": "eur"}}]}]}',
    "nested": b"[" * 100_000 + b"]" * 100_000,
    # a 200 whose body is no page: never read as a bill of $0
    "no data": b"{}",
    "an error object": b'{"error": {"message": "internal error", "type": "server_error"}}',
    "data null": b'{"object": "page", "data": null}',
    "an amount without a value": b'{"data": [{"start_time": 1767225600, "results": '
    b'[{"line_item": "gpt-image-1, input", "amount": {"currency": "usd"}}]}]}',
    "a line item that is a list": b'{"data": [{"start_time": 1767225600, "results": '
    b'[{"line_item": ["gpt-image-1"], "amount": {"value": 1}}]}]}',
    "a model that is an object": b'{"data": []}',
}


def _reconcile_against(provider: type[BaseHTTPRequestHandler], ledger: str, *extra: str) -> int:
    """``tracking reconcile`` of today against an admin API that ``provider`` answers."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        window = ["--since", today().isoformat(), "--database-url", ledger]
        return main(["reconcile", *window, "--api-base", api_base, "--admin-key", ADMIN, *extra])
    finally:
        server.shutdown()
        server.server_close()


def _answering(answer: Callable[[str], bytes]) -> type[BaseHTTPRequestHandler]:
    """An admin API answering each GET with ``answer(path)``, status 200."""

    class Provider(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            raw = answer(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    return Provider


@pytest.mark.parametrize("case", sorted(_HOSTILE_COSTS))
def test_a_malformed_bill_is_one_clear_line_and_exit_2_never_drift(capsys, fake, ledger, case):
    def answer(path: str) -> bytes:
        if "/usage/" in path:
            raw = b'{"data": [{"start_time": 1767225600, "results": [{"images": "many"}]}]}'
            if case == "a model that is an object":
                raw = b'{"data": [{"start_time": 1767225600, "results": [{"model": {"id": 1}}]}]}'
            raw = raw.replace(b"1767225600", str(start).encode())
            return raw if case in ("text", "a model that is an object") else b'{"data": []}'
        return hostile

    start = int(datetime.combine(today(), datetime.min.time(), UTC).timestamp())
    hostile = _HOSTILE_COSTS[case].replace(b"1767225600", str(start).encode())  # in the window
    by = "day" if case == "a start that is text" else "model"
    if case == "tiny":  # a group on both sides: the comparison's arithmetic is reached
        edit(fake)
    code = _reconcile_against(_answering(answer), ledger, "--by", by)
    err = capsys.readouterr().err
    assert code == 2, err  # never 1: a scheduled job reads that as drift
    assert err.startswith("tracking reconcile: error: ") and err.count("\n") == 1


def test_an_endless_answer_is_refused_without_reading_it_whole(capsys, ledger):
    """A broken admin API streaming without end: one line, exit 2, memory bounded."""
    sent = []

    class Provider(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))  # a terabyte promised
            self.end_headers()
            block = b" " * (1 << 20)
            try:
                for _ in range(1024):  # at most 1 GiB, unless the client hangs up first
                    self.wfile.write(block)
                    sent.append(len(block))
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    code = _reconcile_against(Provider, ledger)
    err = capsys.readouterr().err
    assert code == 2 and "the answer is larger than" in err, err
    assert sum(sent) < 256 * (1 << 20)  # the client hung up long before the end


def test_a_negative_bill_reads_no_price(capsys, fake, ledger):
    """Credits or refunds can make a window's cost negative: no price is read from it (the
    implied prices were negative, a file ``tracking prices import`` itself refuses)."""
    edit(fake)

    def answer(path: str) -> bytes:
        start = int(datetime.combine(today(), datetime.min.time(), UTC).timestamp())
        if "/usage/" in path:
            result = {"model": "gpt-image-1", "images": 1, "num_model_requests": 1}
        else:
            result = {"line_item": "gpt-image-1, image edits", "amount": {"value": "-5"}}
        return json.dumps({"data": [{"start_time": start, "results": [result]}]}).encode()

    code = _reconcile_against(_answering(answer), ledger, "--by", "model", "--format", "json")
    (row,) = json.loads(capsys.readouterr().out)
    assert code == 1 and row["drift"] and row["implied_prices"] is None
    assert "the provider's cost is -5" in row["note"]


def _day_start(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp())


def _paged_bill(pages: Callable[[int], list[tuple[int, str | None]]]) -> Callable[[str], bytes]:
    """An admin API whose answers are pages of one bucket each: ``pages(today's start)`` lists
    ``(bucket start, next_page)``; a page is chosen by the request's ``page`` cursor (the
    first page has none). Every bucket bills one image of gpt-image-1 at $1."""

    def answer(path: str) -> bytes:
        from urllib.parse import parse_qs, urlsplit

        cursor = parse_qs(urlsplit(path).query).get("page", ["0"])[0]
        start, following = pages(_day_start(today()))[int(cursor)]
        if "/usage/" in path:
            result: dict[str, object] = {"model": "gpt-image-1", "images": 1}
        else:
            result = {"line_item": "gpt-image-1, image edits", "amount": {"value": "1"}}
        bucket = {"start_time": start, "results": [result]}
        page = {"data": [bucket], "has_more": following is not None, "next_page": following}
        return json.dumps(page).encode()

    return answer


@pytest.mark.parametrize(
    ("case", "pages", "said"),
    [
        # the second page serves the first page's bucket again: summed twice, it read as drift
        ("a bucket twice", lambda t: [(t, "1"), (t, None)], "twice"),
        # a cursor leading back to a page already read: 1,000 requests summing one bill
        ("a cursor loop", lambda t: [(t - 86_400, "1"), (t, "1")], "repeats"),
        ("a bucket outside the window", lambda t: [(t + 86_400 * 3, None)], "outside the window"),
    ],
)
def test_a_bill_repeating_or_straying_from_its_window_is_exit_2_never_summed(
    capsys, ledger, case, pages, said
):
    code = _reconcile_against(
        _answering(_paged_bill(pages)), ledger, "--since", (today() - timedelta(days=1)).isoformat()
    )
    err = capsys.readouterr().err
    assert code == 2, err  # never 1 (drift) nor 0: the figures could not be read
    assert err.startswith("tracking reconcile: error: ") and said in err and err.count("\n") == 1


def test_a_bill_over_pages_with_distinct_days_is_summed_once(capsys, fake, ledger):
    edit(fake)
    yesterday = (today() - timedelta(days=1)).isoformat()
    pages = _paged_bill(lambda t: [(t - 86_400, "1"), (t, None)])
    code = _reconcile_against(_answering(pages), ledger, "--since", yesterday, "--by", "day",
                              "--format", "json")  # fmt: skip
    rows = {r["day"]: r for r in json.loads(capsys.readouterr().out)}
    assert [rows[k]["their_images"] for k in sorted(rows)] == [1, 1]
    assert [rows[k]["their_cost_usd"] for k in sorted(rows)] == ["1", "1"]
    assert code == 1  # our side has one call, billed far below $1: drift, read once


def _bill_of(
    usage: list[dict[str, object]], costs: list[dict[str, object]]
) -> Callable[[str], bytes]:
    """An admin API answering one bucket of today: ``usage`` and ``costs`` as its results."""

    def answer(path: str) -> bytes:
        results = usage if "/usage/" in path else costs
        return json.dumps(
            {"data": [{"start_time": _day_start(today()), "results": results}]}
        ).encode()

    return answer


_IMAGE = {"model": "gpt-image-1", "images": 1, "num_model_requests": 1}
_DOLLAR = {"line_item": "gpt-image-1, image edits", "amount": {"value": "1", "currency": "usd"}}


@pytest.mark.parametrize(
    ("case", "usage", "costs"),
    [
        # the same group twice in one bucket (a row served twice): summed, one bill counted double
        ("a usage row twice", [_IMAGE, _IMAGE], [_DOLLAR]),
        ("a cost row twice", [_IMAGE], [_DOLLAR, _DOLLAR]),
    ],
)
def test_a_result_repeated_within_a_bucket_is_exit_2_never_summed(
    capsys, ledger, case, usage, costs
):
    code = _reconcile_against(_answering(_bill_of(usage, costs)), ledger, "--by", "model")
    err = capsys.readouterr().err
    assert code == 2, err  # summed twice, it read as drift (exit 1) or hid a missing call
    assert err.startswith("tracking reconcile: error: ") and "twice" in err and err.count("\n") == 1


def test_distinct_line_items_and_groups_of_one_bucket_are_each_summed(capsys, fake, ledger):
    """Two line items of one model (input and output) and two models in one bucket are no
    repeats: each is summed once."""
    edit(fake)
    usage = [_IMAGE, {**_IMAGE, "model": "gpt-image-1-mini"}]
    output = {**_DOLLAR, "line_item": "gpt-image-1, image output"}
    mini = {**_DOLLAR, "line_item": "gpt-image-1-mini, image edits"}
    code = _reconcile_against(
        _answering(_bill_of(usage, [_DOLLAR, output, mini])), ledger, "--by", "model",
        "--format", "json",
    )  # fmt: skip
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["gpt-image-1"]["their_cost_usd"] == "2" and rows["gpt-image-1"]["their_images"] == 1
    assert rows["gpt-image-1-mini"]["their_cost_usd"] == "1"
    assert code == 1


def test_a_page_saying_more_follows_without_a_cursor_is_exit_2_never_half_a_bill(
    capsys, fake, ledger
):
    """``has_more`` with no ``next_page``: the rest of the bill cannot be read. It was taken as
    the whole bill (the missing pages read as the ledger's extra calls: drift, exit 1)."""
    edit(fake)

    def answer(path: str) -> bytes:
        result = _IMAGE if "/usage/" in path else _DOLLAR
        bucket = {"start_time": _day_start(today()), "results": [result]}
        return json.dumps({"data": [bucket], "has_more": True, "next_page": None}).encode()

    code = _reconcile_against(_answering(answer), ledger, "--by", "model")
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tracking reconcile: error: ") and "next_page" in err


def test_the_table_and_the_csv_name_each_figure_as_the_json_does(capsys, fake, ledger):
    """The table and the CSV said ``our images``, ``our cost``, ``diff USD``, ``diff %``... where
    the JSON says ``our_images``, ``our_cost_usd``, ``diff_usd``, ``diff_pct``; and the CSV wrote
    ``-`` for a figure a row has none of, which no script reads as a number."""
    edit(fake)
    figures = ["our_images", "their_images", "our_cost_usd", "their_cost_usd", "diff_usd",
               "diff_pct"]  # fmt: skip
    for by, missing in (("model", None), ("project", "")):
        outputs = {}
        for fmt in ("json", "csv", "table"):
            code, outputs[fmt], err = run(capsys, ledger, fake, "--by", by, "--format", fmt)
            assert code == 0, err
        (row,) = json.loads(outputs["json"])
        header, values = csv.reader(io.StringIO(outputs["csv"]))
        assert header == [by, *figures, "drift", "note"]
        assert outputs["table"].splitlines()[0].split() == [by, *figures]
        assert values[0] == row[by]
        for name, cell in zip(figures, values[1:], strict=False):
            assert cell == ("" if row[name] is None else str(row[name]))
        if missing is not None:  # by project, the ledger's side is no figure: empty in CSV
            assert values[1] == values[3] == missing and row["our_images"] is None


def test_the_json_and_the_csv_name_the_group_alike_and_hold_it_as_it_is(capsys, fake, ledger):
    """The JSON called each group ``key`` where the CSV (and the table) named its column after
    the grouping (``model``, ``day``, ``project``), as ``tracking spend``'s JSON does; and the
    CSV held a name with a line break or an escape sequence quoted for a terminal
    (``'gpt-image-1\\n...'``), not as the JSON has it."""
    edit(fake)
    for by in ("model", "day", "project"):
        outputs = {}
        for fmt in ("json", "csv"):
            code, outputs[fmt], err = run(capsys, ledger, fake, "--by", by, "--format", fmt)
            assert code == 0, err
        rows = json.loads(outputs["json"])
        header, *lines = csv.reader(io.StringIO(outputs["csv"]))
        assert header[0] == by and all("key" not in row for row in rows), by
        assert [line[0] for line in lines] == [row[by] for row in rows] != [], by
    odd = "gpt-image-1\nDRIFT forged\x1b[2K"

    def answer(path: str) -> bytes:
        start = int(datetime.combine(today(), datetime.min.time(), UTC).timestamp())
        result = {"model": odd, "images": 1}
        body = {"data": [{"start_time": start, "results": [result] if "/usage/" in path else []}]}
        return json.dumps(body).encode()

    for fmt in ("json", "csv"):
        _reconcile_against(_answering(answer), ledger, "--by", "model", "--format", fmt)
        outputs[fmt] = capsys.readouterr().out
    groups = [row["model"] for row in json.loads(outputs["json"])]
    assert odd in groups
    assert [line[0] for line in list(csv.reader(io.StringIO(outputs["csv"])))[1:]] == groups


def test_calls_to_another_openai_style_host_are_left_out_and_named(capsys, fake, ledger):
    # A reseller (or any OpenAI-compatible API) reached as provider "openai" with its own
    # api_base is not on OpenAI's bill: its calls were counted as the ledger's, a false drift.
    edit(fake, model="gpt-image-2")
    with FakeOpenAI(api_keys=[KEY]) as reseller:
        # another host name for the same loopback (the ledger's hosts are compared by name)
        api_base = reseller.url.replace("127.0.0.1", "localhost")
        for _ in range(2):
            tracking.image_edit(
                image=make_png(), prompt="a hat", model="gpt-image-2", quality="low",
                size="1024x1024", api_base=api_base, api_key=KEY,
            )  # fmt: skip
        assert tracking.flush(10)
        reseller_host = api_base.split("://", 1)[1].split("/", 1)[0]
    code, out, err = run(capsys, ledger, fake, "--format", "json")
    assert code == 0, (out, err)
    (row,) = json.loads(out)
    assert (row["model"], row["our_images"], row["their_images"]) == ("gpt-image-2", 1, 1)
    assert row["note"] == "agrees"
    assert (
        f"not counted: 2 OpenAI call(s) of the ledger sent to {reseller_host}, not the admin "
        f"API's host (--include-host {reseller_host} counts them)"
    ) in err
    # A gateway billed to the same organization is counted when named.
    code, out, err = run(
        capsys, ledger, fake, "--format", "json", "--include-host", reseller_host.upper()
    )
    assert code == 1 and "not counted" not in err
    (row,) = json.loads(out)
    assert (row["our_images"], row["their_images"]) == (3, 1)


def test_the_admin_apis_host_is_matched_by_name_on_any_port():
    from tracking.reconcile import billed_hosts

    assert billed_hosts("https://api.openai.com/v1") == {"api.openai.com"}
    assert billed_hosts("https://api.openai.com./v1", ["gw.example."]) == {
        "api.openai.com",
        "gw.example",
    }
    assert billed_hosts("https://API.openai.com:443/v1", ["gw.example:8443 ", " "]) == {
        "api.openai.com",
        "gw.example",
    }
    assert billed_hosts("http://[::1]:9000/v1", ["[fe80::1]"]) == {"[::1]", "[fe80::1]"}
