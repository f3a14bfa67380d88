"""Every ``tracking`` command on the mistakes people make: one line, no traceback, non-zero exit.

Each case runs the real command in a subprocess. A missing optional package is simulated by
starting the command with that module made unimportable (``sys.modules[name] = None``), which is
what Python reports for a package that is not installed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.accounts_support import edit
from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess, tracking_command, write_config

REPO = Path(__file__).resolve().parent.parent

_WITHOUT = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None\n"
    "from tracking.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _run(
    args: list[str], cwd: Path, *, without: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = (
        [sys.executable, "-c", _WITHOUT, without, *args]
        if without
        else [*tracking_command(), *args]
    )
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd)


def _one_line_failure(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _mistakes(tmp: Path, busy: int) -> list[tuple[list[str], str | None, tuple[str, ...]]]:
    served = tmp / "served.yaml"  # passes the config's checks (first): the busy port is the fault
    served.write_text(
        "model_list:\n  - model_name: m\n    litellm_params: {model: gpt-image-2, api_key: sk-x}\n"
    )
    return [
        # fake-openai
        (["fake-openai", "--port", str(busy)], None, ("cannot listen", str(busy))),
        (["fake-openai", "--fault", "status=five"], None, ("--fault",)),
        (["fake-openai", "--fault", "bogus"], None, ("--fault", "known items")),
        (["fake-openai", "--port", "99999"], None, ("not a port",)),
        # serve
        (["serve"], None, ("--config", "--model")),
        (["serve", "--config", str(tmp / "missing.yaml")], None, ("not found",)),
        (["serve", "--model", "gpt-image-2", "--port", "99999"], None, ("not a port",)),
        (["serve", "--model", "gpt-image-2", "--workers", "100000"], None, ("worker processes",)),
        (["serve", "--model", "gpt-image-2", "--workers", "0"], None, ("worker processes",)),
        (
            ["serve", "--config", str(served), "--host", "127.0.0.1", "--port", str(busy)],
            None,
            ("cannot listen",),
        ),
        (["serve", "--model", "gpt-image-2"], "uvicorn", ("uvicorn", "'proxy' extra", ".[proxy]")),
        # quickstart
        (["quickstart"], "uvicorn", ("uvicorn", "'proxy' extra")),
        (["quickstart", "--port", "99999"], None, ("not a port",)),
        # migrate and spend
        (["migrate", "--database-url", "bogus://x"], None, ("SQLite and PostgreSQL",)),
        (
            # a missing folder is created (as the proxy creates it); one that cannot be is named
            ["migrate", "--database-url", "sqlite:////proc/no/such/dir/x.db"],
            None,
            ("cannot create /proc/no/such/dir, the folder of the SQLite ledger",),
        ),
        (["spend", "--since", "yesterday"], None, ("--since",)),
        (["spend", "--database-url", "bogus://x"], None, ("SQLite and PostgreSQL",)),
        (["spend", "--by", "colour"], None, ("--by",)),
        (["migrate"], "sqlalchemy", ("sqlalchemy", "'sql' extra")),
        # prices, models and reconcile
        (["prices"], None, ("ACTION",)),
        (["prices", "bogus"], None, ("invalid choice",)),
        (["prices", "import", str(tmp / "missing.json")], None, ("cannot read",)),
        (["models", "check", "--config", str(tmp / "missing.yaml")], None, ("not found",)),
        (["models", "check", "--api-base", "http://[::1"], None, ("--api-base", "not a URL")),
        (
            ["prices", "import", str(REPO / "tracking/pricing/prices.json"), "--out", "/proc/p"],
            None,
            ("/proc/p", "cannot write it"),
        ),
        (["reconcile", "--since", "x"], None, ("--since",)),
        (["reconcile", "--threshold", "-1"], None, ("--threshold",)),
        # the command itself
        (["demo", "extra"], None, ("unrecognized arguments",)),
        (["nosuch"], None, ("invalid choice",)),
        ([], None, ("COMMAND",)),
    ]


def test_every_command_reports_common_mistakes_in_one_line(tmp_path, busy_port):
    for args, without, expected in _mistakes(tmp_path, busy_port):
        _one_line_failure(_run(args, tmp_path, without=without), *expected)


def test_models_check_that_cannot_read_the_list_exits_2_never_1_retired(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    done = _run(["models", "check", "--api-base", f"http://127.0.0.1:{closed}/v1"], tmp_path)
    assert done.returncode == 2, done
    _one_line_failure(done, "cannot reach it")


def test_a_bad_config_lists_every_fault_without_a_traceback(tmp_path):
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("model_list: [{model_name: x}, {model_name: y}]\n")
    done = _run(["serve", "--config", str(bad_config)], tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("tracking serve: ")
    assert "model_list[0].litellm_params: required" in done.stderr
    assert "model_list[1].litellm_params: required" in done.stderr


def test_a_deployment_no_call_could_reach_stops_the_proxy_at_start(tmp_path):
    """``stability/upscale`` (no such edit operation) started, then answered every call with a
    500: the proxy now refuses the config when it starts, naming the entry."""
    config = tmp_path / "upscale.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: up\n"
        "    litellm_params: {model: stability/upscale, api_key: sk-stability-test}\n"
    )
    done = _run(["serve", "--config", str(config), "--port", "0"], tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr + done.stdout
    assert "model_list[0]: litellm_params.model: stability/upscale is not an edit" in done.stderr


@pytest.mark.parametrize(
    ("in_config", "url"),
    [
        (True, "postgresql://ledger:s3cret-pw@db.internal:notaport/spend"),
        (True, "::: not a url s3cret-pw"),
        (False, "postgresql://ledger:s3cret-pw@db.internal:notaport/spend"),
    ],
    ids=["config-port", "config-garbage", "environment-port"],
)
def test_an_unreadable_database_url_is_one_line_naming_where_it_came_from(tmp_path, in_config, url):
    """``tracking serve`` with a database URL SQLAlchemy cannot parse ended in a traceback
    (exit 1) from the start-up summary; the URL (and its password) never appears."""
    config = tmp_path / "config.yaml"
    general = f"general_settings: {{database_url: {json.dumps(url)}}}\n" if in_config else ""
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-image-2\n"
        "    litellm_params: {model: gpt-image-2, api_key: sk-x, api_base: 'http://127.0.0.1:9'}\n"
        + general
    )
    command = [*tracking_command(), "serve", "--config", str(config), "--port", "0"]
    env = {**os.environ, "TRACKING_DATABASE_URL": url} if not in_config else None
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    named = "general_settings.database_url" if in_config else "TRACKING_DATABASE_URL"
    assert f"{named}: not a database URL" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout


def test_install_hints_make_no_claim_about_a_package_index(tmp_path):
    line = _one_line_failure(_run(["quickstart"], tmp_path, without="uvicorn"))
    assert "pip install 'image-edit-tracking[" not in line
    assert "pip install -e '.[proxy]'" in line


def test_serve_model_starts_a_proxy_for_one_model_without_a_config(fake, tmp_path):
    # A ProxyProcess normally passes --config; here the folder holds no config at all.
    process = ProxyProcess(
        tmp_path / "unused.yaml",
        env={"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": API_KEY},
        extra_args=("--model", "gpt-image-2"),
    )
    process.launch = _without_config(process)  # type: ignore[method-assign]
    with process as proxy, httpx.Client(timeout=30) as client:
        models = client.get(f"{proxy.url}/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["gpt-image-2"]
        response = edit(client, proxy.url, None, model="gpt-image-2")
        assert response.status_code == 200, response.text
        cost = response.headers["x-litellm-response-cost"]
        assert cost == response.headers["x-tracking-response-cost"] and float(cost) > 0
        assert "models: gpt-image-2" in proxy.log()


def _without_config(process: ProxyProcess):  # the command ProxyProcess runs, minus --config
    def launch() -> subprocess.Popen[bytes]:
        command = [
            *tracking_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(process.port),
            *process.extra_args,
        ]
        with process.log_path.open("wb") as log:
            process.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=process.env,
                cwd=process.config.parent,
            )
        return process.process

    return launch


def test_argv_bytes_that_are_not_utf8_are_one_line_errors_never_echoing_a_password(tmp_path):
    """A Latin-1 terminal hands Python lone surrogates, which no database driver or header
    can send: refused as usage errors, never a UnicodeEncodeError traceback."""
    import os
    import subprocess
    import sys

    from tests.ledger_support import open_ledger

    ledger = tmp_path / "ledger.db"
    open_ledger(f"sqlite:///{ledger}").shutdown(10)
    url = os.fsencode(f"sqlite:///{ledger}")
    cases = [
        ([b"spend", b"--user", b"caf\xe9", b"--database-url", url], 2, b"not valid UTF-8"),
        (
            [b"spend", b"--database-url", b"postgresql://app:hunter2@127.0.0.1:1/x\xff"],
            2,
            b"not valid UTF-8",
        ),
        (
            [
                b"reconcile",
                b"--since",
                b"2026-01-01",
                b"--admin-key",
                b"sk-\xc3\xa9",
                b"--api-base",
                b"http://127.0.0.1:1",
                b"--database-url",
                url,
            ],
            2,
            b"the admin key has characters",
        ),
    ]
    for argv, code, message in cases:
        result = subprocess.run(
            [os.fsencode(sys.executable), b"-m", b"tracking.cli", *argv],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == code, result.stderr
        assert message in result.stderr and b"Traceback" not in result.stderr
        assert b"hunter2" not in result.stderr and b"sk-" not in result.stderr


def test_a_reader_that_leaves_early_ends_the_command_without_a_traceback():
    """``tracking prices list | head``: the pipe closes before the output is all written."""
    process = subprocess.Popen(
        [*tracking_command(), "prices", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line
    with process.stderr:
        errors = process.stderr.read().decode()
    assert process.wait(60) == 141, errors  # 128 + SIGPIPE, as a shell reports it
    assert "Traceback" not in errors and "BrokenPipeError" not in errors


_ROUTER_AND_STORE_FAULTS = {
    "fallback-to-no-model": (
        "router_settings: {fallbacks: [{gpt-image-2: [gpt-imag-2]}]}\n",
        "router_settings.fallbacks[0]: 'gpt-imag-2' is not a model_name",
    ),
    "ledger-in-memory": (
        "general_settings: {database_url: 'sqlite://'}\n",
        "the ledger needs an SQLite file, not an in-memory database",
    ),
    "image-store-type": (
        "general_settings: {master_key: sk-master, image_store: {type: ftp}}\n",
        "general_settings.image_store.type: must be local, s3 or off",
    ),
}


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("fault", sorted(_ROUTER_AND_STORE_FAULTS))
def test_a_config_fault_found_when_the_app_is_built_is_one_line_and_exit_2(
    tmp_path, fault, workers
):
    """Faults the router, the image store or the ledger's engine find (not the config's own
    checks) were found as the app was built: after the open-proxy banner and the start-up
    summary, exit 1 (3 for the ledger) with one worker, and with ``--workers 2`` a traceback in
    every worker, which uvicorn's supervisor started again and again, never exiting (the
    ledger's: exit status 0). They now stop the start as a config fault does."""
    extra, expected = _ROUTER_AND_STORE_FAULTS[fault]
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-image-2\n"
        "    litellm_params: {model: gpt-image-2, api_key: sk-x, api_base: 'http://127.0.0.1:9'}\n"
        + extra
    )
    command = [*tracking_command(), "serve", "--config", str(config), "--port", "0"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--workers", workers],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,  # a supervisor and its workers, ended together if it hangs
    )
    try:
        out, err = process.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        out, err = process.communicate()
    done = subprocess.CompletedProcess(command, process.returncode, out, err)
    assert done.returncode == 2, done
    _one_line_failure(done, "tracking serve: ", expected)


