"""``tracking reconcile``: the ledger's figures against what OpenAI actually billed.

The ledger prices every call from a price table; the provider's bill is the truth. This reads,
for one window of UTC days, the ledger's OpenAI calls and OpenAI's own Usage API
(``GET /v1/organization/usage/images``, image counts) and Costs API
(``GET /v1/organization/costs``, amounts), both with an admin key, and compares them per day or
per model. A group whose cost differs by more than the threshold (2% by default) is *drift*:
the command exits 1, so it can run as a scheduled job.

Each difference comes with a reason:

* the same images, another cost: the provider billed another price; the implied price (the
  provider's cost over our cost, applied to our token prices) is printed in the price-file
  format ``tracking prices`` reads, to update the table;
* the provider counted more images: calls made outside the tracker, failed calls it billed, or
  retries it counted;
* the ledger counted more: calls the provider did not bill, or not yet (its usage lags).

Costs are matched to models by their line item (``"<model>, ..."``: the text before the first
comma); only image models' line items are counted. OpenAI's projects are not known to the ledger,
so ``--by project`` lists the provider's side only. Amounts are read as ``Decimal``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from typing import Any, Literal, TextIO

import httpx

from .decimals import strict_decimal
from .errors import TrackingError
from .families import family_of
from .pricing import find_entry
from .request import openai_api_base
from .terminal import shown, spreadsheet_safe

__all__ = ["ProviderRow", "ReconcileError", "ReconcileRow", "fetch_provider", "reconcile"]

By = Literal["day", "model", "project"]
DEFAULT_THRESHOLD = Decimal(2)  #: percent
_PAGE_LIMIT = 31


class ReconcileError(TrackingError):
    """The provider's figures could not be read (a refused key, an unreachable API)."""


@dataclass(frozen=True, slots=True)
class ProviderRow:
    key: str
    images: int = 0
    requests: int = 0
    cost_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class ReconcileRow:
    key: str
    our_images: int | None
    their_images: int
    our_cost: Decimal | None
    their_cost: Decimal
    diff_usd: Decimal | None
    diff_pct: Decimal | None
    drift: bool
    note: str
    implied_prices: Mapping[str, Any] | None = None

    def to_dict(self, *, by: By) -> dict[str, Any]:
        """The row as JSON values, its group named by the grouping (``model``, ``day``,
        ``project``), as the CSV's and the table's first column and ``tracking spend``'s
        JSON name it."""

        def money(value: Decimal | None) -> str | None:
            return None if value is None else f"{value:f}"

        return {
            by: self.key,
            "our_images": self.our_images,
            "their_images": self.their_images,
            "our_cost_usd": money(self.our_cost),
            "their_cost_usd": money(self.their_cost),
            "diff_usd": money(self.diff_usd),
            "diff_pct": money(self.diff_pct),
            "drift": self.drift,
            "note": self.note,
            "implied_prices": self.implied_prices,
        }


#: One page of the admin API is a few kilobytes (31 daily buckets): a bigger answer is broken,
#: and is never read whole into memory.
_MAX_PAGE_BYTES = 16 * 1024 * 1024


def _get(client: httpx.Client, path: str, query: dict[str, Any]) -> tuple[int, bytes | None]:
    """The status and body of one page (None: the body passed ``_MAX_PAGE_BYTES``)."""
    with client.stream("GET", path, params=query) as answer:
        chunks: list[bytes] = []
        size = 0
        for chunk in answer.iter_bytes():
            size += len(chunk)
            if size > _MAX_PAGE_BYTES:
                if answer.status_code != 200:
                    break  # an error's first bytes are enough to report it
                return answer.status_code, None
            chunks.append(chunk)
        return answer.status_code, b"".join(chunks)


#: The fields a bucket's results are grouped by (``group_by``): a bucket holds one result each.
_GROUP_FIELDS = ("model", "project_id", "line_item", "source", "size", "api_key_id", "user_id")


