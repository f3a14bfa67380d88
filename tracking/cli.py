"""The ``tracking`` command: ``demo``, ``fake-openai``, ``migrate``, ``spend``, ``ledger``,
``prices``, ``models``, ``reconcile`` and the proxy's ``serve`` and ``quickstart``.

A mistake on the command line (an unknown option, a port out of range, a fault that cannot be
read, a busy port, a missing optional package, a name the output's encoding cannot write, an
output on a full disk) is one line on stderr, ``tracking COMMAND: error: ...``, and a non-zero
exit: never a traceback. A reader that leaves early (``| head``) ends the command with status
141, and an output closed at the start (``>&-``) takes what is written nowhere, as ``print``."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn, TextIO, cast

from .decimals import strict_decimal
from .errors import TrackingError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo

    return demo()


def _fake_openai(args: argparse.Namespace) -> int:
    from .listening import CannotListen, closing_all, listening_sockets
    from .testing.fake_openai import BACKLOG, run

    try:  # bound once, here: the server serves on these sockets, never binding again
        sockets = listening_sockets(args.host, args.port, backlog=BACKLOG)
    except CannotListen as exc:
        raise CommandError(str(exc)) from None
    with closing_all(sockets):
        run(
            sockets=sockets,
            canned=args.canned,
            api_keys=args.api_key or None,
            faults=args.fault or (),
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from tracking.integrations.sql import migrate_command

    return migrate_command(args.database_url, sys.stdout)


def _spend(args: argparse.Namespace) -> int:
    from tracking.integrations.sql import spend_command

    until = args.until
    if args.since is not None and until is not None and _after(args.since, until):
        raise CommandError(f"--since {args.since} is after --until {until}")
    if args.limit is not None and args.by is None:
        raise CommandError("--limit needs --by (it keeps the first groups)")
    if isinstance(until, date) and not isinstance(until, datetime):
        # a date-only --until includes that whole UTC day (the last day there is: no bound)
        until = until + timedelta(days=1) if until < date.max else None
    return spend_command(
        args.database_url,
        user=args.user,
        since=args.since,
        until=until,
        by=args.by,
        fmt=args.format,
        out=sys.stdout,
        operation=args.operation,
        limit=args.limit,
    )


def _quarantine(args: argparse.Namespace) -> int:
    from tracking.integrations.sql import quarantine_list_command, quarantine_replay_command

    if args.action == "list":
        return quarantine_list_command(
            args.database_url,
            fmt=args.format,
            out=sys.stdout,
            outbox_dir=args.outbox_dir,
            with_local=args.with_local,
        )
    return quarantine_replay_command(
        args.database_url, ids=args.id or None, repair=args.repair, out=sys.stdout
    )


def _add_ledger_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    ledger = commands.add_parser("ledger", help="look after the spend ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="WHAT")
    kept = ledger_commands.add_parser(
        "quarantine", help="rows the ledger's database refused: list them, or replay them"
    )
    actions = kept.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="show the quarantined rows and their errors")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.add_argument(
        "--outbox-dir",
        help="the folder of the ledger's local outboxes, when it was given one "
        "(SqlLedger(outbox_dir=...)); by default the folder the ledger chooses for the database",
    )
    listing.add_argument(
        "--with-local",
        action="store_true",
        help="with --format json: an object with the quarantine's rows and the rows kept "
        "locally because the quarantine refused them too (the table always shows both)",
    )
    _database_url_option(listing)
    listing.set_defaults(handler=_quarantine)
    replay = actions.add_parser("replay", help="insert quarantined rows into spend_logs again")
    replay.add_argument(
        "--id", type=int, action="append", help="only this quarantined row (repeatable)"
    )
    replay.add_argument(
        "--repair",
        action="store_true",
        help="first make refused values storable (control characters removed, long text cut, "
        "out-of-range integers emptied); money and times are kept",
    )
    _database_url_option(replay)
    replay.set_defaults(handler=_quarantine)


def _port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


#: ``serve --workers`` at most: each is a whole process (its interpreter, its ledger writer).
MAX_WORKERS = 256


def _count(text: str, what: str, high: int) -> int:
    """A whole number from 1 to ``high`` written in ASCII digits, else an argparse error."""
    if not (text.strip().isascii() and text.strip().isdigit()) or not 1 <= int(text) <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what} (1 to {high})")
    return int(text)


def _worker_count(text: str) -> int:
    """``--workers``: 1 to :data:`MAX_WORKERS` processes."""
    return _count(text, "worker processes", MAX_WORKERS)


def _group_count(text: str) -> int:
    """``--limit``: 1 to 1,000,000 groups."""
    return _count(text, "groups", 1_000_000)


def _fault(text: str) -> str:
    """A ``--fault`` spec, checked now so a typo is a usage error rather than a traceback."""
    from .testing.faults import parse_fault

    try:
        parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class CommandError(Exception):
    """A mistake the command reports in one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage mistakes reported in one line (and ``--help`` for the rest)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: ``reconcile``'s longest window, in days (a leap year and a day).