def test_serve_warns_at_start_about_a_deployment_whose_model_has_no_price(fake, tmp_path):
    """A misspelt model name (``gpt-imag-2``) started without a word: its calls were unpriced,
    or refused under a budget, and the start said nothing. The start now names each such
    deployment; a priced one is not named."""
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": [
                {
                    "model_name": "typo",
                    "litellm_params": {"model": "gpt-imag-2", "api_key": API_KEY},
                },
                {
                    "model_name": "right",
                    "litellm_params": {"model": "gpt-image-2", "api_key": API_KEY},
                },
            ],
            "general_settings": {"master_key": MASTER_KEY},
        },
    )
    with ProxyProcess(config, env={"OPENAI_BASE_URL": fake.url}) as proxy:
        log = proxy.log()
    warnings = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, log
    assert "model_list[0] (typo): gpt-imag-2 has no known price" in warnings[0]
    assert "refused for a key, end user or proxy with a budget" in warnings[0]


def test_an_environment_variable_the_environment_cannot_take_is_a_config_fault(tmp_path):
    """``environment_variables: {"A=B": x}`` ended ``tracking serve`` in a ValueError traceback
    from ``os.environ``; it is now one of the config's faults, exit status 2."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-image-2\n"
        "    litellm_params: {model: gpt-image-2, api_key: sk-x}\n"
        'environment_variables: {"A=B": x}\n'
    )
    done = _run(["serve", "--config", str(config), "--port", "0"], tmp_path)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr + done.stdout
    assert "environment_variables: 'A=B' is not an environment variable name" in done.stderr
