"""Money written in ``config.yaml`` is the amount written, never the nearest binary float.

YAML reads ``999999999.99999999`` as a float, 1000000000.0, and the proxy took the whole proxy's
budget (``litellm_settings.max_budget``) and every price (``input_cost_per_token``,
``output_cost_per_image``, a ``prices:`` entry) from that float: a budget or a price of more than
about 15 significant digits was rounded. The config's loader now keeps each float's text beside
it (:class:`tracking.decimals.WrittenFloat`) and money is read from the text; other numbers
(timeouts, sizes in MB) are the floats they were. A hostile amount (``.nan``, ``.inf``, a
negative, ``1.0e+999999``) is a :class:`~tracking.errors.ConfigurationError` naming its key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import tracking
from tests.accounts_support import edit, ledger_env
from tests.conftest import API_KEY, make_png
from tests.proxy_support import ProxyProcess
from tracking.config import load_config
from tracking.errors import ConfigurationError
from tracking.pricing import billing_entry, reset_prices
from tracking.proxy.prices import register_config_prices
from tracking.testing import EventRecorder

MODEL = "acme-image-edit-1"  # served by the session's fake upstream, with no packaged price


@pytest.fixture(autouse=True)
def clean_prices() -> Iterator[None]:
    yield
    reset_prices()


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _deployment(params: str = "", info: str = "", api_base: str = "http://127.0.0.1:9/v1") -> str:
    return (
        "model_list:\n"
        "  - model_name: acme\n"
        f"    litellm_params: {{model: openai/{MODEL}, api_key: {API_KEY}, api_base: {api_base}"
        f"{', ' + params if params else ''}}}\n"
        f"    model_info: {{{info}}}\n"
    )


def test_the_proxy_budget_is_the_amount_written(tmp_path: Path) -> None:
    config = load_config(
        _written(
            tmp_path / "config.yaml",
            _deployment(params="timeout: 12.5")
            + "litellm_settings: {max_budget: 999999999.9999999999}\n"
            + "general_settings: {max_request_size_mb: 0.5}\n",
        )
    )
    assert config.litellm_settings.max_budget == Decimal("999999999.9999999999")
    # a number that is no money is the float it always was
    assert config.model_list[0].litellm_params["timeout"] == 12.5
    assert config.general_settings.max_request_bytes == 512 * 1024


def test_prices_are_the_amounts_written(tmp_path: Path) -> None:
    per_token = "0.0000000123456789012345678"  # 18 significant digits
    per_image = "0.012345678901234567891"  # 20
    config = load_config(
        _written(
            tmp_path / "config.yaml",
            _deployment(
                params=f"input_cost_per_token: {per_token}",
                info=f"output_cost_per_image: {per_image}",
            )
            + "prices:\n"
            + "  other-model: {per_image: {any: {1024x1024: 0.100000000000000000001}}}\n",
        )
    )
    register_config_prices(config)
    entry = billing_entry(f"openai/{MODEL}")
    assert entry is not None
    assert entry.tokens["input_text"] == Decimal(per_token) * 1_000_000
    assert entry.per_image == {"any": {"any": Decimal(per_image)}}
    other = billing_entry("other-model")
    assert other is not None
    assert other.per_image["any"]["1024x1024"] == Decimal("0.100000000000000000001")


def test_a_call_costs_the_price_written(tmp_path: Path, fake: Any) -> None:
    per_image = "0.012345678901234567891"
    config = load_config(
        _written(
            tmp_path / "config.yaml",
            _deployment(info=f"output_cost_per_image: {per_image}", api_base=fake.url),
        )
    )
    register_config_prices(config)
    recorder = EventRecorder()
    tracking.success_callback = [recorder]
    try:
        tracking.image_edit(
            model=f"openai/{MODEL}",
            prompt="a hat",
            image=make_png(16, 16),
            api_key=API_KEY,
            api_base=fake.url,
            n=2,
        )
    finally:
        tracking.success_callback = []
    (event,) = recorder.events
    assert (event.cost_usd, event.cost_source) == (Decimal(per_image) * 2, "custom")


@pytest.mark.parametrize(
    ("written", "fault"),
    [
        (".nan", "must be a finite amount"),
        (".inf", "must be a finite amount"),
        ("-.inf", "must be a finite amount"),
        ("-0.5", "must be at least 0, got -0.5"),
        ("1.0e+999999", "must be a finite amount from 0 to 1000000000 USD"),
        ("1000000000.0000000001", "must be a finite amount from 0 to 1000000000 USD"),
        ('"1e999999"', "must be a finite amount from 0 to 1000000000 USD"),
        ('"1e99999999999999999999999"', "expected an amount in USD"),
        ("0.12345678901", "at most 10 decimal places"),
        ("1.0e-999999", "at most 10 decimal places"),
        ("[1]", "expected an amount in USD"),
    ],
)
def test_a_hostile_budget_is_refused_naming_its_key(
    tmp_path: Path, written: str, fault: str
) -> None:
    path = _written(tmp_path / "config.yaml", f"litellm_settings: {{max_budget: {written}}}\n")
    with pytest.raises(ConfigurationError) as refused:
        load_config(path)
    assert f"litellm_settings.max_budget: {fault}" in refused.value.message


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("params", "model_list[0].litellm_params.input_cost_per_token"),
        ("info", "model_list[0].model_info.output_cost_per_token"),
        ("image", "model_list[0]: register_prices('openai/acme-image-edit-1').per_image.any.any"),
    ],
)
@pytest.mark.parametrize(
    "written", [".nan", ".inf", "-1.5", "1.0e+999999", '"1e999999"', "1.0e-999999", '"x"']
)
def test_a_hostile_price_is_refused_naming_its_key(
    tmp_path: Path, where: str, key: str, written: str
) -> None:
    if where == "params":
        text = _deployment(params=f"input_cost_per_token: {written}")
    elif where == "info":
        text = _deployment(info=f"output_cost_per_token: {written}")
    else:
        text = _deployment(info=f"output_cost_per_image: {written}")
    config = load_config(_written(tmp_path / "config.yaml", text))
    with pytest.raises(ConfigurationError) as refused:
        register_config_prices(config)
    assert f"{key}: " in refused.value.message


def _spent_before(url: str, amount: Decimal) -> None:
    """The ledger on PostgreSQL, migrated, with one earlier call of ``amount``."""
    from tracking.integrations.sql._migrate import upgrade

    engine = sa.create_engine(url)
    try:
        upgrade(engine)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO spend_logs (request_id, call_type, status, model, n, "
                    "images_returned, cost_usd, cost_source, start_time, end_time, latency_ms, "
                    "attempts, retries) VALUES ('earlier-call', 'image_edit', 'success', "
                    ":model, 1, 1, :cost, 'custom', :now, :now, 1.0, 1, 0)"
                ),
                {"model": f"openai/{MODEL}", "cost": amount, "now": now},
            )
    finally:
        engine.dispose()


#: The budget: 17 significant digits, which a float does not hold (it is 1000000000.0).
BUDGET = Decimal("999999999.99999999")
#: The price of one image, and so the most a call of one image may cost.
PRICE = Decimal("0.04")


@pytest.mark.parametrize(("left", "status"), [(PRICE, 200), (PRICE - Decimal("1e-8"), 429)])
def test_the_proxy_budget_is_enforced_to_the_amount_written_on_postgresql(
    fake: Any, client: httpx.Client, tmp_path: Path, postgres_url: str, left: Decimal, status: int
) -> None:
    """A call that fits in what is left of the budget as written is served; one a hundred
    millionth of a dollar over it is refused (a budget read as the float 1000000000.0 served
    it)."""
    _spent_before(postgres_url, BUDGET - left)
    document = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_key": API_KEY,
                    "api_base": fake.url,
                },
                "model_info": {"output_cost_per_image": "PRICE"},
            }
        ],
        "litellm_settings": {"max_budget": "BUDGET", "success_callback": ["sql"]},
        "general_settings": {"database_url": postgres_url, "auto_migrate": True},
    }
    text = json.dumps(document).replace('"BUDGET"', str(BUDGET)).replace('"PRICE"', str(PRICE))
    config = _written(tmp_path / "config.yaml", text)
    with ProxyProcess(config, env=ledger_env(postgres_url)) as proxy:
        answer = edit(client, proxy.url, None, model=MODEL)
    assert answer.status_code == status, answer.text
    if status == 429:
        message = answer.json()["error"]["message"]
        assert "$0.0400 does not fit in the $0.03999999 left (of $999999999.99999999)" in message


def test_the_sdk_router_reads_a_config_file_to_the_amount_written(
    tmp_path: Path, fake: Any
) -> None:
    """``Router.from_config`` takes the path of a ``config.yaml`` and reads it as ``tracking
    serve`` does: a price of 20 significant digits is the amount written, where the mapping
    of ``yaml.safe_load`` would hold the nearest binary float."""
    per_image = "0.012345678901234567891"
    path = _written(
        tmp_path / "config.yaml",
        _deployment(info=f"output_cost_per_image: {per_image}", api_base=fake.url),
    )
    router = tracking.Router.from_config(path)
    recorder = EventRecorder()
    tracking.success_callback = [recorder]
    try:
        router.image_edit(model="acme", prompt="a hat", image=make_png(16, 16))
    finally:
        tracking.success_callback = []
    (event,) = recorder.events
    assert (event.cost_usd, event.cost_source) == (Decimal(per_image), "custom")
    # a str path is read too, and a fault in the file names the file
    assert tracking.Router.from_config(str(path)).groups["acme"]
    broken = _written(tmp_path / "broken.yaml", "model_list: [\n")
    with pytest.raises(ConfigurationError, match=r"broken\.yaml"):
        tracking.Router.from_config(broken)
