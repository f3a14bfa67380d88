"""``tracking serve``: validate the config, then run the proxy on uvicorn, in one or N processes.

The config is read and checked in the starting process, so a bad file fails before anything
binds a port. Then the port is bound, once, here (:mod:`tracking.listening`), at every address
the host resolves to: a port taken is one line and exit status 1, and uvicorn serves on those
sockets without binding again (``--port 0``: the one port the system chose is in the start
summary's ``listening:`` line). One worker serves the app object directly. With ``--workers N``
uvicorn's supervisor spawns N fresh processes, handed the sockets, that each load the config
from ``TRACKING_PROXY_CONFIG``;
Prometheus multiprocess mode is switched on for them through ``PROMETHEUS_MULTIPROC_DIR`` (a
private temporary folder unless the variable is already set), set before any worker imports
prometheus_client, so ``/metrics`` answers the same totals whichever worker is scraped.
SIGTERM (or Ctrl-C) stops accepting, lets in-flight requests finish, then flushes every sink.
A fault found only as a process starts (:mod:`tracking.proxy.start_faults`) stops the proxy,
every worker of it, with the fault's exit status and one line; so do workers dying more often
than they are started again (:mod:`tracking.proxy.worker_deaths`), with status 1.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from ..config import ProxyConfig, export_environment, load_config
from ..errors import ConfigurationError
from ..listening import CannotListen, closing_all, listening_sockets, port_of, url
from .access_log import startup_summary
from .health import unpriced_deployments
from .metrics import MULTIPROC_ENV
from .start_faults import FAULTS_ENV, FaultWatch, StartFault, StartWatch, unreported

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "serve"]

DEFAULT_HOST = "0.0.0.0"  # noqa: S104 - a proxy is meant to be reached; LiteLLM's default too
DEFAULT_PORT = 4000
#: Said when Ctrl-C stops ``tracking serve`` while it checks the config (exit status 130).
INTERRUPTED_AT_CHECK = "interrupted (Ctrl-C) while checking the config; nothing was started"
#: The listening socket's backlog, given to uvicorn too (its own default).
BACKLOG = 2048

log = logging.getLogger("tracking.proxy")


def _warn_if_open(config: ProxyConfig) -> None:
    if config.general_settings.master_key:
        return
    line = "!" * 78
    print(
        f"{line}\n"
        "!! WARNING: no master_key is set: this proxy is OPEN. Anyone who can reach it can\n"
        "!! spend on its upstream keys. Set general_settings.master_key in the config (or\n"
        "!! TRACKING_MASTER_KEY) before exposing it.\n"
        f"{line}",
        file=sys.stderr,
        flush=True,
    )


def _multiprocess_dir() -> tuple[str, bool]:
    """The metrics folder for the workers, emptied; True when it is ours to remove at the end."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        # Files left by an earlier run would be summed into this run's totals.
        # the ledger's shared figures and the bus's counters too
        for pattern in ("*.db", "ledger-*.json", "bus-*.json"):
            for stale in folder.glob(pattern):
                stale.unlink()
        return str(folder), False
    return tempfile.mkdtemp(prefix="tracking-metrics-"), True


def _written(document: dict[str, Any]) -> Path:
    """A generated config as a file (worker processes load their config from a path)."""
    import json

    handle, name = tempfile.mkstemp(prefix="tracking-serve-", suffix=".yaml")
    with os.fdopen(handle, "w") as out:
        json.dump(document, out)  # JSON is YAML
    path = Path(name)
    atexit.register(path.unlink, missing_ok=True)
    return path


def header_deadline_protocol(config: ProxyConfig) -> Any:
    """The HTTP protocol bounding how long a request's headers may take (this process's copy is
    set from ``config``); None without httptools, where uvicorn's default applies."""
    try:
        from .protocol import HeaderDeadlineProtocol
    except ImportError:
        log.warning("httptools is not installed: request headers have no read deadline")
        return None
    HeaderDeadlineProtocol.header_timeout = config.general_settings.request_read_timeout
    return HeaderDeadlineProtocol


#: The ``--log-level`` worker processes log at (set by ``tracking serve --workers N``).
LOG_LEVEL_ENV = "TRACKING_PROXY_LOG_LEVEL"


