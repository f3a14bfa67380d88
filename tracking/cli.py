"""The ``tracking`` command: ``demo``, ``fake-openai`` and the operational subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    return code


if __name__ == "__main__":
    sys.exit(main())
