"""``tracking models check``: which models of a config (or the OpenAI models of the price table)
the provider has retired or will retire, read from the upstream's ``GET /v1/models``.

OpenAI's List models answer carries a ``shutdown_date`` (``YYYY-MM-DD``, or null) per model. Each
model is reported as ``live``, ``retires DATE``, ``retired DATE`` or ``not listed`` by the
upstream, or as having a malformed date. The exit status is 1 when a model is retired, so a deploy
pipeline can stop on it, and 2 when the list cannot be read or a checked model's date is malformed
(its lifecycle is then unknown: never taken as live).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TextIO

from .errors import ConfigurationError
from .pricing import shutdown_date
from .request import DEFAULT_API_BASE, openai_api_base
from .terminal import shown

__all__ = [
    "DEFAULT_API_BASE",
    "MAX_MODELS_BYTES",
    "MalformedDate",
    "check_models",
    "fetch_shutdown_dates",
]

#: The most a models list may hold before it is refused (OpenAI's is a few tens of KB).
MAX_MODELS_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MalformedDate:
    """A ``shutdown_date`` that is neither null nor a ``YYYY-MM-DD`` string, as the report shows
    it (quoted when it holds what a terminal would act on, cut to :data:`_SHOWN` characters)."""

    shown: str


_SHOWN = 40


def _malformed(raw: Any) -> MalformedDate:
    import json

    text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    text = text if len(text) <= _SHOWN else f"{text[:_SHOWN]}..."
    return MalformedDate(shown(text) if text else '""')


def fetch_shutdown_dates(
    api_base: str, api_key: str | None
) -> dict[str, date | MalformedDate | None]:
    """model -> its shutdown date (None when none is announced; :class:`MalformedDate` when the
    upstream's is neither null nor a ``YYYY-MM-DD`` string), from ``{api_base}/models``."""
    import httpx

    url = f"{api_base.rstrip('/')}/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.stream("GET", url, headers=headers, timeout=30) as answer:
            body = bytearray()
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > MAX_MODELS_BYTES:
                    raise ConfigurationError(f"{url}: the models list is too large")
            status = answer.status_code
    except httpx.HTTPError as exc:
        raise ConfigurationError(f"{url}: cannot reach it ({type(exc).__name__})") from None
    except (httpx.InvalidURL, ValueError):  # never echoed whole: it may hold a secret
        raise ConfigurationError("the models list's base URL (--api-base) is not a URL") from None
    if status != 200:
        raise ConfigurationError(f"{url}: answered HTTP {status}")
    import json

    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # nested past the parser's depth: a traceback, exit 1
        raise ConfigurationError(f"{url}: the answer is not JSON") from None
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, list):
        raise ConfigurationError(f"{url}: the answer has no 'data' list")
    found: dict[str, date | MalformedDate | None] = {}
    for item in data:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        raw = item.get("shutdown_date")
        if raw is None:
            found[item["id"]] = None
            continue
        try:
            found[item["id"]] = date.fromisoformat(raw) if isinstance(raw, str) else _malformed(raw)
        except ValueError:  # "soon", "2026-13-45", a date and time
            found[item["id"]] = _malformed(raw)
    return found


def _config_models(config_path: str) -> tuple[list[str], str | None, str | None]:
    """The upstream model names of a config, and the first deployment's api_base and key."""
    from .config import load_config

    config = load_config(config_path)
    models: list[str] = []
    api_base: str | None = None
    api_key: str | None = None
    for deployment in config.model_list:
        name = deployment.model
        models.append(name.split("/", 1)[1] if name.startswith("openai/") else name)
        params: Mapping[str, Any] = deployment.litellm_params
        if api_base is None and isinstance(params.get("api_base"), str):
            api_base = params["api_base"]
            api_key = params.get("api_key") if isinstance(params.get("api_key"), str) else None
    return list(dict.fromkeys(models)), api_base, api_key


def check_models(
    out: TextIO,
    *,
    config: str | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    today: date | None = None,
) -> int:
    """Report each model's lifecycle, as the upstream's ``/v1/models`` says it.

    With ``config``, its models: 1 when one is retired (a deploy pipeline stops on it). Without,
    the price table's OpenAI models, which keeps retired ones to price their history: 1 when the
    upstream retires (or will retire) one on another day than the table says, so the table is
    out of date; retired models the table knows as such are listed and pass. Either way 2 when
    a checked model's ``shutdown_date`` is malformed: whether it is retired is not known."""
    if config is not None:
        models, config_base, config_key = _config_models(config)
    else:
        from .pricing import price_table

        models = sorted(
            model
            for model, (override, packaged) in price_table().items()
            if any(e.provider in (None, "openai") for e in (*override, *packaged))
        )
        config_base, config_key = None, None
    base = openai_api_base(api_base or config_base)
    key = api_key or config_key or os.environ.get("OPENAI_API_KEY")
    dates = fetch_shutdown_dates(base, key)
    day = today or datetime.now(UTC).date()
    retired = stale = malformed = 0
    width = max((len(m) for m in models), default=5)
    for model in models:
        if model not in dates:
            status = "not listed by the upstream"
        elif isinstance(shutdown := dates[model], MalformedDate):
            status = f"shutdown_date malformed ({shutdown.shown}): retired or not is unknown"
            malformed += 1
        elif shutdown is None:
            status = "live"
        elif shutdown <= day:
            status = f"retired {shutdown.isoformat()}"
            retired += 1
        else:
            status = f"retires {shutdown.isoformat()} (in {(shutdown - day).days} days)"
        known = model in dates and not isinstance(dates[model], MalformedDate)
        if config is None and known and shutdown_date(model, day) != dates[model]:
            status += "; the price table does not say so (tracking prices import, or upgrade)"
            stale += 1
        out.write(f"{model.ljust(width)}  {status}\n")
    summary = f"{len(models)} model(s) checked against {base}/models; {retired} retired"
    if malformed:
        summary += f"; {malformed} with a malformed shutdown_date"
    if config is None:
        out.write(f"{summary}; {stale} the price table does not know of\n")
        found = stale
    else:
        out.write(f"{summary}\n")
        found = retired
    return 2 if malformed else 1 if found else 0
