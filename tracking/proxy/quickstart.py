"""``tracking quickstart``: the proxy tried offline from start to finish.

It starts the bundled fake upstream, writes a LiteLLM-style ``config.yaml`` (one model, its key from
``os.environ/OPENAI_API_KEY``, pointed at the fake, with a master key and an SQLite ledger),
starts ``tracking serve --config`` on it as a real subprocess (on ``--port 0``: the port the
system chose is read from the proxy's ``listening:`` line), then runs the ``curl -F``
and ``openai`` client examples against the proxy and shows what each call cost. Nothing leaves
the machine. With ``--keep-running`` the proxy stays up so the printed commands can be tried by
hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

__all__ = ["main"]

MASTER_KEY = "sk-quickstart-master-key"
UPSTREAM_KEY = "sk-quickstart-upstream-key"

CONFIG = """\
model_list:
  - model_name: gpt-image-2
    litellm_params:
      model: gpt-image-2
      api_key: os.environ/OPENAI_API_KEY
      api_base: {api_base}   # the bundled fake upstream; remove this line for OpenAI itself

general_settings:
  master_key: {master_key}
  database_url: sqlite:///{ledger}
"""


#: The start summary's line naming where the proxy listens (the host as given, and its port).
_LISTENING = re.compile(r"tracking\.proxy: listening: http://\S+:(\d+)\s*$", re.MULTILINE)


class NotStarted(Exception):
    """The proxy exited, or did not answer, as it started; ``str()`` is the one line to show."""


def _tracking_command() -> list[str]:
    script = Path(sys.executable).parent / "tracking"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tracking.cli"]


def _listening_port(log: Path, process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """The port the proxy's start summary names, read from its log as it starts."""
    deadline = time.monotonic() + timeout
    while True:
        exited = process.poll() is not None  # before the read: its last lines are then in it
        found = _LISTENING.search(log.read_text(errors="replace"))
        if found:
            return int(found[1])
        if exited:
            said = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            raise NotStarted(
                f"the proxy exited with code {process.returncode} before it listened"
                + (f" ({said[-1].strip()})" if said else "")
                + f"; its log: {log}"
            )
        if time.monotonic() > deadline:
            raise NotStarted(f"the proxy did not say where it listens within {timeout:.0f} s")
        time.sleep(0.05)


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NotStarted(f"the proxy exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise NotStarted(f"the proxy did not answer within {timeout:.0f} s")


class _Spend:
    """What the examples' calls cost, read from the proxy's x-tracking-response-cost header."""

    def __init__(self) -> None:
        self.calls = 0
        self.priced = Decimal(0)
        self.unpriced = 0

    def add(self, header: str | None) -> str:
        self.calls += 1
        if header is None or header == "unpriced":
            self.unpriced += 1
            return "unpriced"
        self.priced += Decimal(header)
        return f"${header}"


def _curl_example(url: str, paths: dict[str, Path], spend: _Spend) -> bool:
    if shutil.which("curl") is None:
        print("  curl is not installed: skipped")
        return True
    ok = True
    for title, extra in (
        (
            "as the original example writes it, on gpt-image-2 (response_format=url: GPT image "
            "models answer base64 only, so the proxy stores the image and answers a signed URL)",
            ["response_format=url"],
        ),
        ("without response_format (the upstream's base64 answer)", []),
    ):
        command = [
            "curl", "-s", "-X", "POST", f"{url}/v1/images/edits",
            "-H", f"Authorization: Bearer {MASTER_KEY}",
            "-F", "model=gpt-image-2",
            "-F", f"image=@{paths['original_image']}",
            "-F", f"mask=@{paths['mask_image']}",
            "-F", "prompt=Add a beautiful sunset in the background",
            "-F", "n=1",
            "-F", "size=1024x1024",
        ]  # fmt: skip
        for field in extra:
            command += ["-F", field]
        command += ["-D", "-"]  # headers first, then the body
        print(f"\n  {title}:\n  $ {shlex.join(command[:-2])}")
        done = subprocess.run(command, capture_output=True, timeout=60, check=False)  # noqa: S603
        out = done.stdout.decode()
        head, _, body = out.partition("\r\n\r\n")
        status = head.split(" ", 2)[1] if " " in head else "?"
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in head.splitlines()[1:])
        )
        try:
            payload: Any = json.loads(body)
        except ValueError:
            print(f"  HTTP {status}: {body[:200]}")
            ok = False
            continue
        if "error" in payload:
            print(f"  HTTP {status}: {payload['error']['message']}")
            ok = ok and status == "400" and bool(extra)
        else:
            cost = spend.add(headers.get("x-tracking-response-cost"))
            print(
                f"  HTTP {status}: {len(payload['data'])} image(s), size={payload.get('size')}, "
                f"cost={cost}, x-tracking-request-id={headers.get('x-tracking-request-id')}"
            )
            ok = ok and status == "200"
            image_url = payload["data"][0].get("url")
            if image_url:
                fetched = httpx.get(image_url, timeout=30)
                print(f"  url={image_url}")
                print(
                    f"  GET url (no key needed): HTTP {fetched.status_code}, "
                    f"{fetched.headers.get('content-type')}, {len(fetched.content)} bytes"
                )
                ok = ok and fetched.status_code == 200
    return ok


