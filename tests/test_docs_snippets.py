"""Every fenced code block in README.md and docs/*.md is executed or parsed, as written.

A block's language decides what happens to it:

* ``python``: run in a fresh interpreter (this virtualenv's), in an empty folder that holds
  ``original_image.png``, ``mask_image.png`` and ``in.png``, with the bundled fake upstream
  running and the environment a reader gets from docs/getting-started.md:
  ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` point at the fake, ``TRACKING_DATABASE_URL`` at an
  SQLite file in that folder. It must exit 0.
* ``bash``: run by ``bash -e`` in such a folder, in a process group of its own that is killed
  afterwards (so ``tracking serve ... &`` is cleaned up), with this virtualenv's ``bin`` first on
  ``PATH``. The well-known ports a reader would type (8090 for the fake, 4000/4001 for proxies,
  9464 for metrics) are swapped for free ones, so the examples cannot collide with other servers.
* ``yaml`` / ``json``: parsed.
* ``sql``: run on both databases by tests/test_ledger_sql_examples.py, which needs the
  ``-- title (dialect)`` first line checked here.
* ``text``: output shown to the reader; nothing to run.

A block that cannot run (it needs a real provider, a second machine, or would install a
virtualenv) has ``<!-- no-run: reason -->`` on the line just before its fence, and the reason
must say why. A block marked ``<!-- continues -->`` goes on from the previous runnable block of
its page (the same shell session: a proxy that block started, variables it set), so it runs
as the previous block's code followed by its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from tracking.testing import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python", "bash", "yaml", "json", "sql", "text"}
_FENCE = re.compile(r"^```(\S*)\s*$")
_NO_RUN = re.compile(r"^<!--\s*no-run:(.*?)-->\s*$")
_CONTINUES = re.compile(r"^<!--\s*continues\s*-->\s*$")
_SQL_TITLE = re.compile(r"^-- .+ \((PostgreSQL|SQLite|both)\)$")
_PORTS = ("8090", "4000", "4001", "9464")
TIMEOUT = 90


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    no_run: str | None  # the reason, when the block is marked

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text(encoding="utf-8").split("\n")
    i = 0
    previous = ""  # the code the next ``continues`` block goes on from
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        marker = _NO_RUN.match(lines[i - 1]) if i else None
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), f"{page.name}:{i + 1}: unclosed code block"
        code = "\n".join(lines[i + 1 : end]) + "\n"
        if i and _CONTINUES.match(lines[i - 1]):
            assert previous, f"{page.name}:{i + 1}: continues nothing"
            code = previous + code
        block = Block(page, i + 1, opening[1], code, marker[1].strip() if marker else None)
        if block.no_run is None and block.language in {"python", "bash"}:
            previous = code
        yield block
        i = end + 1


ALL = [block for page in PAGES for block in blocks(page)]
RUNNABLE = [b for b in ALL if b.no_run is None and b.language in {"python", "bash"}]


def test_every_page_has_blocks_and_every_block_a_known_language():
    assert len(ALL) > 50 and len(RUNNABLE) > 20
    for block in ALL:
        assert block.language in LANGUAGES, f"{block.where}: fence needs a language"


def test_every_block_that_does_not_run_says_why():
    marked = [b for b in ALL if b.no_run is not None]
    for block in marked:
        assert len(block.no_run or "") >= 15, f"{block.where}: no-run needs a reason"
    for page in PAGES:  # a marker must sit right above a fence, or it marks nothing
        lines = page.read_text(encoding="utf-8").split("\n")
        for n, line in enumerate(lines):
            if _NO_RUN.match(line):
                assert n + 1 < len(lines) and _FENCE.match(lines[n + 1]), f"{page.name}:{n + 1}"
    # The README's examples all run; only its install commands (fresh virtualenvs) may not.
    readme = [b for b in marked if b.page.name == "README.md"]
    assert all("virtualenv" in (b.no_run or "") for b in readme)


@pytest.mark.parametrize(
    "block", [b for b in ALL if b.language in {"yaml", "json"}], ids=lambda b: b.where
)
def test_data_blocks_parse(block: Block):
    assert block.no_run is None, f"{block.where}: data blocks always parse; drop the marker"
    if block.language == "yaml":
        yaml.safe_load(block.code)
    else:
        json.loads(block.code)


def test_sql_blocks_are_the_ones_the_ledger_tests_run():
    for block in (b for b in ALL if b.language == "sql"):
        assert _SQL_TITLE.match(block.code.split("\n", 1)[0]), block.where
        assert block.page.name == "ledger.md", block.where


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _folder(tmp_path: Path) -> Path:
    image = Image.new("RGBA", (256, 256), (70, 130, 180, 255))
    ImageDraw.Draw(image).ellipse((64, 40, 192, 200), fill=(240, 220, 200, 255))
    image.save(tmp_path / "original_image.png")
    image.save(tmp_path / "in.png")
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((0, 0, 255, 100), fill=(0, 0, 0, 0))
    mask.save(tmp_path / "mask_image.png")
    return tmp_path


def _environment(folder: Path, upstream: FakeOpenAI) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TRACKING_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        OPENAI_BASE_URL=upstream.url,
        OPENAI_API_KEY="sk-test",
        TRACKING_DATABASE_URL=f"sqlite:///{folder / 'tracking.db'}",
        TRACKING_OUTBOX_DIR=str(folder / "outbox"),
        XDG_STATE_HOME=str(folder / "state"),
        HOME=str(folder),
        PYTHONWARNINGS="error::DeprecationWarning",
    )
    return env


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.where)
def test_code_block_runs(block: Block, upstream: FakeOpenAI, tmp_path: Path):
    folder = _folder(tmp_path)
    code = block.code
    for port in _PORTS:
        code = re.sub(rf"\b{port}\b", str(_free_port()), code)
    if block.language == "python":
        (folder / "snippet.py").write_text(code)
        command = [sys.executable, "snippet.py"]
    else:
        (folder / "snippet.sh").write_text(code)
        command = ["bash", "-e", "snippet.sh"]
    # Output goes to a file, not a pipe: servers left running in the background keep their
    # copy of stdout open, and only the block's own process is waited for.
    with open(folder / "output.txt", "wb") as output:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=_environment(folder, upstream),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode: int | str = process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            returncode = f"timeout after {TIMEOUT} s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
    text = (folder / "output.txt").read_text(errors="replace")
    assert returncode == 0, f"{block.where} failed ({returncode}):\n{code}\n--- output ---\n{text}"


_TEST_REFERENCE = re.compile(r"tests/(test_\w+\.py)::(test_\w+)")


def test_every_test_the_docs_name_exists():
    named = [m for page in PAGES for m in _TEST_REFERENCE.finditer(page.read_text("utf-8"))]
    assert len(named) > 20
    for match in named:
        source = (ROOT / "tests" / match[1]).read_text(encoding="utf-8")
        assert re.search(rf"^(async )?def {match[2]}\(", source, re.M), match[0]


_JARGON = re.compile(r"\bDESIGN\s+\d|\bthe seed\b|\bseed's\b|\bmain job\b", re.I)


def test_no_internal_jargon_reaches_users():
    """Docs, docstrings, CLI help and output speak to users: no references to planning
    documents that are not in the repository, nor to the project's own brief."""
    files = [*PAGES, *ROOT.glob("tracking/**/*.py"), *ROOT.glob("integrations/**/*.py")]
    files += [*ROOT.glob("dashboards/**/*.py"), *ROOT.glob("dashboards/**/*.yml")]
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not _JARGON.search(line), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
