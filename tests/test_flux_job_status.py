"""A FLUX job status that is not a text is an unusable answer (a QA pass's finding).

The poll's ``status`` was looked up in sets of known states: an object or a list
(``{"status": {"state": "Ready"}}``) raised ``TypeError: unhashable`` out of the SDK, recorded as
our own fault, and the proxy answered 500. It is now an ``APIResponseError``: the job was
accepted, so it is estimated and not submitted again, and the proxy answers 502.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import edit_either, make_png
from tests.recorder import record_events
from tests.scripted_upstream import Reply, ScriptedUpstream, scripted_upstream
from tracking.errors import APIResponseError

PNG = make_png(64, 64)
STATUSES: dict[str, Any] = {
    "an object": {"state": "Ready"},
    "a list": ["Pending"],
    "an empty object": {},
    "a number": 5,
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("case", sorted(STATUSES))
def test_a_status_that_is_not_a_text_is_unusable_and_the_job_estimated(
    monkeypatch, upstream, case, use_async
):
    events = record_events(monkeypatch)
    upstream.reply = Reply({"id": "job-1", "status": STATUSES[case]})
    before = len(upstream.received)
    with pytest.raises(APIResponseError, match="status"):
        edit_either(use_async, image=PNG, user="alice", **upstream.params("flux", max_retries=2))
    assert len(upstream.received) == before + 1  # submitted once: the job is billed
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.cost_source == "estimate" and event.cost_usd == Decimal("0.04")
    assert event.end_user == "alice"