def _pages(client: httpx.Client, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every bucket of a paged admin endpoint, following ``next_page``, each once: a bucket
    outside the window asked for, a bucket start seen before (a page served twice), a result
    repeated within a bucket (the same group twice) or a cursor that leads back to a page
    already read is a broken answer, never summed again."""
    page: str | None = None
    cursors: set[str] = set()
    starts: set[object] = set()
    for _ in range(1000):  # a bound on a misbehaving cursor
        query = {**params, "limit": _PAGE_LIMIT, **({"page": page} if page else {})}
        try:
            status, content = _get(client, path, query)
        except httpx.HTTPError as exc:
            raise ReconcileError(f"cannot reach the provider's admin API: {exc}") from None
        if status in (401, 403):
            raise ReconcileError(
                f"the provider refused the admin key (HTTP {status}); pass an "
                "organization admin key with --admin-key or OPENAI_ADMIN_KEY"
            )
        if status != 200:
            text = (content or b"")[:200].decode(errors="replace")
            raise ReconcileError(f"{path}: HTTP {status}: {text}")
        if content is None:
            raise ReconcileError(f"{path}: the answer is larger than {_MAX_PAGE_BYTES} bytes")
        try:
            body = json.loads(content, parse_float=Decimal)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
            raise ReconcileError(f"{path}: the answer is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            # {} or {"error": ...} with a 200 is no empty bill: it is no page at all
            raise ReconcileError(f"{path}: the answer is not a page of buckets")
        for bucket in body["data"]:
            if not isinstance(bucket, dict) or not isinstance(bucket.get("results") or [], list):
                raise ReconcileError(f"{path}: a bucket of the answer is not an object")
            groups: set[str] = set()
            for result in bucket.get("results") or ():
                if not isinstance(result, dict):
                    raise ReconcileError(f"{path}: a result of the answer is not an object")
                group = repr([result.get(name) for name in _GROUP_FIELDS])
                if group in groups:  # one result per group in a bucket: a row served twice
                    raise ReconcileError(f"{path}: a bucket of the answer holds a result twice")
                groups.add(group)
            _bucket_day(bucket)  # a time, or the error saying it is none
            start = bucket["start_time"]
            if start in starts:
                raise ReconcileError(f"{path}: the answer holds the bucket starting {start} twice")
            if not params["start_time"] <= start < params["end_time"]:
                raise ReconcileError(
                    f"{path}: the answer holds a bucket starting at {start}, outside the "
                    f"window asked for ({params['start_time']} to {params['end_time']})"
                )
            starts.add(start)
            yield bucket
        page = body.get("next_page")
        if not body.get("has_more"):
            return
        if not page:  # more follows, and no way to read it: never half a bill taken as whole
            raise ReconcileError(f"{path}: the answer has more pages and no next_page cursor")
        if str(page) in cursors:
            raise ReconcileError(f"{path}: the answer's next_page {str(page)[:40]!r} repeats")
        cursors.add(str(page))
    raise ReconcileError(f"{path}: more than 1000 pages; narrow the window")


#: No image bill comes near a trillion dollars (10**12): a larger amount is a broken answer,
#: and would overflow the comparison's arithmetic.
_MAX_AMOUNT_DIGITS = 12
#: Nor is any line item below 10**-20 dollars (a ten-billionth of the ledger's quantum).
_MIN_AMOUNT_EXPONENT = -20


def _bucket_day(bucket: Mapping[str, Any]) -> str:
    start = bucket.get("start_time")
    try:
        if isinstance(start, bool) or not isinstance(start, int):
            raise TypeError
        return datetime.fromtimestamp(start, UTC).date().isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        raise ReconcileError(f"the provider's bucket start {start!r} is not a time") from None


def _count(value: Any, what: str) -> int:
    """A count from the provider's answer: a whole number of 0 or more (absent: 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReconcileError(f"the provider's {what} {str(value)[:40]!r} is not a count")
    return value


def _amount(value: Any) -> Decimal:
    """An amount from the provider's answer: a finite number of dollars (absent: 0)."""
    if value is None:
        return Decimal(0)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
            raise TypeError
        amount = strict_decimal(value)  # "1_0" is no amount (Decimal reads it as 10)
    except (TypeError, ArithmeticError):
        amount = Decimal("NaN")
    if amount.is_zero():
        return amount
    if not amount.is_finite() or not _MIN_AMOUNT_EXPONENT <= amount.adjusted() < _MAX_AMOUNT_DIGITS:
        raise ReconcileError(f"the provider's cost {str(value)[:40]!r} is not an amount of dollars")
    return amount


def _is_image_model(model: str, known: set[str]) -> bool:
    return model in known or family_of(model) is not None


def _text(value: Any, what: str) -> str:
    """A name from the provider's answer: a string (absent: empty)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReconcileError(f"the provider's {what} {str(value)[:40]!r} is not a name")
    return value


def fetch_provider(
    *,
    api_base: str,
    admin_key: str,
    since: date,
    until: date,
    by: By,
    known_models: set[str],
) -> dict[str, ProviderRow]:
    """The provider's images and costs from ``since`` to ``until`` (both UTC days, inclusive)."""
    start = int(datetime.combine(since, time(0), tzinfo=UTC).timestamp())
    end = int(datetime.combine(until + timedelta(days=1), time(0), tzinfo=UTC).timestamp())
    window = {"start_time": start, "end_time": end, "bucket_width": "1d"}
    headers = {"Authorization": f"Bearer {admin_key}"}
    images: dict[str, int] = {}
    requests: dict[str, int] = {}
    costs: dict[str, Decimal] = {}
    try:
        client = httpx.Client(base_url=api_base.rstrip("/"), headers=headers, timeout=60)
    except (httpx.InvalidURL, ValueError, TypeError):  # never echoed: it may hold a secret
        raise ReconcileError("the admin API's base URL (--api-base) is not a URL") from None
    with client:
        usage_group = {"day": [], "model": ["model"], "project": ["project_id"]}[by]
        for bucket in _pages(
            client,
            "/organization/usage/images",
            # edits and generations: the ledger holds both (variations are not made here)
            {**window, "group_by": usage_group, "sources": ["image.edit", "image.generation"]},
        ):
            for result in bucket.get("results") or ():
                model = _text(result.get("model"), "model")
                key = _key(by, bucket, model, _text(result.get("project_id"), "project"))
                images[key] = images.get(key, 0) + _count(result.get("images"), "image count")
                requests[key] = requests.get(key, 0) + _count(
                    result.get("num_model_requests"), "request count"
                )
        cost_group = ["line_item", "project_id"] if by == "project" else ["line_item"]
        for bucket in _pages(client, "/organization/costs", {**window, "group_by": cost_group}):
            for result in bucket.get("results") or ():
                line_item = _text(result.get("line_item"), "line item")
                model = line_item.split(",", 1)[0].strip()
                if not _is_image_model(model, known_models):
                    continue
                key = _key(by, bucket, model, _text(result.get("project_id"), "project"))
                amount = result.get("amount")
                if not isinstance(amount, dict) or "value" not in amount:
                    raise ReconcileError("the provider's cost is not an object with a value")
                currency = amount.get("currency", "usd")
                if not isinstance(currency, str) or currency.lower() != "usd":
                    raise ReconcileError(
                        f"the provider's cost is in {str(currency)[:20]!r}, not US dollars"
                    )
                costs[key] = costs.get(key, Decimal(0)) + _amount(amount.get("value"))
    return {
        key: ProviderRow(key, images.get(key, 0), requests.get(key, 0), costs.get(key, Decimal(0)))
        for key in sorted(set(images) | set(costs))
    }


def _key(by: By, bucket: Mapping[str, Any], model: str, project: str) -> str:
    if by == "day":
        return _bucket_day(bucket)
    return model if by == "model" else project


def compare(
    ours: Mapping[str, Any],
    theirs: Mapping[str, ProviderRow],
    *,
    by: By,
    threshold: Decimal,
    window: tuple[date, date],
    day: date,
    api_base: str,
) -> list[ReconcileRow]:
    """One row per group: both sides, the difference, whether it drifts, and why. ``window``:
    the first and last day compared; ``day``: today (when the implied prices were read)."""
    rows = []
    for key in sorted(set(ours) | set(theirs)):
        mine = ours.get(key)
        other = theirs.get(key, ProviderRow(key))
        if by == "project":
            rows.append(
                ReconcileRow(
                    key,
                    None,
                    other.images,
                    None,
                    other.cost_usd,
                    None,
                    None,
                    False,
                    "the ledger does not know OpenAI projects: the provider's side only",
                )
            )
            continue
        our_images = mine.images if mine is not None else 0
        our_cost = mine.cost_usd if mine is not None else Decimal(0)
        diff = our_cost - other.cost_usd
        pct = _percent(diff, other.cost_usd)
        # exactly, not the rounded percentage shown: --threshold 0 means any difference at all
        drift = abs(diff) * 100 > threshold * other.cost_usd if other.cost_usd else our_cost != 0
        estimated = mine.estimated_usd if mine is not None else Decimal(0)
        note, implied = _explain(
            key,
            by,
            our_images,
            other,
            (our_cost, estimated),
            (drift, threshold),
            (window, day),
            api_base,
        )
        if mine is not None and mine.estimated_successes and implied is not None:
            implied = None  # a price read from it would take the estimates for the price
            note = (
                f"same images; {mine.estimated_successes} successful call(s) of ours include "
                "estimates (attempts whose answer was lost before a retry served, or usage that "
                "could not be read), which the provider billed or not: no price can be read "
                "from this group"
            )
        if mine is not None and mine.unpriced_requests:  # our cost leaves them out
            drift, implied = True, None  # it cannot agree, nor can a price be read from it
            unpriced = (
                f"{mine.unpriced_requests} call(s) of ours have no price (a model no price "
                "entry covers), so our cost leaves them out: add the model's prices (the "
                "config's prices:, tracking.register_prices) and compare again"
            )
            same_images = note == "agrees" or note.startswith("same images")
            note = unpriced if same_images else f"{unpriced}; {note}"
        if mine is not None and mine.quarantined_requests:
            note += (
                f" ({mine.quarantined_requests} call(s) of ours are counted from the ledger's "
                "quarantine: the database refused their rows; see tracking ledger quarantine list)"
            )
        rows.append(
            ReconcileRow(
                key,
                our_images,
                other.images,
                our_cost,
                other.cost_usd,
                diff,
                pct,
                drift,
                note,
                implied,
            )
        )
    return rows


def _percent(diff: Decimal, theirs: Decimal) -> Decimal | None:
    """``diff`` as a percentage of the provider's cost, to the hundredth (None when it is 0);
    worked out at a precision no amount the parser admits can exceed."""
    if not theirs:
        return None
    with localcontext() as context:
        context.prec = 80
        return (diff / theirs * 100).quantize(Decimal("0.01"))


def _explain(
    key: str,
    by: By,
    our_images: int,
    other: ProviderRow,
    costs: tuple[Decimal, Decimal],
    drifts: tuple[bool, Decimal],
    when: tuple[tuple[date, date], date],
    api_base: str,
) -> tuple[str, Mapping[str, Any] | None]:
    """Why a group differs. ``costs``: our cost and the part of it that is failed calls'
    estimates; ``drifts``: whether the group drifts and the threshold (percent); ``when``: the
    window's first and last days, and today."""
    our_cost, estimated = costs
    drift, threshold = drifts
    (since, until), day = when
    if our_images < other.images:
        return (
            f"the provider counted {other.images - our_images} more image(s): calls made "
            "outside the tracker, failed calls it billed, or retries",
            None,
        )
    if our_images > other.images:
        return (
            f"the ledger counted {our_images - other.images} more image(s): calls the provider "
            "did not bill, or not yet (its usage lags)",
            None,
        )
    if not drift:
        return "agrees", None
    if estimated:
        # failed calls whose outcome was never learnt are estimated here; the provider billed
        # them or not (or not yet): not a price it confirmed, so never read as a price change
        our_cost -= estimated
        within = (
            other.cost_usd and abs(our_cost - other.cost_usd) * 100 <= threshold * other.cost_usd
        )
        if not our_cost or within:
            return (
                f"same images; {estimated} of ours is the estimate of failed calls whose outcome "
                "was never learnt, which the provider did not bill (or not yet)",
                None,
            )
    if other.cost_usd <= 0:
        return (
            f"same images; the provider's cost is {other.cost_usd} (credits or refunds in the "
            "window?): no price can be read from it",
            None,
        )
    if by != "model" or not our_cost:
        return "same images, another cost: see the per-model view for the implied price", None
    ratio = other.cost_usd / our_cost
    # the prices that priced the window's calls, not today's: one entry for the whole window
    entry = find_entry([key], until)
    if entry is None or not entry.tokens:
        return f"same images, billed {ratio:.4f}x our prices", None
    if find_entry([key], since) != entry:
        return (
            f"same images, billed {ratio:.4f}x our prices; our prices changed within the "
            "window: compare each of its periods for the implied prices",
            None,
        )
    source = f"{api_base.rstrip('/')}/organization/costs"
    implied = {
        "schema": 1,
        "currency": "USD",
        "entries": [
            {
                "model": key,
                "provider": "openai",
                # what the provider billed from the window on (null would reprice history)
                "effective_from": since.isoformat(),
                "effective_to": None,
                "shutdown": None,
                "tokens_per_million": {
                    kind: {
                        "usd": f"{(price * ratio).quantize(Decimal('0.0001')):f}",
                        "source": source,
                        "retrieved": day.isoformat(),
                    }
                    for kind, price in entry.tokens.items()
                },
            }
        ],
    }
    return f"same images, billed {ratio:.4f}x our prices: the implied prices follow", implied


def reconcile(
    *,
    database_url: str | None,
    since: date,
    until: date,
    by: By,
    threshold: Decimal,
    api_base: str | None,
    admin_key: str | None,
    include_hosts: Sequence[str] = (),
) -> list[ReconcileRow]:
    """The ledger's OpenAI calls against OpenAI's bill, group by group. The ledger's side counts
    the calls sent to the admin API's host (``api.openai.com`` unless ``api_base`` says
    otherwise) and to ``include_hosts`` (a gateway in front of the same organization), not a
    reseller's or another OpenAI-compatible host's (:func:`other_hosts` lists those)."""
    from tracking.integrations.sql import read_billed

    key = admin_key or os.environ.get("OPENAI_ADMIN_KEY")
    if not key:
        raise ReconcileError("no admin key: pass --admin-key or set OPENAI_ADMIN_KEY")
    if not (key.isascii() and key.isprintable()):  # it goes in a header (never echoed)
        raise ReconcileError("the admin key has characters no key has (non-ASCII or control)")
    base = openai_api_base(api_base)
    hosts = billed_hosts(base, include_hosts)
    billed = read_billed(  # never creates a ledger; its schema checked
        database_url,
        provider="openai",
        since=since,
        until=until + timedelta(days=1),
        by="model" if by == "project" else by,
        hosts=hosts,
    )
    ours = {row.key: row for row in billed} if by != "project" else {}
    # the models the ledger holds, whose line items are counted (by day, its keys are days)
    models = (
        billed
        if by != "day"
        else read_billed(
            database_url,
            provider="openai",
            since=since,
            until=until + timedelta(days=1),
            by="model",
            hosts=hosts,
        )
    )
    theirs = fetch_provider(
        api_base=base,
        admin_key=key,
        since=since,
        until=until,
        by=by,
        known_models={row.key for row in models},
    )
    return compare(
        ours,
        theirs,
        by=by,
        threshold=threshold,
        window=(since, until),
        day=datetime.now(UTC).date(),
        api_base=base,
    )


def billed_hosts(api_base: str, include: Sequence[str] = ()) -> frozenset[str]:
    """The host names (any port: the ledger's ``api_base`` column holds ``host[:port]``) whose
    calls the admin API at ``api_base`` bills: its own and ``include``'s."""
    return frozenset(name for name in (_host_name(api_base), *map(_host_name, include)) if name)


def _host_name(text: str) -> str:
    """The host name of a URL or a ``host[:port]``, lower-cased, without its port."""
    host = text.strip().split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1].lower()
    if host.startswith("["):  # an IPv6 address: [::1]:8080
        return host.partition("]")[0] + "]"
    return host.partition(":")[0].rstrip(".")  # api.openai.com. is api.openai.com


