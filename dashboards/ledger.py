"""Generate the Grafana dashboard over the SQL ledger (``dashboards/grafana-sql/``) from Python.

Where ``dashboards/build.py`` draws Prometheus' counters, this dashboard reads the ledger's
``spend_calls`` view in PostgreSQL through Grafana's PostgreSQL data source (every call once:
the rows of ``spend_logs`` and the calls whose rows the database refused, kept in
``ledger_quarantine`` and billed all the same; until 2026-12-06 it read ``spend_logs`` and
missed those): spend per UTC day
by model, virtual key, team and end user, the range's total, and how many calls in the range
had no price (their cost is not in any sum: never a silent $0). The figures are the ledger's
exact ``NUMERIC`` amounts, so they agree with ``tracking spend`` and ``/spend/logs`` to the
cent, which counters scraped every few seconds cannot promise after a restart.

Run ``python -m dashboards.ledger`` after changing a panel (it rewrites the committed JSON) and
``python -m dashboards.ledger --check`` to fail when it is out of date; the test suite compares
them and runs every query against a real PostgreSQL with Grafana's ``$__timeFilter`` macro
expanded the way Grafana expands it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

__all__ = ["LEDGER", "OUTPUT_DIR", "SqlPanel", "main", "render", "sql_queries"]

OUTPUT_DIR = Path(__file__).resolve().parent / "grafana-sql"
#: Grafana's bundled PostgreSQL data source (its plugin id since Grafana 10.3).
PLUGIN = "grafana-postgresql-datasource"
DATASOURCE = DataSourceRef(type_val=PLUGIN, uid="${datasource}")
USD = "currencyUSD"

_DAY = "date_trunc('day', start_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_KEY = "COALESCE(key_alias, left(api_key_hash, 12), '(no key)')"


def _per_day(label: str) -> str:
    """Spend per UTC day per value of ``label`` (Grafana's time-series shape)."""
    return (
        f'SELECT {_DAY} AS "time", {label} AS metric, SUM(cost_usd) AS value\n'
        "FROM spend_calls\n"
        "WHERE $__timeFilter(start_time) AND cost_usd IS NOT NULL\n"
        "GROUP BY 1, 2\n"
        "ORDER BY 1, 2"
    )


@dataclass(frozen=True)
class SqlPanel:
    title: str
    description: str
    sql: str
    kind: Literal["timeseries", "table", "stat"]
    unit: str = USD
    width: int = 12
    height: int = 8


LEDGER: tuple[SqlPanel, ...] = (
    SqlPanel(
        "Spend in range",
        "What the calls in the time range cost, from the ledger (USD).",
        "SELECT COALESCE(SUM(cost_usd), 0) AS spend\n"
        "FROM spend_calls\nWHERE $__timeFilter(start_time)",
        "stat",
        width=6,
        height=4,
    ),
    SqlPanel(
        "Unpriced calls in range",
        "Calls whose model has no price: their cost is in no sum here. Register a price "
        "(prices: in the proxy config) to bill them.",
        "SELECT COUNT(*) AS calls\nFROM spend_calls\n"
        "WHERE $__timeFilter(start_time) AND cost_usd IS NULL AND status = 'success'",
        "stat",
        unit="short",
        width=6,
        height=4,
    ),
    SqlPanel(
        "Calls in range",
        "Calls recorded in the time range, successful or not.",
        "SELECT COUNT(*) AS calls\nFROM spend_calls\nWHERE $__timeFilter(start_time)",
        "stat",
        unit="short",
        width=6,
        height=4,
    ),
    SqlPanel(
        "End users in range",
        "Distinct end users (the request's user field) with a call in the range.",
        "SELECT COUNT(DISTINCT end_user) AS end_users\nFROM spend_calls\n"
        "WHERE $__timeFilter(start_time)",
        "stat",
        unit="short",
        width=6,
        height=4,
    ),
    SqlPanel(
        "Spend per day by model", "USD per UTC day, by model.", _per_day("model"), "timeseries"
    ),
    SqlPanel(
        "Spend per day by key",
        "USD per UTC day, by virtual key (its alias, else the start of its hash).",
        _per_day(_KEY),
        "timeseries",
    ),
    SqlPanel(
        "Spend per day by team",
        "USD per UTC day, by the key's team.",
        _per_day("COALESCE(team, '(no team)')"),
        "timeseries",
    ),
    SqlPanel(
        "Spend per day by end user (top 10 in range)",
        "USD per UTC day for the ten end users who spent most in the range.",
        "WITH top AS (\n"  # noqa: S608 - constant SQL, no input in it
        "  SELECT end_user FROM spend_calls\n"
        "  WHERE $__timeFilter(start_time) AND end_user IS NOT NULL AND cost_usd IS NOT NULL\n"
        "  GROUP BY end_user ORDER BY SUM(cost_usd) DESC, end_user LIMIT 10\n"
        ")\n"
        f'SELECT {_DAY} AS "time", end_user AS metric, SUM(cost_usd) AS value\n'
        "FROM spend_calls JOIN top USING (end_user)\n"
        "WHERE $__timeFilter(start_time) AND cost_usd IS NOT NULL\n"
        "GROUP BY 1, 2\nORDER BY 1, 2",
        "timeseries",
    ),
    SqlPanel(
        "Spend by day, end user, key, team and model",
        "Every (UTC day, end user, key, team, model) with its calls, images and spend, "
        "dearest first; unpriced calls count in calls and images, not in spend.",
        f"SELECT {_DAY} AS day, COALESCE(end_user, '(none)') AS end_user,\n"
        f"       {_KEY} AS key, COALESCE(team, '(no team)') AS team, model,\n"
        "       COUNT(*) AS calls, SUM(images_returned) AS images,\n"
        "       COALESCE(SUM(cost_usd), 0) AS spend\n"
        "FROM spend_calls\nWHERE $__timeFilter(start_time)\n"
        "GROUP BY 1, 2, 3, 4, 5\nORDER BY 1 DESC, spend DESC\nLIMIT 1000",
        "table",
        width=24,
        height=12,
    ),
)


class SqlTarget(cogvariants.Dataquery):
    """A raw SQL target of Grafana's SQL data sources (the SDK has no PostgreSQL builder)."""

    def __init__(self, ref_id: str, sql: str, fmt: str) -> None:
        self.ref_id, self.sql, self.fmt = ref_id, sql, fmt

    def to_json(self) -> dict[str, Any]:
        return {
            "datasource": DATASOURCE.to_json(),
            "editorMode": "code",
            "format": self.fmt,
            "rawQuery": True,
            "rawSql": self.sql,
            "refId": self.ref_id,
        }


class _SqlTargetBuilder(cogbuilder.Builder[SqlTarget]):
    def __init__(self, target: SqlTarget) -> None:
        self._target = target

    def build(self) -> SqlTarget:
        return self._target


def _panel(spec: SqlPanel, panel_id: int, pos: GridPos) -> Any:
    fmt = "time_series" if spec.kind == "timeseries" else "table"
    builder: Any
    if spec.kind == "timeseries":
        builder = (
            timeseries.Panel()
            .draw_style(GraphDrawStyle.BARS)
            .stacking(_stacked())
            .legend(
                VizLegendOptions()
                .show_legend(True)
                .display_mode(LegendDisplayMode.TABLE)
                .placement(LegendPlacement.RIGHT)
                .calcs(["sum"])
            )
        )
    elif spec.kind == "stat":
        builder = stat.Panel()
    else:
        builder = table.Panel()
    return (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .grid_pos(pos)
        .with_target(_SqlTargetBuilder(SqlTarget("A", spec.sql, fmt)))
    )


def _stacked() -> Any:
    from grafana_foundation_sdk.builders.common import StackingConfig

    return StackingConfig().mode(StackingMode.NORMAL)


def build_dashboard() -> dict[str, Any]:
    builder = (
        Dashboard("Image edits: spend from the ledger")
        .uid("image-edit-ledger")
        .description(
            "Spend per day by end user, key, team and model, read from the SQL ledger "
            "(the spend_calls view: spend_logs and the quarantined calls, each call once) "
            "through a PostgreSQL data source."
        )
        .tags(["image-edit", "tracking", "ledger"])
        .time("now-30d", "now")
        .timezone("utc")
        .with_variable(DatasourceVariable("datasource").label("Ledger database").type(PLUGIN))
    )
    x = y = 0
    row_height = 0
    for panel_id, spec in enumerate(LEDGER, start=1):
        if x + spec.width > 24:
            x, y = 0, y + row_height
            row_height = 0
        builder = builder.with_panel(
            _panel(spec, panel_id, GridPos(h=spec.height, w=spec.width, x=x, y=y))
        )
        x += spec.width
        row_height = max(row_height, spec.height)
    decoded: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return decoded


def render() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def sql_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Panel title -> raw SQL, as the committed JSON holds them."""
    return {
        panel["title"]: target["rawSql"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }


def main(argv: Sequence[str] | None = None) -> int:
    from .build import write_or_check

    return write_or_check(
        {OUTPUT_DIR / "image-edit-ledger.json": render()}, argv, "dashboards.ledger", __doc__
    )


if __name__ == "__main__":
    sys.exit(main())
