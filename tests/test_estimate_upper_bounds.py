"""An estimate of a GPT image call errs high, never low: what a billed call with no readable
usage is recorded at, and what the proxy's budgets hold before a call is sent.

``xhigh`` and ``max`` (the 2.5 and 2.6 models) have no output token count on OpenAI's pages; they
were estimated with ``high``'s 7,024 tokens at 1024x1024, half of what the bundled fake upstream
bills for ``max`` (so a budget's hold was below the bill it settled into). They are now bounded
at 1.5 and 2 times ``high``'s, above the figures a secondary source gives for 2.5 Flare. A size
smaller than 1024x1024 was scaled below the 1024x1024 image's count, though OpenAI's own figures
are not proportional to the area (1536x1024 is 5,488 tokens at high, 1024x1024 7,024); and a 2.6
``low`` image, which uses "3-4 times the tokens of 2.5", was estimated at 200.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import tracking
from tests.accounts_support import accounts_config, edit, generate, ledger_env
from tests.conftest import make_png
from tests.proxy_support import ProxyProcess
from tracking.pricing import estimate_call_cost, reset_prices
from tracking.pricing.estimate import estimate_max_cost
from tracking.testing import FakeOpenAI, recording

FLARE_25 = "gpt-image-2.5-flare"
FLARE_26 = "gpt-image-2.6-flare"
PROMPT = "make it blue"


def _tokens(count: int) -> Decimal:
    """``count`` image output tokens at the $30 per 1M tokens of every model here."""
    return Decimal(count) * 30 / 1_000_000


@pytest.mark.parametrize(
    ("model", "quality", "tokens"),
    [
        (FLARE_25, "xhigh", 10_536),
        (FLARE_25, "max", 14_048),
        (FLARE_26, "max", 14_048),
        (FLARE_26, "low", 784),
        (FLARE_25, "low", 200),
        (FLARE_26, "medium", 1767),
    ],
)
def test_the_estimate_of_one_1024_image(model, quality, tokens):
    cost = estimate_call_cost(model, "1024x1024", quality)
    assert cost.source == "estimate" and cost.usd == _tokens(tokens)


#: Output tokens of one 1024x1024 image, as secondary sources give them: 2.5 Flare's
#: (s-anand.net's table, after cellcog.ai, 2026-09-26) and 2.6's, whose low and medium use
#: "3-4 times the tokens of 2.5" and high and above the same (LaoZhang's 2.6 page).
PUBLISHED = {
    FLARE_25: {"low": 196, "medium": 439, "high": 1756, "xhigh": 3122, "max": 7024},
    FLARE_26: {"low": 4 * 196, "medium": 4 * 439, "high": 1756, "xhigh": 3122, "max": 7024},
}


def test_the_estimate_is_above_every_published_count():
    for model, counts in PUBLISHED.items():
        for quality, tokens in counts.items():
            estimate = estimate_call_cost(model, "1024x1024", quality).usd
            assert estimate is not None and estimate >= _tokens(tokens), (model, quality)


def test_a_size_smaller_than_1024_is_never_estimated_below_the_1024_image():
    assert estimate_call_cost("gpt-image-2", "1024x640", "high").usd == _tokens(7024)
    assert estimate_call_cost(FLARE_25, "1024x640", "max").usd == _tokens(14_048)


def test_an_auto_quality_takes_the_dearest_the_model_takes():
    assert estimate_call_cost(FLARE_25, "1024x1024", "auto").usd == _tokens(14_048)
    assert estimate_call_cost("gpt-image-2", "2048x2048", "auto").usd == _tokens(4 * 7024)


CASES = [
    (model, quality, size)
    for model, qualities in (
        ("gpt-image-2", ("low", "medium", "high", "auto")),
        (FLARE_25, ("low", "medium", "high", "xhigh", "max", "auto")),
        (FLARE_26, ("low", "high", "xhigh", "max")),
    )
    for quality in qualities
    for size in ("1024x1024", "1024x640", "2048x1152", "auto")
]


@pytest.mark.parametrize(("model", "quality", "size"), CASES)
def test_the_worst_case_a_budget_holds_covers_the_bill(fake, upstream, model, quality, size):
    """What the proxy reserves before a call (``estimate_max_cost``) against what the fake
    upstream then bills for it (its usage, priced)."""
    image = make_png(64, 64)
    params = {"prompt": PROMPT, "quality": quality, "size": size, "image": image, "n": 1}
    with recording() as events:
        response = tracking.image_edit(model=model, **params, **upstream)  # type: ignore[arg-type]
    hold = estimate_max_cost(model, params)
    assert events.last.cost_source == "usage" and response.cost_usd is not None
    assert hold is not None and hold >= response.cost_usd, (hold, response.cost_usd)


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("estimate-bounds")
    url = f"sqlite:///{folder / 'ledger.db'}"
    config = accounts_config(folder, fake.url, url, models=(FLARE_25,))
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def test_a_budget_refuses_a_max_call_it_could_not_pay_before_sending(proxy, fake, client):
    """$0.30 held a max call at $0.21 and let it through; the fake billed $0.42 for it."""
    key = generate(client, proxy.url, max_budget="0.30", key_alias="max-quality")["key"]
    hits = fake.hits
    answer = edit(client, proxy.url, key, model=FLARE_25, quality="max")
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"]["code"] == "budget_exceeded"
    assert fake.hits == hits
    # a call the budget can pay goes through
    assert edit(client, proxy.url, key, model=FLARE_25, quality="low").status_code == 200


@pytest.mark.parametrize(
    ("quality", "tokens"), [("medium", 1767), ("high", 7024), ("auto", 7024), (None, 7024)]
)
def test_a_quality_a_per_image_table_leaves_out_is_estimated_by_its_tokens(
    quality: str | None, tokens: int
) -> None:
    """Per-image prices registered for ``low`` alone beside token prices: a ``high`` call was
    estimated at ``low``'s listed price (the listed qualities' dearest), 35 times too low; it is
    estimated by its output tokens at 1024x1024, as if no table listed any quality. ``auto`` (or
    no quality) may be made at ``high``: it is the dearer of the listed price and ``high``'s
    tokens (it was ``low``'s $0.006 until 2026-12-07)."""
    model = "house-image-partial-table"
    tracking.register_prices(
        model,
        tokens_per_million={"input_text": "5", "input_image": "8", "output_image": "30"},
        per_image={"low": {"1024x1024": "0.006"}},
    )
    try:
        listed = estimate_call_cost(model, "1024x1024", "low")
        asked = estimate_call_cost(model, "1024x1024", quality)
    finally:
        reset_prices()
    assert listed.usd == Decimal("0.006")
    assert asked.usd == _tokens(tokens) and asked.source == "estimate"


def test_auto_with_every_quality_listed_keeps_the_listed_maximum() -> None:
    """A per-image table listing each quality the family takes prices ``auto`` at its dearest
    listed price, not at the tokens' bound."""
    model = "house-image-full-table"
    tracking.register_prices(
        model,
        tokens_per_million={"input_text": "5", "input_image": "8", "output_image": "30"},
        per_image={
            "low": {"1024x1024": "0.006"},
            "medium": {"1024x1024": "0.05"},
            "high": {"1024x1024": "0.19"},
        },
    )
    try:
        auto = estimate_call_cost(model, "1024x1024", "auto")
    finally:
        reset_prices()
    assert auto.usd == Decimal("0.19")