MAX_RECONCILE_DAYS = 367
_EPOCH_DAY = date(1970, 1, 1)


def _reconcile(args: argparse.Namespace) -> int:
    from .reconcile import other_hosts, reconcile, render
    from .terminal import shown

    until = args.until or datetime.now(UTC).date()
    fault = None
    if args.since > until:
        fault = f"--since {args.since} is after --until {until}"
    elif (until - args.since).days >= MAX_RECONCILE_DAYS:
        # every day is a page of each API: a window from year 1 asked some 118,000 pages
        fault = (
            f"--since {args.since} to --until {until} is more than {MAX_RECONCILE_DAYS} days; "
            "reconcile a year at a time"
        )
    elif args.since < _EPOCH_DAY:  # the APIs take Unix times, none before 1970
        fault = f"--since {args.since} is before 1970-01-01, where the providers' usage starts"
    if fault is not None:
        # exit 2, never 1: a scheduled job reads 1 as drift
        print(f"tracking reconcile: error: {fault}", file=sys.stderr)
        return 2
    try:
        rows = reconcile(
            database_url=args.database_url,
            since=args.since,
            until=until,
            by=args.by,
            threshold=args.threshold,
            api_base=args.api_base,
            admin_key=args.admin_key,
            include_hosts=args.include_host,
        )
        left_out = other_hosts(
            database_url=args.database_url,
            since=args.since,
            until=until,
            api_base=args.api_base,
            include_hosts=args.include_host,
        )
    except TrackingError as exc:  # the provider's figures or the ledger's could not be read
        print(f"tracking reconcile: error: {exc.message}", file=sys.stderr)
        return 2
    render(rows, by=args.by, fmt=args.format, out=sys.stdout)
    for host, calls in left_out:  # on standard error: the JSON and CSV stay one document
        print(
            f"tracking reconcile: not counted: {calls} OpenAI call(s) of the ledger sent to "
            f"{shown(host)}, not the admin API's host (--include-host {shown(host)} counts them)",
            file=sys.stderr,
        )
    return 1 if any(row.drift for row in rows) else 0


