"""The ``tracking`` command: ``demo``, ``fake-openai``, ``migrate``, ``spend`` and the rest."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from .errors import TrackingError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo

    return demo()


def _fake_openai(args: argparse.Namespace) -> int:
    from .testing.fake_openai import run

    run(
        args.host,
        args.port,
        canned=args.canned,
        api_keys=args.api_key or None,
        faults=args.fault or (),
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from integrations.sql._commands import migrate_command

    return migrate_command(args.database_url, sys.stdout)


def _spend(args: argparse.Namespace) -> int:
    from integrations.sql._commands import spend_command

    until = args.until
    if isinstance(until, date) and not isinstance(until, datetime):
        until = until + timedelta(days=1)  # a date-only --until includes that whole UTC day
    return spend_command(
        args.database_url,
        user=args.user,
        since=args.since,
        until=until,
        by=args.by,
        fmt=args.format,
        out=sys.stdout,
    )


def _reconcile(args: argparse.Namespace) -> int:
    from .reconcile import ReconcileError, reconcile, render

    until = args.until or datetime.now(UTC).date()
    try:
        rows = reconcile(
            database_url=args.database_url,
            since=args.since,
            until=until,
            by=args.by,
            threshold=args.threshold,
            api_base=args.api_base,
            admin_key=args.admin_key,
        )
    except ReconcileError as exc:
        print(f"tracking reconcile: error: {exc.message}", file=sys.stderr)
        return 2
    render(rows, by=args.by, fmt=args.format, out=sys.stdout)
    return 1 if any(row.drift for row in rows) else 0


def _utc_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _percent(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError("the threshold is a percentage of 0 or more")
    return value


def _date_or_time(text: str) -> date | datetime:
    """``YYYY-MM-DD`` (a UTC day) or an ISO-8601 time (UTC unless it has an offset)."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO-8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _database_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="the ledger database (default: $TRACKING_DATABASE_URL, else sqlite:///./tracking.db)",
    )


# -- serve / quickstart: the proxy (tracking.proxy) ------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from .proxy.server import serve

    return serve(
        args.config, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level
    )


def _quickstart(args: argparse.Namespace) -> int:
    from .proxy.quickstart import main as quickstart

    return quickstart(port=args.port, keep_running=args.keep_running)


def _add_proxy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the proxy (OpenAI-compatible /v1/images/edits)")
    serve.add_argument("--config", required=True, help="LiteLLM-style config.yaml")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - the seed's default
    serve.add_argument("--port", type=int, default=4000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(handler=_serve)

    quick = commands.add_parser(
        "quickstart",
        help="offline: the proxy on embedded defaults + the fake upstream + the seed's examples",
    )
    quick.add_argument("--port", type=int, default=0, help="proxy port (default: a free one)")
    quick.add_argument(
        "--keep-running", action="store_true", help="leave the proxy up after the examples"
    )
    quick.set_defaults(handler=_quickstart)


# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracking", description="Observable, billable OpenAI-style image edits."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the seed's examples offline against the fake")
    demo.set_defaults(handler=_demo)

    fake = commands.add_parser("fake-openai", help="serve the fake OpenAI upstream")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8090)
    fake.add_argument("--canned", action="store_true", help="pre-built answers, no image work")
    fake.add_argument(
        "--api-key", action="append", help="accept only this key (repeatable); default: any"
    )
    fake.add_argument(
        "--fault",
        action="append",
        help="inject a fault, e.g. 'status=503;retry_after=1;times=2' (repeatable; see "
        "tracking.testing.faults)",
    )
    fake.set_defaults(handler=_fake_openai)

    migrate = commands.add_parser("migrate", help="bring the spend ledger's schema up to date")
    _database_url_option(migrate)
    migrate.set_defaults(handler=_migrate)

    spend = commands.add_parser("spend", help="show spend from the ledger")
    spend.add_argument("--user", help="only this end user")
    spend.add_argument("--since", type=_date_or_time, metavar="DATE", help="from (inclusive)")
    spend.add_argument(
        "--until", type=_date_or_time, metavar="DATE", help="to (a date includes that day)"
    )
    spend.add_argument("--by", choices=("model", "day", "user"), help="group the spend")
    spend.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _database_url_option(spend)
    spend.set_defaults(handler=_spend)

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
    _database_url_option(reconcile)
    reconcile.set_defaults(handler=_reconcile)
    _add_proxy_commands(commands)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except TrackingError as exc:
        print(f"tracking {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(
            f"tracking {args.command}: error: {exc.name or exc} is not installed "
            "(pip install 'image-edit-tracking[sql]')",
            file=sys.stderr,
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