def _openai_example(url: str, paths: dict[str, Path], spend: _Spend) -> bool:
    try:
        from openai import OpenAI
    except ImportError:
        print("  openai is not installed (pip install 'image-edit-tracking[proxy]'): skipped")
        return True
    print(
        '\n  client = OpenAI(base_url="' + url + '", api_key="' + MASTER_KEY + '")\n'
        "  client.images.edit(model='gpt-image-2', image=open('original_image.png', 'rb'),\n"
        "                     prompt='Add a red hat to the person in the image', n=1,"
        " size='1024x1024')"
    )
    with (
        OpenAI(base_url=url, api_key=MASTER_KEY) as client,
        open(paths["original_image"], "rb") as image,
    ):
        raw = client.images.with_raw_response.edit(
            model="gpt-image-2",
            image=image,
            prompt="Add a red hat to the person in the image",
            n=1,
            size="1024x1024",
            user="user-123",
        )
        response = raw.parse()
    cost = spend.add(raw.headers.get("x-tracking-response-cost"))
    usage = response.usage
    print(
        f"  {len(response.data or [])} image(s), size={response.size}, "
        f"usage={usage.total_tokens if usage else None} tokens, cost={cost}, "
        f"x-tracking-request-id={raw.headers.get('x-tracking-request-id')}"
    )
    return True


def _show_spend(spend: _Spend, config: Path) -> None:
    print(f"\n4. Spend: {spend.calls} successful call(s) through the proxy")
    print(f"   priced total: ${spend.priced}; unpriced calls: {spend.unpriced}")
    if spend.unpriced:
        print("   (a model without a price is reported as unpriced, never as a silent $0)")
    # The proxy recorded every call in its ledger before answering.
    database_url = f"sqlite:///{config.parent / 'tracking.db'}"
    print(f"\n   The ledger's view:\n   $ tracking spend --by model --database-url {database_url}")
    shown = subprocess.run(  # noqa: S603 - our own command
        [*_tracking_command(), "spend", "--by", "model", "--database-url", database_url],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    print("\n".join(f"   {line}" for line in (shown.stdout + shown.stderr).splitlines()))


def _stop_on_termination() -> Any:
    """SIGTERM and SIGHUP (a ``kill``, a closed terminal) end the command as Ctrl-C does, through
    its ``finally``, which stops the proxy it started: by default they ended this process alone
    and left ``tracking serve`` running, orphaned, on its port. Returns what puts the previous
    handlers back."""

    def stop(signum: int, _frame: Any) -> None:
        for sig in previous:  # a second signal does not cut the proxy's stop short
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def main(*, port: int = 0, keep_running: bool = False) -> int:
    from ..demo import write_images
    from ..testing import FakeOpenAI

    folder = Path(tempfile.mkdtemp(prefix="tracking-quickstart-"))
    paths = write_images(folder)
    proxy: subprocess.Popen[bytes] | None = None
    ok = False
    with FakeOpenAI(api_keys=[UPSTREAM_KEY]) as fake:
        config = folder / "config.yaml"
        config.write_text(
            CONFIG.format(api_base=fake.url, master_key=MASTER_KEY, ledger=folder / "tracking.db")
        )
        print(f"1. The fake OpenAI upstream is on {fake.url}; a proxy config, pointed at it:")
        print("\n".join(f"   {line}" for line in config.read_text().splitlines()))
        # loopback only: the quickstart's master key is printed and the same on every machine
        command = [
            *_tracking_command(),
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        print(f"\n2. Starting the proxy:\n   $ OPENAI_API_KEY=... {shlex.join(command)}")
        log_path = folder / "proxy.log"
        log = log_path.open("wb")
        env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY}
        stopped = _stop_on_termination()
        try:
            proxy = subprocess.Popen(  # noqa: S603 - our own command
                command, stdout=log, stderr=subprocess.STDOUT, env=env
            )
            url = f"http://127.0.0.1:{_listening_port(log_path, proxy)}"
            _wait_until_up(url, proxy)
            print(f"   RUNNING on {url} (log: {log_path})")
            spend = _Spend()
            print("\n3. The curl and openai client examples against the proxy")
            print("\n  cURL:")
            ok = _curl_example(url, paths, spend)
            print("\n  OpenAI SDK:")
            ok = _openai_example(url, paths, spend) and ok
            _show_spend(spend, config)
            if keep_running:
                print(
                    f"\nThe proxy stays up on {url} (master key {MASTER_KEY}); images are in "
                    f"{folder}. Press Ctrl-C to stop."
                )
                with contextlib.suppress(KeyboardInterrupt):
                    proxy.wait()
        except NotStarted as exc:
            print(f"tracking quickstart: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if proxy is not None and proxy.poll() is None:
                proxy.send_signal(signal.SIGTERM)
                try:
                    proxy.wait(20)
                except subprocess.TimeoutExpired:
                    proxy.kill()
                    proxy.wait()
            log.close()
            stopped()
    print(f"\nDone; files are in {folder}.")
    return 0 if ok else 1