def _utc_day(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    if day == date.max:  # the window ends at the next day's midnight, which does not exist
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (the last day is 9999-12-30)")
    return day


#: The largest ``--threshold`` (percent): a bill a million percent off is drift whatever the aim.
_MAX_THRESHOLD = Decimal(1_000_000)


def _percent(text: str) -> Decimal:
    try:
        value = strict_decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    # bounded: a threshold of 9e999999 overflowed the comparison's arithmetic (a traceback)
    if not value.is_finite() or not 0 <= value <= _MAX_THRESHOLD:
        raise argparse.ArgumentTypeError(
            f"the threshold is a percentage from 0 to {_MAX_THRESHOLD:,}"
        )
    return value


def _date_or_time(text: str) -> date | datetime:
    """A date (``YYYY-MM-DD``, or ISO's ``YYYYMMDD``: a UTC day) or an ISO-8601 time (UTC
    unless it has an offset). A date is never read as its midnight: ``--until`` takes its whole
    day."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO-8601 time"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before the first UTC moment
        raise argparse.ArgumentTypeError(f"{text!r} is out of range in UTC") from None


def _after(since: date | datetime, until: date | datetime) -> bool:
    """Whether ``--since`` starts after the window ``--until`` ends: a date-only ``--until``
    ends at its day's end (``--since 2026-05-05T06:00 --until 2026-05-05`` is that day from 6
    o'clock; it was refused, compared with the day's midnight)."""
    start = _start(since)
    if isinstance(until, datetime):
        return start > until
    return until < date.max and start >= _start(until) + timedelta(days=1)


def _start(value: date | datetime) -> datetime:
    """Where a ``--since``/``--until`` value starts, as a UTC time (a date: its midnight)."""
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, datetime.min.time(), tzinfo=UTC)


def _text(text: str) -> str:
    """A value sent to the database: UTF-8 without NUL (argv bytes that are not UTF-8 reach
    Python as lone surrogates, which no driver can send)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        # never echoed: a database URL may hold a password
        raise argparse.ArgumentTypeError("not valid UTF-8 text") from None
    if "\x00" in text:
        raise argparse.ArgumentTypeError("contains a NUL character")
    return text


def _database_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        type=_text,
        metavar="URL",
        help="the ledger database (default: $TRACKING_DATABASE_URL, else sqlite:///./tracking.db)",
    )


# -- serve / quickstart: the proxy (tracking.proxy) ------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    _require("proxy", "uvicorn")
    from .proxy.server import serve

    if (args.config is None) == (args.model is None):
        raise CommandError("give --config FILE, or --model NAME for one model without a file")
    return serve(
        args.config,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        model=args.model,
    )


def _require(extra: str, *modules: str) -> None:
    from .extras import install_hint, missing_modules

    missing = missing_modules(*modules)
    if missing:
        raise CommandError(f"{', '.join(missing)} is not installed: {install_hint(extra)}")


def _quickstart(args: argparse.Namespace) -> int:
    _require("proxy", "uvicorn", "multipart", "sqlalchemy")
    from .proxy.quickstart import main as quickstart

    return quickstart(port=args.port, keep_running=args.keep_running)


def _add_proxy_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    serve = commands.add_parser("serve", help="run the proxy (OpenAI-compatible /v1/images/edits)")
    serve.add_argument("--config", help="LiteLLM-style config.yaml")
    serve.add_argument(
        "--model",
        help="serve this one model without a config file (e.g. gpt-image-2; the key from "
        "OPENAI_API_KEY, the upstream from OPENAI_BASE_URL or OpenAI)",
    )
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - LiteLLM's proxy default
    serve.add_argument("--port", type=_port, default=4000)
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="worker processes (default 1, at most 256); more than TRACKING_WORKER_RESTARTS (5) "
        "deaths within TRACKING_WORKER_RESTARTS_SECONDS (60) stop the proxy, status 1",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(handler=_serve)

    quick = commands.add_parser(
        "quickstart",
        help="try the proxy offline: its defaults, the bundled fake upstream, client examples",
    )
    quick.add_argument("--port", type=_port, default=0, help="proxy port (default: a free one)")
    quick.add_argument(
        "--keep-running", action="store_true", help="leave the proxy up after the examples"
    )
    quick.set_defaults(handler=_quickstart)


# -- prices / models: price data and model lifecycle (tracking.pricing.commands) ------------


def _prices(args: argparse.Namespace) -> int:
    from .pricing import commands

    if args.action == "list":
        return commands.prices_list(sys.stdout, prices_file=args.prices_file, as_json=args.json)
    if args.action == "import":
        return commands.prices_import(args.source, sys.stdout, target=args.out)
    return commands.prices_diff(sys.stdout, prices_file=args.prices_file)


