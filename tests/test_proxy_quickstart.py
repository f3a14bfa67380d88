"""``tracking quickstart``: the proxy tried offline, end to end, as a new user runs it."""

from __future__ import annotations

import re
import subprocess
from decimal import Decimal

from tests.proxy_support import tracking_command
from tests.services import require_tool


def test_quickstart_runs_the_seed_proxy_examples_offline():
    require_tool("curl", "curl")  # the quickstart runs the seed's curl example
    result = subprocess.run(
        [*tracking_command(), "quickstart"], capture_output=True, text=True, timeout=120
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "api_key: os.environ/OPENAI_API_KEY" in out  # the seed's config shape
    assert out.count("HTTP 200: 1 image(s), size=1024x1024") == 2  # the seed's curl, as written
    assert "GET url (no key needed): HTTP 200, image/png" in out
    assert "x-tracking-request-id=" in out
    assert "4. Spend: 3 successful call(s) through the proxy" in out
    # The ledger holds a row per call, and its total is exactly what the headers said.
    headers = [Decimal(cost) for cost in re.findall(r"cost=\$([0-9.]+)", out)]
    assert len(headers) == 3
    (row,) = [line.split() for line in out.splitlines() if line.strip().startswith("gpt-image-2 ")]
    _model, requests, failures, images, cost_usd, unpriced = row
    assert (requests, failures, images, unpriced) == ("3", "0", "3", "0")
    assert Decimal(cost_usd) == sum(headers)
