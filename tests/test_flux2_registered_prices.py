"""FLUX.2's per-megapixel prices given by the operator, not only by a price file.

``register_prices`` (and so a config's ``prices:`` section and a deployment's ``model_info``)
refused ``per_megapixel`` (``prices:``: the start failed, "unknown field(s) per_megapixel"), or
a ``model_info`` took it without a word and billed the packaged prices: a negotiated FLUX.2 price
could not be given but through a whole price file. They now take ``first_output``, ``output`` and
``input`` as the price file does, exactly as written (a YAML float's text, never the float), and
``GET /model/info`` shows them as ``per_megapixel``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import tracking
from tests.accounts_support import asgi_request
from tests.conftest import make_png
from tests.proxy_support import MASTER_KEY
from tests.recorder import record_events
from tracking.config import load_config
from tracking.errors import ConfigurationError
from tracking.proxy.app import create_app
from tracking.testing.fake_bfl import FakeBFL

BFL_KEY = "bfl-test-key-0123456789abcdef"
ONE_MP_AND_A_BIT = make_png(1025, 1024)  # 1,049,600 pixels: 1 MP and a bit, so 2


def test_registered_per_megapixel_prices_bill_a_call_without_an_answered_cost(monkeypatch):
    tracking.register_prices(
        "black_forest_labs/flux-2-flex",
        per_megapixel={"first_output": "0.0300000000000000001", "output": "0.02", "input": 0.007},
    )
    events = record_events(monkeypatch)
    with FakeBFL(api_keys=[BFL_KEY], polls=1) as bfl:
        response = tracking.image_edit(
            image=ONE_MP_AND_A_BIT,
            prompt="p",
            model="black_forest_labs/flux-2-flex",
            extra_headers={"x-fake-fault": "code=no_cost"},
            api_base=bfl.url,
            api_key=BFL_KEY,
        )
    # the fake's result is small: its first MP alone, and 2 input MP, to the last digit
    assert response.size is not None
    assert response.cost_usd == Decimal("0.0440000000000000001")
    event = events.last
    assert (event.cost_source, event.price_ref) == (
        "custom",
        "custom:black_forest_labs/flux-2-flex",
    )


@pytest.mark.parametrize(
    "per_megapixel",
    [{"first_output": "0.03", "output": "0.01"}, {"first_output": "-1", "output": 1, "input": 1}],
)
def test_a_per_megapixel_price_needs_its_three_prices_each_a_price(per_megapixel):
    with pytest.raises(ConfigurationError, match="per_megapixel"):
        tracking.register_prices("black_forest_labs/flux-2-pro", per_megapixel=per_megapixel)


def test_config_prices_and_model_info_give_per_megapixel_prices(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: pro\n"
        "    litellm_params: {model: black_forest_labs/flux-2-pro, api_key: k,"
        " api_base: 'http://127.0.0.1:9'}\n"
        "  - model_name: klein\n"
        "    litellm_params: {model: black_forest_labs/flux-2-klein-4b, api_key: k,"
        " api_base: 'http://127.0.0.1:9'}\n"
        "    model_info: {per_megapixel: {first_output: 0.0140000000000000001, output: 0.001,"
        " input: 0.001}}\n"
        "prices:\n"
        "  black_forest_labs/flux-2-pro:\n"
        "    per_megapixel: {first_output: 0.0300000000000000001, output: 0.015, input: 0.015}\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        f"  database_url: sqlite:///{tmp_path / 'ledger.db'}\n"
        f"  image_store: {{path: '{tmp_path / 'images'}'}}\n"
    )
    app = create_app(load_config(path))  # YAML's floats, as `tracking serve` reads them
    try:
        answer = asgi_request(app, "GET", "/model/info")
    finally:
        app.accounts.store.close()
        app.dispatcher.close()  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    pro, klein = (d["model_info"] for d in answer.json()["data"])
    assert pro["per_megapixel"] == {
        "first_output": "0.0300000000000000001",
        "output": "0.015",
        "input": "0.015",
    }
    assert pro["price_ref"] == "custom:black_forest_labs/flux-2-pro"
    assert klein["per_megapixel"] == {
        "first_output": "0.0140000000000000001",
        "output": "0.001",
        "input": "0.001",
    }
    assert klein["price_ref"] == "custom:black_forest_labs/flux-2-klein-4b"
