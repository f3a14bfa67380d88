"""The ``tracking`` command: ``demo``, ``fake-openai``, ``migrate``, ``spend`` and the rest.

A mistake on the command line (an unknown option, a port out of range, a fault that cannot be
read, a busy port, a missing optional package) is one line on stderr, ``tracking COMMAND:
error: ...``, and a non-zero exit: never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import NoReturn

from .errors import TrackingError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo

    return demo()


def _fake_openai(args: argparse.Namespace) -> int:
    from .testing.fake_openai import run

    _check_port_free(args.host, args.port)
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


def _port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def _fault(text: str) -> str:
    """A ``--fault`` spec, checked now so a typo is a usage error rather than a traceback."""
    from .testing.faults import parse_fault

    try:
        parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _check_port_free(host: str, port: int) -> None:
    """Fail with one line when the port is taken (the servers would raise from deep inside)."""
    import socket

    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class CommandError(Exception):
    """A mistake the command reports in one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage mistakes reported in one line (and ``--help`` for the rest)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    _require("proxy", "uvicorn")
    from .proxy.server import serve

    if (args.config is None) == (args.model is None):
        raise CommandError("give --config FILE, or --model NAME for one model without a file")
    _check_port_free(args.host, args.port)
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
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - the seed's default
    serve.add_argument("--port", type=_port, default=4000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(handler=_serve)

    quick = commands.add_parser(
        "quickstart",
        help="offline: the proxy on embedded defaults + the fake upstream + the seed's examples",
    )
    quick.add_argument("--port", type=_port, default=0, help="proxy port (default: a free one)")
    quick.add_argument(
        "--keep-running", action="store_true", help="leave the proxy up after the examples"
    )
    quick.set_defaults(handler=_quickstart)


# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tracking", description="Observable, billable OpenAI-style image edits.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    demo = commands.add_parser("demo", help="run the seed's examples offline against the fake")
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
    spend.add_argument("--user", help="only this end user")
    spend.add_argument("--since", type=_date_or_time, metavar="DATE", help="from (inclusive)")
    spend.add_argument(
        "--until", type=_date_or_time, metavar="DATE", help="to (a date includes that day)"
    )
    spend.add_argument("--by", choices=("model", "day", "user"), help="group the spend")
    spend.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _database_url_option(spend)
    spend.set_defaults(handler=_spend)
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
    except CommandError as exc:
        print(f"tracking {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        from .extras import extra_for, install_hint

        extra = extra_for(exc.name)
        hint = f": {install_hint(extra)}" if extra else ""
        print(
            f"tracking {args.command}: error: {exc.name or exc} is not installed{hint}",
            file=sys.stderr,
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
