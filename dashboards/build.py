"""Generate the Grafana dashboards under ``dashboards/grafana/`` from Python.

Run ``python -m dashboards.build`` after changing a panel: it rewrites the committed JSON files,
and ``python -m dashboards.build --check`` exits non-zero when they are out of date (the test
suite does the same). Dashboards are built with ``grafana-foundation-sdk``, Grafana Labs' own
typed builders, so a misspelt option is a type error rather than a panel Grafana ignores.

Every query is written against the metric contract in :mod:`dashboards.contract`
(docs/observability.md).
Queries use Grafana's ``$__rate_interval`` / ``$__range`` and the dashboard variables
``$datasource``, ``$model`` and ``$provider``; the tests substitute them and run each query
through a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    CustomVariable,
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    GridPos,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

from .contract import OPERATIONS as OPERATION_VALUES

__all__ = ["DASHBOARDS", "OUTPUT_DIR", "build_dashboard", "main", "render", "render_all"]

OUTPUT_DIR = Path(__file__).resolve().parent / "grafana"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Units Grafana knows: https://grafana.com/docs/grafana/latest/panels-visualizations/ (unit picker)
USD = "currencyUSD"
REQ_PER_S = "reqps"
SECONDS = "s"
RATIO = "percentunit"
IMAGES_PER_MIN = "suffix: img/min"
TOKENS_PER_MIN = "suffix: tok/min"
COUNT = "short"

#: The ImageEditLedgerStuck alert's threshold (dashboards/rules/image-edit.rules.yml), drawn on
#: the "Ledger stuck seconds" panel: the proxy's readiness says ``stuck`` from the same 60 s
#: (``ledger_stuck_after``).
LEDGER_STUCK_ALERT_SECONDS = 60

# Label filters every model-scoped query carries, so the variables narrow every panel; the
# per-call metrics also carry ``operation`` (image_edit / image_generation).
SEL = 'model=~"$model", provider=~"$provider", operation=~"$operation"'
MODEL_SEL = 'model=~"$model"'


@dataclass(frozen=True)
class Query:
    """One panel target: a PromQL expression and the legend of its series."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    """What a panel shows; the layout and the Grafana details are filled in by ``_panel``."""

    title: str
    description: str
    queries: Sequence[Query]
    unit: str
    kind: Literal["timeseries", "bargauge", "stat"] = "timeseries"
    width: int = 12
    height: int = 8
    #: Panel-relative time (``now/d`` is "today so far"); None follows the dashboard's range.
    time_from: str | None = None
    stacked: bool = False
    #: A red line (timeseries) or colour step (others) at this value, e.g. an alert threshold.
    threshold: float | None = None


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: Sequence[PanelSpec]


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    rows: Sequence[RowSpec]
    tags: Sequence[str] = field(default=("image-edit", "tracking"))

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"


def _rate(metric: str, selector: str = SEL, by: str = "model") -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


def _quantile(q: float) -> Query:
    return Query(
        f"histogram_quantile({q}, sum by (model, le) (rate("
        f'image_edit_request_duration_seconds_bucket{{{SEL}, status="success"}}'
        f"[$__rate_interval])))",
        f"p{round(q * 100)} {{{{model}}}}",
    )


OVERVIEW = DashboardSpec(
    uid="image-edit-overview",
    title="Image edits and generations: spend and traffic",
    description=(
        "Spend, images, requests, errors and latency of /v1/images/edits and "
        "/v1/images/generations calls made through tracking (SDK processes and the proxy), "
        "from the tracking metrics. The Operation variable keeps edits, generations or both."
    ),
    rows=(
        RowSpec(
            "Spend",
            (
                PanelSpec(
                    "Spend per hour by model",
                    "USD per hour at the current rate, by the model the caller asked for. "
                    "Unpriced calls add nothing here: see 'Unpriced requests'.",
                    (Query(f"{_rate('image_edit_cost_usd_total')} * 3600", "{{model}}"),),
                    USD,
                    stacked=True,
                ),
                PanelSpec(
                    "Spend per hour by operation",
                    "USD per hour at the current rate, edits and generations apart (the "
                    "operation label: image_edit or image_generation).",
                    (
                        Query(
                            f"{_rate('image_edit_cost_usd_total', by='operation')} * 3600",
                            "{{operation}}",
                        ),
                    ),
                    USD,
                    stacked=True,
                ),
                PanelSpec(
                    "Spend today by model",
                    "USD spent since midnight (dashboard time zone), by model.",
                    (
                        Query(
                            "sum by (model) (increase(image_edit_cost_usd_total"
                            f"{{{SEL}}}[$__range]))",
                            "{{model}}",
                        ),
                    ),
                    USD,
                    kind="bargauge",
                    width=6,
                    time_from="now/d",
                ),
                PanelSpec(
                    "Spend today",
                    "Total USD spent since midnight over the selected models and providers.",
                    (
                        Query(
                            f"sum(increase(image_edit_cost_usd_total{{{SEL}}}[$__range]))",
                            "total",
                        ),
                    ),
                    USD,
                    kind="stat",
                    width=6,
                    time_from="now/d",
                ),
            ),
        ),
        RowSpec(
            "Traffic",
            (
                PanelSpec(
                    "Images per minute by model, size and quality",
                    "Images returned per minute; size and quality are the values the upstream "
                    "billed (standard sizes, or 'custom').",
                    (
                        Query(
                            f"{_rate('image_edit_images_total', by='model, size, quality')} * 60",
                            "{{model}} {{size}} {{quality}}",
                        ),
                    ),
                    IMAGES_PER_MIN,
                    stacked=True,
                ),
                PanelSpec(
                    "Request rate by status",
                    "Calls per second, successes and failures, by model.",
                    (
                        Query(
                            _rate("image_edit_requests_total", by="model, status"),
                            "{{model}} {{status}}",
                        ),
                    ),
                    REQ_PER_S,
                ),
                PanelSpec(
                    "Error ratio by error type",
                    "Share of all calls that failed, split by error type (validation_error, "
                    "authentication_error, rate_limit_error, timeout, ...). The red line is the "
                    "ImageEditErrorRatioHigh alert threshold.",
                    (
                        Query(
                            "sum by (error_type) (rate(image_edit_requests_total"
                            f'{{{SEL}, status="failure"}}[$__rate_interval])) '
                            "/ ignoring (error_type) group_left () "
                            f"sum(rate(image_edit_requests_total{{{SEL}}}[$__rate_interval]))",
                            "{{error_type}}",
                        ),
                    ),
                    RATIO,
                    stacked=True,
                    threshold=0.05,
                ),
                PanelSpec(
                    "Tokens per minute by type",
                    "Usage tokens reported by the upstream per minute: input text, input image, "
                    "cached input and output image tokens.",
                    (
                        Query(
                            f"{_rate('image_edit_tokens_total', by='token_type')} * 60",
                            "{{token_type}}",
                        ),
                    ),
                    TOKENS_PER_MIN,
                    stacked=True,
                ),
            ),
        ),
        RowSpec(
            "Latency",
            (
                PanelSpec(
                    "Latency p50 / p95 / p99 by model",
                    "Wall-clock duration of successful calls, retries included, by model.",
                    (_quantile(0.5), _quantile(0.95), _quantile(0.99)),
                    SECONDS,
                    width=24,
                ),
            ),
        ),
        RowSpec(
            "Pricing and end users",
            (
                PanelSpec(
                    "Unpriced requests by model",
                    "Calls whose cost is unknown (no price entry for the model): their spend is "
                    "missing from every USD panel until a price is registered.",
                    (
                        Query(
                            "sum by (model) (increase(image_edit_unpriced_requests_total"
                            f"{{{MODEL_SEL}}}[$__range]))",
                            "{{model}}",
                        ),
                    ),
                    COUNT,
                    kind="bargauge",
                    threshold=1,
                ),
                PanelSpec(
                    "Top end users by spend",
                    "The ten end users (the 'user' parameter) who spent most in the time range. "
                    "Empty unless the opt-in per-end-user metric is switched on.",
                    (
                        Query(
                            "topk(10, sum by (end_user) "
                            "(increase(image_edit_end_user_cost_usd_total[$__range])))",
                            "{{end_user}}",
                        ),
                    ),
                    USD,
                    kind="bargauge",
                ),
            ),
        ),
    ),
)

OPERATIONS = DashboardSpec(
    uid="image-edit-operations",
    title="Image edits: routing and pipeline health",
    description=(
        "Retries, fallbacks and cooldowns of the router, the health of the tracking pipeline "
        "(ledger queue, outbox and stuck time, dropped events, callback and integration errors) "
        "and the proxy's rejections."
    ),
    rows=(
        RowSpec(
            "Routing",
            (
                PanelSpec(
                    "Retries by model and deployment",
                    "Retried upstream attempts per second.",
                    (
                        Query(
                            _rate("image_edit_retries_total", MODEL_SEL, "model, deployment"),
                            "{{model}} {{deployment}}",
                        ),
                    ),
                    REQ_PER_S,
                    width=8,
                ),
                PanelSpec(
                    "Fallbacks by route and outcome",
                    "Calls handed from one model group to another per second, and whether the "
                    "fallback answered.",
                    (
                        Query(
                            _rate(
                                "image_edit_fallbacks_total",
                                'from_model=~"$model"',
                                "from_model, to_model, outcome",
                            ),
                            "{{from_model}} → {{to_model}} {{outcome}}",
                        ),
                    ),
                    REQ_PER_S,
                    width=8,
                ),
                PanelSpec(
                    "Deployment cooldowns",
                    "Deployments put in cooldown in the time range, by model and deployment.",
                    (
                        Query(
                            "sum by (model, deployment) (increase("
                            f"image_edit_deployment_cooldowns_total{{{MODEL_SEL}}}[$__range]))",
                            "{{model}} {{deployment}}",
                        ),
                    ),
                    COUNT,
                    kind="bargauge",
                    width=8,
                ),
            ),
        ),
        RowSpec(
            "Pipeline health",
            (
                PanelSpec(
                    "Ledger queue and outbox",
                    "Events waiting to be written (queue) and rows acknowledged but not yet in "
                    "the target database (outbox), per instance. A growing outbox means the "
                    "database is unreachable or slow; nothing is lost.",
                    (
                        Query(
                            "max by (instance) (tracking_ledger_queue_depth)", "queue {{instance}}"
                        ),
                        Query(
                            "max by (instance) (tracking_ledger_outbox_rows)",
                            "outbox {{instance}}",
                        ),
                    ),
                    COUNT,
                    width=8,
                ),
                PanelSpec(
                    "Ledger stuck seconds",
                    "How long rows have waited in the local outbox with none reaching the "
                    "database (unreachable, not answering, or refusing them), per instance; "
                    "0 while nothing waits. Spend data piles up unwritten meanwhile. The red "
                    "line is the ImageEditLedgerStuck alert threshold.",
                    (
                        Query(
                            "max by (instance) (tracking_ledger_stuck_seconds)",
                            "{{instance}}",
                        ),
                    ),
                    SECONDS,
                    width=8,
                    threshold=LEDGER_STUCK_ALERT_SECONDS,
                ),
                PanelSpec(
                    "Ledger write latency p95 and replays",
                    "95th percentile of a ledger batch write, and outbox rows replayed into the "
                    "target per second (right after an outage).",
                    (
                        Query(
                            "histogram_quantile(0.95, sum by (le) "
                            "(rate(tracking_ledger_write_seconds_bucket[$__rate_interval])))",
                            "write p95",
                        ),
                        Query(
                            "sum(rate(tracking_ledger_replayed_total[$__rate_interval]))",
                            "replayed rows/s",
                        ),
                    ),
                    SECONDS,
                    width=8,
                ),
                PanelSpec(
                    "Dropped events by sink",
                    "Events dropped per second because a sink's queue was full (the ledger "
                    "never drops).",
                    (
                        Query(
                            "sum by (sink) (rate(tracking_events_dropped_total[$__rate_interval]))",
                            "{{sink}}",
                        ),
                    ),
                    REQ_PER_S,
                    width=6,
                ),
                PanelSpec(
                    "Callback errors by callback",
                    "User callbacks that raised or timed out, per second.",
                    (
                        Query(
                            "sum by (callback) "
                            "(rate(tracking_callback_errors_total[$__rate_interval]))",
                            "{{callback}}",
                        ),
                    ),
                    REQ_PER_S,
                    width=6,
                ),
                PanelSpec(
                    "Integration errors by integration",
                    "Failures a built-in integration (otel, prometheus, structlog, ledger, "
                    "stream, or a callback-list entry skipped at a call's end) caught inside "
                    "itself per second: a span not ended, a metric or log line lost. The calls "
                    "are not affected. Each integration's series starts at 0 when it is "
                    "created; a first failure of stream or of a skipped entry appears as a new "
                    "series, which the ImageEditIntegrationFailing alert fires on.",
                    (
                        Query(
                            "sum by (integration) "
                            "(rate(tracking_integration_errors_total[$__rate_interval]))",
                            "{{integration}}",
                        ),
                    ),
                    REQ_PER_S,
                    width=6,
                ),
                PanelSpec(
                    "End-user series evicted",
                    "Per-end-user series evicted from the bounded opt-in metric per second: if "
                    "this is steady, raise the limit or accept that 'Top end users' is partial.",
                    (
                        Query(
                            "sum(rate(tracking_end_user_series_evicted_total[$__rate_interval]))",
                            "evicted",
                        ),
                    ),
                    REQ_PER_S,
                    width=6,
                ),
            ),
        ),
        RowSpec(
            "Proxy",
            (
                PanelSpec(
                    "Proxy rejections by reason",
                    "Requests the proxy refused per second: auth, budget, size or rate.",
                    (
                        Query(
                            "sum by (reason) "
                            "(rate(image_edit_proxy_rejections_total[$__rate_interval]))",
                            "{{reason}}",
                        ),
                    ),
                    REQ_PER_S,
                    width=16,
                    stacked=True,
                ),
                PanelSpec(
                    "Attempts withheld by budgets",
                    "Retries and fallbacks the proxy did not make over the range: a key's or end "
                    "user's budget could not cover them, so the call ended with the failure "
                    "before them.",
                    (
                        Query(
                            "sum(increase(image_edit_proxy_withheld_attempts_total[$__range]))",
                            "withheld",
                        ),
                    ),
                    COUNT,
                    kind="stat",
                    width=8,
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (OVERVIEW, OPERATIONS)


def _targets(spec: PanelSpec) -> list[Dataquery]:
    instant = spec.kind != "timeseries"
    out = []
    for index, query in enumerate(spec.queries):
        target = Dataquery().expr(query.expr).ref_id(chr(ord("A") + index)).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        out.append(target.instant() if instant else target.range())
    return out


def _thresholds(value: float | None) -> ThresholdsConfig:
    steps = [Threshold(value=None, color="green")]
    if value is not None:
        steps.append(Threshold(value=value, color="red"))
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _panel(spec: PanelSpec, panel_id: int, pos: GridPos) -> Any:
    builder: Any
    if spec.kind == "timeseries":
        builder = (
            timeseries.Panel()
            .legend(
                VizLegendOptions()
                .show_legend(True)
                .display_mode(LegendDisplayMode.TABLE)
                .placement(LegendPlacement.BOTTOM)
                .calcs(["mean", "max", "lastNotNull"])
            )
            .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
            .fill_opacity(25 if spec.stacked else 10)
            .line_width(1)
            .min(0)
        )
        if spec.stacked:
            builder = builder.stacking(StackingConfig().mode(StackingMode.NORMAL))
        if spec.threshold is not None:
            builder = builder.thresholds_style(
                GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE)
            )
    elif spec.kind == "bargauge":
        builder = (
            bargauge.Panel()
            .orientation(VizOrientation.HORIZONTAL)
            .display_mode(BarGaugeDisplayMode.GRADIENT)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .min(0)
        )
    else:
        builder = stat.Panel().reduce_options(
            ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        )
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .grid_pos(pos)
        .thresholds(_thresholds(spec.threshold))
    )
    if spec.time_from is not None:
        builder = builder.time_from(spec.time_from)
    for target in _targets(spec):
        builder = builder.with_target(target)
    return builder


def _variables() -> list[Any]:
    datasource = DatasourceVariable("datasource").label("Data source").type("prometheus")
    model = (
        QueryVariable("model")
        .label("Model")
        .description("The model (group) the caller asked for.")
        .datasource(DATASOURCE)
        .query("label_values(image_edit_requests_total, model)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    provider = (
        QueryVariable("provider")
        .label("Provider")
        .description("The provider that served the call (openai, azure, ...).")
        .datasource(DATASOURCE)
        .query('label_values(image_edit_requests_total{model=~"$model"}, provider)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    operation = (
        CustomVariable("operation")
        .label("Operation")
        .description("What the calls did: image_edit, image_generation, or both.")
        .values(",".join(OPERATION_VALUES))
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return [datasource, model, provider, operation]


def build_dashboard(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard as the JSON-ready dict Grafana imports."""
    builder = (
        Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
    )
    for variable in _variables():
        builder = builder.with_variable(variable)
    y, panel_id = 0, 1
    for row in spec.rows:
        builder = builder.with_row(
            Row(row.title).id(panel_id).grid_pos(GridPos(h=1, w=24, x=0, y=y))
        )
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            pos = GridPos(h=panel.height, w=panel.width, x=x, y=y)
            builder = builder.with_panel(_panel(panel, panel_id, pos))
            panel_id, x, row_height = panel_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    encoded = json.dumps(builder.build(), cls=JSONEncoder)
    result: dict[str, Any] = json.loads(encoded)
    return result


def render(spec: DashboardSpec) -> str:
    """The committed file's exact text: stable key order, two-space indent, final newline."""
    return json.dumps(build_dashboard(spec), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all() -> dict[Path, str]:
    return {OUTPUT_DIR / spec.filename: render(spec) for spec in DASHBOARDS}


def main(argv: Sequence[str] | None = None) -> int:
    return write_or_check(render_all(), argv, "dashboards.build", __doc__)


def write_or_check(
    files: dict[Path, str], argv: Sequence[str] | None, module: str, doc: str | None
) -> int:
    """``python -m <module> [--check]``: write the generated files, or fail on stale ones."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed JSON is out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m {module}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
