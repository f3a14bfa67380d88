"""Two ``tracking prices import`` at once into one file: each writes through a file of its own.

The import writes the override file through a file beside it renamed over it. That file's name
was fixed (``.NAME.partial``), so two imports at once wrote into the same file: one's rename
moved the other's half-written text into place, and the other's rename then found nothing (the
import failed: "cannot write it"), or the next import found the file broken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tracking.pricing import load_price_file

#: Each process imports its file this many times, both at once.
IMPORTS = 200
_LOOP = """
import io, sys
from tracking.errors import ConfigurationError
from tracking.pricing.commands import prices_import

source, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
failed = []
for _ in range(count):
    try:
        prices_import(source, io.StringIO(), target=target)
    except ConfigurationError as exc:
        failed.append(exc.message)
print(len(failed), failed[:1], flush=True)
"""


def _source(path: Path, model: str) -> Path:
    figure = {
        "usd": "1",
        "source": "https://prices.example/",
        "retrieved": "2026-01-01",
        "confidence": "official",
    }
    entry = {
        "model": model,
        "provider": "openai",
        "effective_from": None,
        "effective_to": None,
        "shutdown": None,
        "tokens_per_million": {"input_text": figure},
    }
    path.write_text(json.dumps({"schema": 1, "currency": "USD", "entries": [entry]}))
    return path


def test_two_imports_at_once_into_one_file_both_succeed(tmp_path: Path) -> None:
    out = tmp_path / "prices" / "tracking-prices.json"
    out.parent.mkdir()
    sources = [_source(tmp_path / f"source-{n}.json", f"model-{n}") for n in (1, 2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _LOOP, str(source), str(out), str(IMPORTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for source in sources
    ]
    try:
        for process in processes:  # both ready (imported), then both started at once
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = [process.communicate(timeout=300)[0].strip() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [process.returncode for process in processes] == [0, 0]
    assert reports == ["0 []", "0 []"]  # no import failed
    entries = json.loads(out.read_text(encoding="utf-8"))["entries"]
    assert sorted(entry["model"] for entry in entries) == ["model-1", "model-2"]
    assert set(load_price_file(out)) == {"model-1", "model-2"}  # a valid prices file
    assert [path.name for path in out.parent.iterdir()] == [out.name]  # nothing left beside it
