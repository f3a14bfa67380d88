"""A proxy reads its config's prices once as it starts, not four times.

``tracking serve`` read them for its own check
(:func:`tracking.proxy.prices.register_config_prices`), again for the router it builds to check
the config, again for the app's router, and a fourth time when the app started (registering
them, and the prices file, a second time). What each read says was said as often: the prices
file's warning about an entry that leaves out the packaged entry's prices came twice in one
start. Now one process reads them once: the routers are given the prices read, and a start
finds them registered already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.accounts_support import edit
from tests.conftest import API_KEY
from tests.price_files import write_prices_file
from tests.proxy_support import ProxyProcess, write_config

WARNING = "the prices file's entry for gpt-image-1 replaces the packaged one whole"
#: The note of two deployments of one model priced differently (logged once per read before the
#: notes were kept from repeating; once per start either way).
NOTE = "price 'openai/house-image-1' differently"


def _config(folder: Path, api_base: str) -> Path:
    prices = write_prices_file(folder, "gpt-image-1", {"low": {"1024x1024": "0.011"}})
    house = {"model": "openai/house-image-1", "api_key": API_KEY, "api_base": api_base}
    document: dict[str, Any] = {
        "model_list": [
            {
                "model_name": "gpt-image-1",
                "litellm_params": {
                    "model": "gpt-image-1",
                    "api_key": API_KEY,
                    "api_base": api_base,
                },
            },
            *(
                {"model_name": "house", "litellm_params": house, "model_info": info}
                for info in (
                    {"id": "a", "output_cost_per_image": "0.02"},
                    {"id": "b", "output_cost_per_image": "0.03"},
                )
            ),
        ],
        "general_settings": {"prices_file": str(prices)},
    }
    return write_config(folder / "config.yaml", document)


def test_one_start_reads_the_prices_once(fake: Any, client: httpx.Client, tmp_path: Path) -> None:
    with ProxyProcess(_config(tmp_path, fake.url)) as proxy:
        answer = edit(client, proxy.url, None, model="gpt-image-1")
        assert answer.status_code == 200, answer.text
        # priced by the prices file, as it was registered at start
        assert answer.headers["x-tracking-response-cost"] == "0.011"
        log = proxy.log()
    assert log.count(WARNING) == 1, log
    assert log.count(NOTE) == 1, log


def test_each_worker_reads_them_once(fake: Any, client: httpx.Client, tmp_path: Path) -> None:
    """``--workers 2``: the command's check, then each worker's start: three reads."""
    with ProxyProcess(_config(tmp_path, fake.url), workers=2) as proxy:
        assert edit(client, proxy.url, None, model="gpt-image-1").status_code == 200
        log = proxy.log()
    assert log.count(WARNING) == 3, log


def test_prices_are_registered_again_once_the_table_changed(tmp_path: Path) -> None:
    """Read once while nothing changes the price table; registered again after it changed
    (``reset_prices``, another registration), never left out."""
    from tracking.config import load_config
    from tracking.pricing import billing_entry, register_prices, reset_prices
    from tracking.proxy.prices import model_list_prices_of, register_config_prices

    config = load_config(_config(tmp_path, "http://127.0.0.1:9/v1"))
    try:
        assert register_config_prices(config) == 2
        read = model_list_prices_of(config)
        assert model_list_prices_of(config) is read  # not read again
        assert register_config_prices(config) == 2
        reset_prices()
        assert billing_entry("openai/house-image-1@a") is None
        assert register_config_prices(config) == 2
        assert billing_entry("openai/house-image-1@a") is not None
        register_prices("some-model", per_image={"any": {"any": "0.01"}})
        assert model_list_prices_of(config) is not read  # the table changed: read again
    finally:
        reset_prices()
