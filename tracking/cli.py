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

    run(args.host, args.port, canned=args.canned, api_keys=args.api_key or None)
    return 0


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
    fake.set_defaults(handler=_fake_openai)
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
    return code


if __name__ == "__main__":
    sys.exit(main())