def _models_check(args: argparse.Namespace) -> int:
    from .models_check import check_models

    try:
        return check_models(
            sys.stdout, config=args.config, api_base=args.api_base, api_key=args.api_key
        )
    except TrackingError as exc:  # exit 2, never 1: a deploy pipeline reads 1 as "retired"
        print(f"tracking models: error: {exc.message}", file=sys.stderr)
        return 2


def _add_price_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    prices = commands.add_parser("prices", help="list, import and compare model prices")
    actions = prices.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every priced model: status, prices, source")
    listing.add_argument("--prices-file", help="an override file (default: $TRACKING_PRICES_FILE)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    importing = actions.add_parser(
        "import", help="import prices (our format or LiteLLM's) into an override file"
    )
    importing.add_argument("source", metavar="FILE_OR_URL")
    importing.add_argument(
        "--out",
        help="the override file (default: $TRACKING_PRICES_FILE, else ./tracking-prices.json)",
    )
    diff = actions.add_parser("diff", help="what an override file changes in the packaged table")
    diff.add_argument("prices_file", nargs="?", help="default: $TRACKING_PRICES_FILE")
    prices.set_defaults(handler=_prices)

    models = commands.add_parser("models", help="model lifecycle from the upstream")
    model_actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = model_actions.add_parser(
        "check", help="which models of a config (or of the price table) are retired or retiring"
    )
    check.add_argument("--config", help="a proxy config.yaml (default: the price table's models)")
    check.add_argument(
        "--api-base", help="default: the config's, $OPENAI_BASE_URL, $OPENAI_API_BASE or OpenAI"
    )
    check.add_argument("--api-key", help="default: the config's or $OPENAI_API_KEY")
    check.set_defaults(handler=_models_check)


# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tracking", description="Observable, billable OpenAI-style image edits.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    demo = commands.add_parser(
        "demo", help="run the SDK examples offline against the fake upstream"
    )
    demo.set_defaults(handler=_demo)

    fake = commands.add_parser("fake-openai", help="serve the fake OpenAI upstream")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=_port, default=8090)
    fake.add_argument("--canned", action="store_true", help="pre-built answers, no image work")
    fake.add_argument(
        "--api-key", action="append", help="accept only this key (repeatable); default: any"
    )
    fake.add_argument(
        "--fault",
        action="append",
        type=_fault,
        help="inject a fault, e.g. 'status=503;retry_after=1;times=2' (repeatable; see "
        "tracking.testing.faults)",
    )
    fake.set_defaults(handler=_fake_openai)

    migrate = commands.add_parser("migrate", help="bring the spend ledger's schema up to date")
    _database_url_option(migrate)
    migrate.set_defaults(handler=_migrate)

    spend = commands.add_parser("spend", help="show spend from the ledger")
    spend.add_argument("--user", type=_text, help="only this end user")
    spend.add_argument("--since", type=_date_or_time, metavar="DATE", help="from (inclusive)")
    spend.add_argument(
        "--until", type=_date_or_time, metavar="DATE", help="to (a date includes that day)"
    )
    spend.add_argument(
        "--by", choices=("model", "day", "user", "operation"), help="group the spend"
    )
    spend.add_argument(
        "--operation",
        choices=("image_edit", "image_generation"),
        help="only edits or only generations",
    )
    spend.add_argument(
        "--limit",
        type=_group_count,
        metavar="N",
        help="with --by: only the N dearest groups (days: the latest N); the total covers all",
    )
    spend.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _database_url_option(spend)
    spend.set_defaults(handler=_spend)
    _add_ledger_commands(commands)

    reconcile = commands.add_parser(
        "reconcile", help="compare the ledger with OpenAI's Usage and Costs APIs (exit 1: drift)"
    )
    reconcile.add_argument("--since", type=_utc_day, required=True, metavar="DATE")
    reconcile.add_argument(
        "--until", type=_utc_day, metavar="DATE", help="last UTC day, inclusive (default: today)"
    )
    reconcile.add_argument("--by", choices=("day", "model", "project"), default="model")
    reconcile.add_argument(
        "--threshold",
        type=_percent,
        default=Decimal(2),
        metavar="PERCENT",
        help="a group whose cost differs by more than this drifts (default 2)",
    )
    reconcile.add_argument("--format", choices=("table", "json", "csv"), default="table")
    reconcile.add_argument("--admin-key", help="an organization admin key (or OPENAI_ADMIN_KEY)")
    reconcile.add_argument(
        "--api-base", help="the provider's API base (default: OPENAI_BASE_URL or OpenAI's)"
    )
    reconcile.add_argument(
        "--include-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="count the ledger's OpenAI calls sent to this host too (a gateway billed to the same "
        "organization); repeatable",
    )
    _database_url_option(reconcile)
    reconcile.set_defaults(handler=_reconcile)
    _add_proxy_commands(commands)
    _add_price_commands(commands)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


