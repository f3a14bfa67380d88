"""Two ``tracking prices import`` at once into one file: each writes through a file of its own.

The import writes the override file through a file beside it renamed over it. That file's name
was fixed (``.NAME.partial``), so two imports at once wrote into the same file: one's rename
moved the other's half-written text into place, and the other's rename then found nothing (the
import failed: "cannot write it"), or the next import found the file broken.

Each import then read the file, merged its models in and wrote it back: of two at once, the later
write lacked the models the other had added. The read-merge-write now holds an advisory lock on a
file beside the target (``.NAME.lock``), so every model either imported is in the file at the end.
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
sources = sys.argv[4:] or [source] * count  # one file each import (other models), or the one
print("ready", flush=True)
sys.stdin.readline()
failed = []
for source in sources:
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


def _run_at_once(arguments: list[list[str]]) -> list[str]:
    """Start one importing process per argument list, let them all go at once, and return what
    each reported (its failures); each must exit 0."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _LOOP, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for args in arguments
    ]
    try:
        for process in processes:  # all ready (imported), then all started at once
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
    assert [process.returncode for process in processes] == [0] * len(processes)
    return reports


def test_two_imports_at_once_into_one_file_both_succeed(tmp_path: Path) -> None:
    out = tmp_path / "prices" / "tracking-prices.json"
    out.parent.mkdir()
    sources = [_source(tmp_path / f"source-{n}.json", f"model-{n}") for n in (1, 2)]
    reports = _run_at_once([[str(source), str(out), str(IMPORTS)] for source in sources])
    assert reports == ["0 []", "0 []"]  # no import failed
    entries = json.loads(out.read_text(encoding="utf-8"))["entries"]
    assert sorted(entry["model"] for entry in entries) == ["model-1", "model-2"]
    assert set(load_price_file(out)) == {"model-1", "model-2"}  # a valid prices file
    # nothing left beside it but the imports' lock file
    assert sorted(path.name for path in out.parent.iterdir()) == sorted(
        [out.name, f".{out.name}.lock"]
    )


#: Models each process imports, one import each, both processes at once.
MODELS_EACH = 60


def test_two_imports_at_once_of_other_models_keep_every_model(tmp_path: Path) -> None:
    out = tmp_path / "prices" / "tracking-prices.json"
    out.parent.mkdir()
    names = [[f"model-{side}-{n}" for n in range(MODELS_EACH)] for side in "ab"]
    sources = [
        [str(_source(tmp_path / f"{model}.json", model)) for model in models] for models in names
    ]
    reports = _run_at_once([["-", str(out), "0", *files] for files in sources])
    assert reports == ["0 []", "0 []"]
    entries = json.loads(out.read_text(encoding="utf-8"))["entries"]
    assert sorted(entry["model"] for entry in entries) == sorted(names[0] + names[1])
    assert set(load_price_file(out)) == set(names[0] + names[1])
