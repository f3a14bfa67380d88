"""``tracking prices list | import | diff``: see, update and compare prices without a release.

``list`` shows every model the table prices: provider, live or retired (with the date), token
prices, how many per-image prices, tool fees (USD per 1,000 uses), confidence and source.
``import FILE_OR_URL`` reads our format
or LiteLLM's price map (:mod:`.litellm_import`) and writes the models it prices into an override
file (``--out``, default ``$TRACKING_PRICES_FILE`` or ``./tracking-prices.json``), keeping the
file's other models; the SDK reads it through ``TRACKING_PRICES_FILE`` and the proxy through
``general_settings.prices_file``, and its prices win over the packaged ones. ``diff`` shows what
an override file changes against the packaged table.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from ..bounded_read import read_at_most
from ..errors import ConfigurationError
from ..terminal import shown
from . import PRICES_FILE_ENV, price_table, use_prices_file
from .litellm_import import from_litellm, is_litellm_document
from .table import PriceEntry, load_packaged, load_price_file, parse_price_data

__all__ = ["DEFAULT_OUT", "MAX_IMPORT_BYTES", "prices_diff", "prices_import", "prices_list"]

DEFAULT_OUT = "tracking-prices.json"
#: The most an imported file or URL may hold (LiteLLM's whole map is a few MB).
MAX_IMPORT_BYTES = 64 * 1024 * 1024


def _today() -> date:
    return datetime.now(UTC).date()


def _status(entry: PriceEntry, today: date) -> str:
    if entry.shutdown is None:
        return "live"
    verb = "retired" if entry.retired_on(today) else "retires"
    return f"{verb} {entry.shutdown.isoformat()}"


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:f}"  # $0.0000001, never $1E-7


def _plain(value: Decimal) -> str:
    """``value`` in plain digits without trailing zeros: 14, 0.0125, 1000 (never 1E+3)."""
    return f"{value.normalize():f}"


def _tool_fees(tools: Mapping[str, Mapping[str, str]]) -> str:
    """``google_search $14/1000 search_query``; ``-`` when the entry gives no tool fee."""
    fees = [f"{tool} ${fee['usd_per_1000']}/1000 {fee['per']}" for tool, fee in tools.items()]
    return ", ".join(fees) or "-"


def prices_list(out: TextIO, *, prices_file: str | None = None, as_json: bool = False) -> int:
    """Print the price table (the override file's entries win), one model a line."""
    if prices_file is not None:
        use_prices_file(prices_file)
    today = _today()
    rows: list[dict[str, Any]] = []
    for model, (override, packaged) in sorted(price_table().items()):
        entry = next((e for e in (*override, *packaged) if e.covers(today)), None)
        if entry is None or model != entry.key:  # a snapshot alias is listed with its entry
            continue
        rows.append(
            {
                "model": model,
                "aliases": list(entry.aliases),
                "provider": entry.provider,
                "status": _status(entry, today),
                "shutdown": entry.shutdown.isoformat() if entry.shutdown else None,
                "tokens_per_million": {k: f"{v:f}" for k, v in entry.tokens.items()},
                "per_image_prices": sum(len(s) for s in entry.per_image.values()),
                "tools": {
                    tool: {"per": fee.per, "usd_per_1000": _plain(fee.usd * 1000)}
                    for tool, fee in entry.tools.items()
                },
                "confidence": entry.confidence,
                "origin": entry.origin,
                "source": entry.source,
            }
        )
    if as_json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    header = (
        *("model", "provider", "status", "text in", "image in", "image out", "per-image"),
        "tool fees",
    )
    lines = [(*header, "confidence", "source")]
    for row in rows:
        tokens = {k: Decimal(v) for k, v in row["tokens_per_million"].items()}
        lines.append(
            (
                shown(row["model"])
                + (f" (+{len(row['aliases'])} snapshot)" if row["aliases"] else ""),
                shown(row["provider"]) if row["provider"] else "-",
                row["status"],
                _money(tokens.get("input_text")),
                _money(tokens.get("input_image")),
                _money(tokens.get("output_image")),
                str(row["per_image_prices"] or "-"),
                _tool_fees(row["tools"]),
                f"{row['confidence']} ({row['origin']})",
                shown(row["source"]) if row["source"] else "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.write("  ".join([*cells, line[-1]]).rstrip() + "\n")
    out.write("Token prices are USD per 1M tokens; per-image: how many size/quality prices.\n")
    out.write("Tool fees: USD per 1,000 uses of a server-side tool, besides its result tokens.\n")
    return 0


def _local_path(source: str) -> Path:
    """A plain path, or a ``file://`` URL on this machine (percent-decoded)."""
    if not source.lower().startswith("file:"):
        return Path(source)
    parsed = urllib.parse.urlsplit(source)
    if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
        raise ConfigurationError(f"{source}: a file URL must name a file on this machine")
    return Path(urllib.parse.unquote(parsed.path))


def _read_source(source: str) -> Any:
    if source.startswith(("https://", "http://")):
        import httpx

        try:
            with httpx.stream("GET", source, timeout=30, follow_redirects=True) as answer:
                answer.raise_for_status()
                body = bytearray()
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) > MAX_IMPORT_BYTES:
                        raise ConfigurationError(f"{source}: larger than {MAX_IMPORT_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise ConfigurationError(f"{source}: cannot fetch it ({exc})") from None
        raw = bytes(body)
    else:
        path = _local_path(source)
        try:
            found = read_at_most(path, MAX_IMPORT_BYTES)
        except OSError as exc:
            raise ConfigurationError(f"{source}: cannot read it ({exc.strerror})") from None
        if found is None:
            raise ConfigurationError(f"{source}: larger than {MAX_IMPORT_BYTES} bytes")
        raw = found
    try:  # numbers as Decimal: a float would read 1e-400 as 0.0, a free model
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigurationError(f"{source}: not JSON ({exc})") from None


def prices_import(source: str, out: TextIO, *, target: str | None = None) -> int:
    """Import ``source`` (our format or LiteLLM's) into the override file ``target``."""
    data = _read_source(source)
    if is_litellm_document(data):
        warnings: list[str] = []
        document = from_litellm(data, source=_as_url(source), today=_today(), warnings=warnings)
        for warning in warnings:
            sys.stderr.write(f"warning: {shown(warning)}\n")
        kind = "LiteLLM"
    elif isinstance(data, Mapping) and "entries" in data:
        document = dict(data)
        kind = "tracking"
    else:
        raise ConfigurationError(
            f"{source}: neither a tracking prices file nor a LiteLLM price map with image models"
        )
    imported = parse_price_data(document, origin=source, kind="override")  # refuse bad data
    path = Path(target or os.environ.get(PRICES_FILE_ENV) or DEFAULT_OUT)
    with _import_lock(path):  # read, merge and write: one import at a time into one file
        kept: list[Any] = []
        if path.exists():
            load_price_file(path)  # the file we add to must be valid too
            existing = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
            replaced = {e["model"] for e in document["entries"]}
            kept = [e for e in existing["entries"] if e["model"] not in replaced]
        merged = {
            "schema": 1,
            "currency": "USD",
            "notes": f"A user's prices (tracking prices import, last from {source}).",
            "entries": [*kept, *document["entries"]],
        }
        parse_price_data(merged, origin=str(path), kind="override")
        _write_whole(path, json.dumps(merged, indent=2, default=_number_text) + "\n")
    models = sorted({e.key for entries in imported.values() for e in entries})
    out.write(f"imported {len(models)} model(s) from {kind} data into {path}:\n")
    out.write("".join(f"  {shown(m)}\n" for m in models))
    out.write(
        f"Use it with {PRICES_FILE_ENV}={path} (SDK) or general_settings.prices_file (proxy).\n"
    )
    return 0


def _number_text(value: object) -> str:
    """A JSON number outside the prices (which are decimal strings), such as an entry's numeric
    ``notes``, read as Decimal: written back as its text, never through a float."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@contextlib.contextmanager
def _import_lock(path: Path) -> Iterator[None]:
    """Hold the advisory lock of the override file ``path``: an exclusive ``flock`` on a file
    beside it (``.NAME.lock``, beside the file a symbolic link names; created once and left
    there, as removing it would let a third import lock a file the first no longer holds).
    Two imports at once each merged the models the file held when it read it, so the later
    write dropped the other's models; now the second waits for the first to write. POSIX only:
    on Windows (no ``fcntl``) imports are not serialized, so run them one after the other."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    real = Path(os.path.realpath(path))
    lock = real.with_name(f".{real.name}.lock")
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ConfigurationError(f"{real}: cannot write it ({exc.strerror or exc})") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # released when the descriptor is closed
        yield
    finally:
        os.close(descriptor)


def _write_whole(path: Path, text: str) -> None:
    """Write ``path`` through a file beside it renamed over it: a write cut short leaves the
    user's prices file as it was, never half of it. Through a symbolic link the file it names is
    written and the link kept (the rename replaced the link with a file of its own, and the
    file a configuration manages through the link was left as it was). The file beside it has a
    name of its own (two imports at once shared one: each wrote into the other's, and the
    second rename found nothing), created as a new file with the umask's permissions."""
    path = Path(os.path.realpath(path))
    partial = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise ConfigurationError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def _as_url(source: str) -> str:
    if source.startswith(("https://", "http://")):
        return source
    return _local_path(source).resolve().as_uri()


def prices_diff(out: TextIO, *, prices_file: str | None = None) -> int:
    """What the override file changes against the packaged table; 0 even when it differs."""
    path = prices_file or os.environ.get(PRICES_FILE_ENV)
    if not path:
        raise ConfigurationError(f"name a prices file, or set {PRICES_FILE_ENV}")
    override, packaged = load_price_file(path), load_packaged()
    today = _today()
    changes = 0
    for model in sorted(override):
        mine = next((e for e in override[model] if e.covers(today)), None)
        if mine is None or mine.key != model:
            continue
        label = shown(model)
        theirs = next((e for e in packaged.get(model, ()) if e.covers(today)), None)
        if theirs is None:
            out.write(f"+ {label}: not in the packaged table ({len(mine.figures())} prices)\n")
            changes += 1
            continue
        new, old = mine.figures(), theirs.figures()
        for name in sorted({*new, *old}):
            figure = f"{label} {shown(name)}"
            if name not in new:
                out.write(f"- {figure}: {_money(old[name])} (packaged only)\n")
            elif name not in old:
                out.write(f"+ {figure}: {_money(new[name])}\n")
            elif new[name] != old[name]:
                out.write(f"~ {figure}: {_money(old[name])} -> {_money(new[name])}\n")
            else:
                continue
            changes += 1
    out.write(f"{changes} difference(s) between {path} and the packaged table\n")
    return 0