def configure_logging(log_level: str) -> None:
    """The proxy's logging, in ``tracking serve`` and in each ``--workers`` process (a process
    of its own, which inherits none of it: until 2026-12-07 a worker logged no INFO line, the
    access log's included, and its warnings bare, through Python's last-resort handler)."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    # httpx logs every upstream request at INFO, alembic each migration step: noise here.
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def one_model_config(model: str) -> dict[str, Any]:
    """The config ``tracking serve --model NAME`` serves: that model under its own name, its key
    and upstream from the environment (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``), as a file
    listing it would."""
    return {"model_list": [{"model_name": model, "litellm_params": {"model": model}}]}


def serve(
    config_path: str | os.PathLike[str] | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
    log_level: str = "info",
    model: str | None = None,
) -> int:
    """Run the proxy until it is stopped; returns the process exit code. With ``model`` (and no
    ``config_path``) it serves that one model without a config file."""
    from .app import check_startable
    from .lifecycle import check_callbacks
    from .prices import register_config_prices

    configure_logging(log_level)
    try:
        if config_path is None:
            if not model:
                raise ConfigurationError("give a config file or a model")
            config_path = _written(one_model_config(model))
        config = load_config(config_path)
        check_callbacks(config)
        register_config_prices(config)  # a bad price fails here, before any port is bound
        # and a bad fallback or image store, before any worker starts
        deployments = check_startable(config)
    except ConfigurationError as exc:
        print(f"tracking serve: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C (or a callback's module raising it as it is imported)
        print(f"tracking serve: {INTERRUPTED_AT_CHECK}", file=sys.stderr, flush=True)
        return 130  # 128 + SIGINT, as a shell reports a program Ctrl-C stopped
    if workers < 1:
        print("tracking serve: --workers must be at least 1", file=sys.stderr)
        return 2
    refusal = _unshared_limits(config) if workers > 1 else None
    if refusal:
        print(f"tracking serve: --workers {workers}: {refusal}", file=sys.stderr)
        return 2
    try:  # bound once, here: uvicorn serves on these sockets and never binds again
        sockets = listening_sockets(host, port, backlog=BACKLOG)
    except CannotListen as exc:
        print(f"tracking serve: error: {exc}", file=sys.stderr)
        return 1
    with closing_all(sockets):
        _warn_if_open(config)
        startup_summary(config, export_environment(config), listening=url(host, sockets))
        for line in unpriced_deployments(config, deployments):
            log.warning("%s", line)
        options: dict[str, Any] = {
            "host": host,
            "port": port_of(sockets),
            "log_level": log_level,
            "access_log": False,
            "lifespan": "on",
            "server_header": False,
            "backlog": BACKLOG,
        }
        protocol = header_deadline_protocol(config)
        if protocol is not None:
            options["http"] = protocol
        if workers == 1:
            return _serve_one(config, options, sockets)
        return _serve_workers(config, Path(config_path), workers, options, sockets)


def _serve_workers(
    config: ProxyConfig,
    config_path: Path,
    workers: int,
    options: dict[str, Any],
    sockets: list[socket.socket],
) -> int:
    """N worker processes on ``sockets``, under uvicorn's supervisor, each loading the config from
    ``TRACKING_PROXY_CONFIG``; a worker's start fault stops them all."""
    import uvicorn

    from .app import CONFIG_ENV

    folder, ours = _multiprocess_dir()
    os.environ[MULTIPROC_ENV] = folder
    os.environ[CONFIG_ENV] = os.fspath(config_path.resolve())
    os.environ[LOG_LEVEL_ENV] = str(options["log_level"])
    counters_folder = _machine_counters(config)
    faults = FaultWatch()
    try:
        settings = uvicorn.Config(
            "tracking.proxy.app:app_from_environment", factory=True, workers=workers, **options
        )
        supervisor = _supervisor(settings, sockets)
        # a fault stops the supervisor as SIGTERM does, without saying a signal came
        with faults.watching(stop=supervisor.should_exit.set):
            supervisor.run()
        fault = faults.first() or supervisor.stopped
    finally:
        faults.close()
        if ours:
            shutil.rmtree(folder, ignore_errors=True)
        if counters_folder:
            shutil.rmtree(counters_folder, ignore_errors=True)
    return _reported(fault)


