"""An SDK process exposing /metrics, driven by tests/test_dashboards.py (not a test module).

Run as ``python -m tests.prometheus_workload FAKE_URL API_KEY METRICS_PORT``. It registers the
built-in ``"prometheus"`` integration exactly as a user would, serves the integration's registry
over HTTP with prometheus_client on 127.0.0.1:METRICS_PORT, runs one round of a mixed workload
against the fake upstream and prints a JSON summary line. Each further ``round`` line on stdin
runs the same round again; ``exit`` (or end of input) stops it.

Each round, straight through the SDK: two priced successes (sync and async, different sizes and
qualities), one call to a model no price entry covers, one call with a wrong API key (401) and
one validation error. Then through a ``tracking.Router`` the integration watches
(``watch_router``: its cooldowns reported, its counters started at 0): a retry (its
deployment's fake answers one 500, then succeeds), a fallback (a group whose only deployment
always answers 500 falls back to ``gpt-image-1``) and a cooldown
(a group of two deployments, one with a revoked key: its 401 cools it down at once, and the call
is retried on the other). The faulty deployments are two more fakes inside this process, so
their faults never reach the test's own fake.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from contextlib import ExitStack
from typing import Any

from PIL import Image

import tracking
from tracking.testing import FakeOpenAI

WRONG_KEY = "sk-wrong-key-0000000000000000LEAK"
UNPRICED_MODEL = "acme-image-edit-1"  # unknown to every price table; the fake answers it
#: Model groups of the workload's router (every deployment serves the priced gpt-image-1).
PRICED_GROUP = "gpt-image-1"
FLAKY_GROUP = "flaky-gpt-image-1"  # one deployment; its fake fails once per round
DOWN_GROUP = "down-gpt-image-1"  # one deployment, always 500; falls back to PRICED_GROUP
POOL_GROUP = "pool-gpt-image-1"  # two deployments, one of them with a revoked key
REVOKED_DEPLOYMENT = "pool-revoked"
#: Long enough to keep the revoked deployment out for the rest of a round; a round waits for
#: the last one's cooldown to end, so that it cools the deployment down again.
COOLDOWN_SECONDS = 0.5
#: Calls to the pool before giving up on the router picking the revoked deployment (simple
#: shuffle picks it first with probability 1/2 per call).
MAX_POOL_CALLS = 40


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (30, 200, 30, 255)).save(out, format="PNG")
    return out.getvalue()


class Workload:
    """The SDK calls and the router, with the fakes of the faulty deployments."""

    def __init__(self, api_base: str, api_key: str, integration: Any, stack: ExitStack) -> None:
        self.api_base = api_base
        self.api_key = api_key
        self.flaky = stack.enter_context(FakeOpenAI(api_keys=[api_key]))
        down = stack.enter_context(
            FakeOpenAI(api_keys=[api_key], faults=["status=500;retry_after=0;always"])
        )

        def deployment(group: str, base: str, key: str, name: str) -> dict[str, Any]:
            return {
                "model_name": group,
                "litellm_params": {"model": "gpt-image-1", "api_base": base, "api_key": key},
                "model_info": {"id": name},
            }

        self.router = tracking.Router(
            model_list=[
                deployment(PRICED_GROUP, api_base, api_key, "main"),
                deployment(FLAKY_GROUP, self.flaky.url, api_key, "flaky"),
                deployment(DOWN_GROUP, down.url, api_key, "down"),
                deployment(POOL_GROUP, api_base, api_key, "pool-good"),
                deployment(POOL_GROUP, api_base, WRONG_KEY, REVOKED_DEPLOYMENT),
            ],
            fallbacks=[{DOWN_GROUP: [PRICED_GROUP]}],
            num_retries=1,
            cooldown_time=COOLDOWN_SECONDS,
        )
        stack.callback(self.router.close)
        self.cooldowns = 0
        integration.watch_router(self.router)  # as an SDK user would: series from 0
        self.router.cooldown_observers.append(self._cooled)

    def _cooled(self, group: str, deployment: str) -> None:
        self.cooldowns += 1

    def round(self) -> dict[str, Any]:
        image = _png()
        summary: dict[str, Any] = {
            "calls": 0,
            "successes": 0,
            "failures": 0,
            "priced": 0,
            "retries": {},
            "fallbacks": 0,
            "cooldowns": 0,
        }

        def record(response: tracking.ImageResponse | None) -> None:
            summary["calls"] += 1
            if response is None:
                summary["failures"] += 1
                return
            summary["successes"] += 1
            summary["priced"] += response.cost_usd is not None

        common = {"image": image, "prompt": "add a red hat", "user": "user-7"}
        direct = {**common, "api_base": self.api_base}
        key = self.api_key
        record(
            tracking.image_edit(
                model="gpt-image-1", size="1024x1024", quality="low", api_key=key, **direct
            )
        )
        record(
            asyncio.run(
                tracking.aimage_edit(
                    model="gpt-image-1", size="1536x1024", quality="high", api_key=key, **direct
                )
            )
        )
        record(
            tracking.image_generation(
                prompt="a red hat", model="gpt-image-1", quality="low", api_key=key,
                api_base=self.api_base, user="user-7",
            )
        )  # fmt: skip
        record(tracking.image_edit(model=UNPRICED_MODEL, api_key=key, max_retries=0, **direct))
        try:
            tracking.image_edit(model="gpt-image-1", api_key=WRONG_KEY, max_retries=0, **direct)
        except tracking.AuthenticationError:
            record(None)
        try:
            tracking.image_edit(model="gpt-image-1", n=99, api_key=key, **direct)
        except tracking.ValidationError:
            record(None)

        # A retry: one 500 (Retry-After 0), then the same deployment answers.
        hits = self.flaky.hits
        self.flaky.inject(status=500, retry_after=0, times=1)
        record(self.router.image_edit(model=FLAKY_GROUP, size="1024x1024", **common))
        assert self.flaky.hits == hits + 2, "the flaky deployment was not retried"
        summary["retries"][FLAKY_GROUP] = 1

        # A fallback: the group's only deployment fails; no retries in it, straight to the next.
        record(self.router.image_edit(model=DOWN_GROUP, max_retries=0, **common))
        summary["fallbacks"] += 1

        # A cooldown: call the pool until the router has picked the revoked deployment once.
        deadline = time.monotonic() + COOLDOWN_SECONDS + 5
        while self.router.cooling(POOL_GROUP) and time.monotonic() < deadline:
            time.sleep(0.05)  # last round's cooldown is still running
        before = self.cooldowns
        for _ in range(MAX_POOL_CALLS):
            record(self.router.image_edit(model=POOL_GROUP, quality="medium", **common))
            if self.cooldowns > before:
                break
        summary["cooldowns"] = self.cooldowns - before
        summary["retries"][POOL_GROUP] = summary["cooldowns"]  # the 401, retried on pool-good
        assert summary["cooldowns"] == 1, "the revoked deployment was never cooled down"
        return summary


def main(argv: list[str]) -> int:
    api_base, api_key, port = argv[0], argv[1], int(argv[2])
    from prometheus_client import REGISTRY, start_http_server

    from tracking.bus import resolve

    tracking.success_callback = ["prometheus"]
    integration = resolve("prometheus")
    # The integration's registry is injectable; serve whichever one it writes to.
    registry = getattr(integration, "registry", None) or REGISTRY
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with ExitStack() as stack:
            workload = Workload(api_base, api_key, integration, stack)
            print(json.dumps(workload.round()), flush=True)
            for line in sys.stdin:
                if line.strip() != "round":
                    break
                print(json.dumps(workload.round()), flush=True)
    finally:
        flush = getattr(tracking, "flush", None)  # absent until the bus grows batching
        if flush is not None:
            flush()
        server.shutdown()
        server.server_close()
        thread.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