class _OutputFailed(Exception):
    """Standard output refused a write (a full disk, an I/O error)."""


class _Output:
    """Standard output, whose write errors are told apart from the command's own ``OSError``s
    (a reader that left, ``BrokenPipeError``, passes as it is)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        written: int = self._guarded(self._stream.write, text)
        return written

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    @staticmethod
    def _guarded(action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputFailed(exc.strerror or str(exc)) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _output_to_nowhere(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at /dev/null: what it still buffers goes nowhere at exit,
    with no second error."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


#: Commands whose exit status 1 means what they found (``reconcile``: drift; ``models check``:
#: a retired model): that they could not run at all is 2 for them, as a scheduled job or a
#: deploy pipeline must not read a missing package or a full disk as either.
_STATUS_1_IS_A_FINDING = frozenset({"reconcile", "models"})


def _failed(args: argparse.Namespace) -> int:
    """The exit status of a command that could not do its work."""
    return 2 if args.command in _STATUS_1_IS_A_FINDING else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sys.stdout is None:  # started with standard output closed (`>&-`): as print() does,
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - the output goes nowhere
    stdout = sys.stdout
    if args.command not in ("serve", "fake-openai"):  # servers keep the stream as it is
        sys.stdout = cast("TextIO", _Output(stdout))
    try:
        return _run(args)
    except _OutputFailed as exc:
        # `tracking spend --format csv > report.csv` on a full disk: one line, not a traceback
        _output_to_nowhere(stdout)
        print(
            f"tracking {args.command}: error: cannot write standard output: {exc}",
            file=sys.stderr,
        )
        return _failed(args)
    finally:
        sys.stdout = stdout


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # here, where a reader that left is caught, not at exit
    except BrokenPipeError:
        # the reader left early (`tracking prices list | head`): what it read was all it
        # wanted; the rest goes nowhere, without a traceback, and the status says so
        _output_to_nowhere(sys.stdout)
        return 141  # 128 + SIGPIPE, as a shell reports a program the pipe stopped
    except KeyboardInterrupt:
        return 130
    except UnicodeEncodeError as exc:
        import codecs

        encoding = sys.stdout.encoding or "utf-8"
        if codecs.lookup(exc.encoding).name != codecs.lookup(encoding).name:
            raise
        # a terminal or pipe in, say, ASCII or Latin-1, and a user or model name it cannot
        # show: one line, never a traceback (the output is never re-spelt: a CSV stays true)
        print(
            f"tracking {args.command}: error: standard output's encoding ({encoding}) cannot "
            f"write {exc.object[exc.start : exc.end]!a}; set PYTHONIOENCODING=utf-8",
            file=sys.stderr,
        )
        return _failed(args)
    except TrackingError as exc:
        print(f"tracking {args.command}: error: {exc.message}", file=sys.stderr)
        return _failed(args)
    except CommandError as exc:
        print(f"tracking {args.command}: error: {exc}", file=sys.stderr)
        return _failed(args)
    except ImportError as exc:
        from .extras import extra_for, install_hint

        extra = extra_for(exc.name)
        hint = f": {install_hint(extra)}" if extra else ""
        print(
            f"tracking {args.command}: error: {exc.name or exc} is not installed{hint}",
            file=sys.stderr,
        )
        return _failed(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