def _supervisor(settings: Any, sockets: list[socket.socket]) -> Any:
    """uvicorn's supervisor of ``settings.workers`` processes serving ``sockets``, bounding how
    often dead workers are started again (:mod:`tracking.proxy.worker_deaths`; uvicorn up to
    0.50 is given the function each worker runs, later ones make it themselves)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from .worker_deaths import BoundedMultiprocess

    supervisor: Any = BoundedMultiprocess
    if "target" in inspect.signature(Multiprocess).parameters:
        return supervisor(settings, target=uvicorn.Server(settings).run, sockets=sockets)
    return supervisor(settings, sockets=sockets)


def _serve_one(config: ProxyConfig, options: dict[str, Any], sockets: list[socket.socket]) -> int:
    """One process serving the app itself on ``sockets``; a fault at its start is reported as a
    worker's, and so is a start uvicorn stopped without one (status 1). One that ends the
    process itself at its start (``os._exit``, a signal) is said by the watcher of its start."""
    os.environ.pop(FAULTS_ENV, None)  # no supervisor of ours to tell
    watch = StartWatch()  # says so should this process end at its start with no word
    try:
        return _run_one(config, options, sockets, watch)
    finally:
        watch.close()


def _run_one(
    config: ProxyConfig, options: dict[str, Any], sockets: list[socket.socket], watch: StartWatch
) -> int:
    import uvicorn

    from .app import create_app

    try:
        app = create_app(config)
    except ConfigurationError as exc:
        return _reported(StartFault.of(exc))
    app.after_start = watch.release
    # uvicorn raises the signal that stopped it again once it has stopped, to the handler it
    # found: SIGTERM's then killed the process (status 143), though every request was done and
    # every sink flushed. Ending as Ctrl-C does, it is the clean stop it was: status 0.
    previous = signal.signal(signal.SIGTERM, _as_ctrl_c)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, raised again once the server has stopped
        pass
    except SystemExit:  # uvicorn's exit when it could not start (status 3)
        if server.started:  # not uvicorn's: a callback's sys.exit once serving, say
            raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if app.start_fault is None and not server.started:  # uvicorn up to 0.3x returned
        return _reported(unreported("the server stopped"))
    return _reported(app.start_fault)


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _reported(fault: StartFault | None) -> int:
    """The exit status for a start fault (0 without one), the fault said in one line."""
    if fault is None:
        return 0
    print(f"tracking serve: {fault.message}", file=sys.stderr, flush=True)
    return fault.status


def _unshared_limits(config: ProxyConfig) -> str | None:
    """Why N workers would enforce the deployments' rpm/tpm each alone, or None."""
    settings = config.router_settings
    if (
        settings.get("redis_url")
        or settings.get("redis_host")
        or settings.get("redis_startup_nodes")
    ):
        return None
    limited = [
        d.model_name
        for d in config.model_list
        if d.litellm_params.get("rpm") or d.litellm_params.get("tpm")
    ]
    if not limited:
        return None
    return (
        f"deployment rpm/tpm limits ({', '.join(sorted(set(limited)))}) would be counted by "
        "each worker alone; set router_settings.redis_url so the workers share them, or run "
        "one worker"
    )


def _machine_counters(config: ProxyConfig) -> str | None:
    """Without Redis, the folder of the SQLite file the workers share their keys' rpm windows
    and budget counters through, the whole proxy's budget's too (None when Redis is configured,
    or with neither keys nor a whole-proxy budget)."""
    from .accounts import redis_url_of
    from .machine_counters import COUNTERS_FILE_ENV

    counted = config.general_settings.master_key or config.litellm_settings.max_budget is not None
    if not counted or redis_url_of(config):
        return None
    folder = tempfile.mkdtemp(prefix="tracking-counters-")
    os.environ[COUNTERS_FILE_ENV] = os.path.join(folder, "counters.db")
    log.info("no Redis: the workers share rate limits and budgets through %s", folder)
    return folder