def other_hosts(
    *,
    database_url: str | None,
    since: date,
    until: date,
    api_base: str | None,
    include_hosts: Sequence[str] = (),
) -> list[tuple[str, int]]:
    """The ledger's OpenAI calls in the window that :func:`reconcile` left out: each other host
    they were sent to (a reseller, another OpenAI-compatible API) with its number of calls."""
    from tracking.integrations.sql import read_other_hosts

    return read_other_hosts(
        database_url,
        provider="openai",
        since=since,
        until=until + timedelta(days=1),
        hosts=billed_hosts(openai_api_base(api_base), include_hosts),
    )


#: The figures of the table and the CSV, each named as in the JSON (the group is named by --by,
#: in all three).
_FIGURES = ("our_images", "their_images", "our_cost_usd", "their_cost_usd", "diff_usd", "diff_pct")


def _label(row: ReconcileRow) -> str:
    """A row's group as the table shows it: a name that could forge or hide a line quoted."""
    return shown(row.key) if row.key else "(none)"


def render(rows: Sequence[ReconcileRow], *, by: By, fmt: str, out: TextIO) -> None:
    """The rows as a readable table, JSON or CSV. JSON and CSV name the group by the grouping
    (``model``, ``day``, ``project``) and hold it as it is; the table quotes a name that could
    forge or hide a line (:func:`~tracking.terminal.shown`)."""
    if fmt == "json":
        json.dump([row.to_dict(by=by) for row in rows], out, indent=2)
        out.write("\n")
        return
    header = [by, *_FIGURES]

    def cells(row: ReconcileRow, missing: str, group: str) -> list[str]:
        """The row's group as ``group`` and its figures as its JSON has them; a figure it has
        none of (by project, the ledger's side) as ``missing``."""
        figures = row.to_dict(by=by)
        shown_figures = [missing if figures[n] is None else str(figures[n]) for n in _FIGURES]
        return [group, *shown_figures]

    if fmt == "csv":  # the group as the JSON has it (the csv module quotes what needs it)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*header, "drift", "note"])
        writer.writerows(
            [*cells(row, "", spreadsheet_safe(row.key)), str(row.drift).lower(), row.note]
            for row in rows
        )
        return
    table = [header, *(cells(row, "-", _label(row)) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for index, line in enumerate(table):
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.write("  ".join(padded).rstrip() + "\n")
        if index == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    if not rows:
        out.write("(no calls on either side in this window)\n")
    for row in rows:
        if row.note != "agrees":
            flag = "DRIFT " if row.drift else ""
            out.write(f"{flag}{_label(row)}: {row.note}\n")
        if row.implied_prices is not None:
            out.write(json.dumps(row.implied_prices, indent=2) + "\n")
