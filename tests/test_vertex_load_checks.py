"""Vertex AI deployments, as a ``Router`` and ``tracking serve`` load them:

- one with no access token (no ``api_key``, no ``VERTEX_ACCESS_TOKEN``) is refused at load, as
  one with no project is; before, it loaded and every call failed (the proxy answered each with a
  500 ``configuration_error``);
- the multi-region locations ``us`` and ``eu`` are sent to Google's multi-region hosts,
  ``aiplatform.us.rep.googleapis.com`` / ``aiplatform.eu.rep.googleapis.com``, the path keeping
  ``locations/us``; before, to ``us-aiplatform.googleapis.com``, a host Google does not serve;
- LiteLLM's other names ``vertex_ai_project`` / ``vertex_ai_location`` are read as
  ``vertex_project`` / ``vertex_location``; before, they were not read (and named as unknown).

Calls go over HTTP to the fake Gemini upstream (``api_base`` points at it); the host a call
without ``api_base`` goes to is seen through a forward proxy in
``tests/test_vertex_project_setting.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import make_png
from tests.gemini_support import VERTEX_MODEL as MODEL
from tests.gemini_support import VERTEX_TOKEN as TOKEN
from tests.gemini_support import vertex_path as path
from tests.gemini_support import without_vertex_settings
from tests.proxy_support import ProxyProcess, serve_once, write_config
from tracking import Router
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.router.deployments import deployment_id
from tracking.testing.fake_gemini import FakeGemini

PROMPT = "add a red hat"


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[TOKEN]) as server:
        yield server


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Vertex AI setting in the environment."""
    without_vertex_settings(monkeypatch)


@pytest.fixture
def project_only(monkeypatch: pytest.MonkeyPatch, bare: None) -> None:
    """A project in the environment, no access token."""
    monkeypatch.setenv("VERTEXAI_PROJECT", "env-project")


def entry(gemini: FakeGemini | None = None, **params: Any) -> dict[str, Any]:
    """A ``vertex_ai/`` deployment, sent to the fake when given; ``params`` add to its own."""
    base = {"api_base": gemini.url} if gemini is not None else {}
    return {"model_name": "nano", "litellm_params": {"model": MODEL, **base, **params}}


def edit(router: Router) -> None:
    router.image_edit(model="nano", image=make_png(64, 64), prompt=PROMPT)


def proxy_config(tmp_path, listed: list[dict[str, Any]]):
    return write_config(
        tmp_path / "config.yaml",
        {
            "model_list": listed,
            "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        },
    )


def proxy_edit(proxy: ProxyProcess) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "nano", "prompt": PROMPT},
        files={"image": ("in.png", make_png(64, 64), "image/png")},
        timeout=120,
    )


# -- no access token: refused at load -------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_a_deployment_without_an_access_token_is_refused_at_load(
    gemini, project_only, monkeypatch, token
):
    """No ``api_key`` and no (or an empty) ``VERTEX_ACCESS_TOKEN``: every call would fail, so
    the router refuses the deployment, naming the key and what to set; nothing is sent."""
    if token is not None:
        monkeypatch.setenv("VERTEX_ACCESS_TOKEN", token)
    before = gemini.hits
    with pytest.raises(ConfigurationError) as caught:
        Router([entry(gemini)]).close()
    message = caught.value.message
    assert message.startswith("model_list[0]: litellm_params.api_key: not given")
    assert "VERTEX_ACCESS_TOKEN" in message
    assert gemini.hits == before


def test_an_access_token_no_header_can_carry_is_refused_at_load(project_only, monkeypatch):
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", "ya29.token\n")
    with pytest.raises(ConfigurationError) as caught:
        Router([entry()]).close()
    assert "litellm_params.api_key" in caught.value.message
    assert "(from VERTEX_ACCESS_TOKEN)" in caught.value.message
    assert "ya29" not in caught.value.message  # never the token itself


def test_tracking_serve_refuses_a_deployment_without_an_access_token(project_only, tmp_path):
    """Before, the proxy started and answered every call to the deployment with a 500
    (``configuration_error``, "the proxy is misconfigured"); now it does not start: exit status
    2 and one line naming the deployment's key and the variable."""
    config = proxy_config(tmp_path, [entry()])
    done = serve_once(config, tmp_path)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr + done.stdout
    assert "model_list[0]: litellm_params.api_key: not given" in done.stderr
    assert "VERTEX_ACCESS_TOKEN" in done.stderr


def test_the_token_from_the_environment_loads_and_is_sent(gemini, project_only, monkeypatch):
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", TOKEN)
    with Router([entry(gemini)]) as router:
        edit(router)
    sent = gemini.requests[-1]
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.path == path("env-project", "global")


def test_the_deployments_own_token_needs_no_environment(gemini, project_only, monkeypatch):
    monkeypatch.setenv("TEAM_TOKEN", TOKEN)
    with Router([entry(gemini, api_key="os.environ/TEAM_TOKEN")]) as router:
        edit(router)
    assert gemini.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"


# -- the multi-regions us and eu ------------------------------------------------------------


@pytest.mark.parametrize("location", ["us", "eu"])
def test_a_multi_region_keeps_its_location_in_the_path(gemini, bare, location):
    listed = [entry(gemini, api_key=TOKEN, vertex_project="proj-a", vertex_location=location)]
    with Router(listed) as router:
        edit(router)
    assert gemini.requests[-1].path == path("proj-a", location)


# -- LiteLLM's other names: vertex_ai_project, vertex_ai_location ----------------------------


def test_the_alias_names_choose_the_url(gemini, bare):
    listed = [
        entry(gemini, api_key=TOKEN, vertex_ai_project="proj-a", vertex_ai_location="europe-west4")
    ]
    with Router(listed) as router:
        edit(router)
        assert router.deployments[0].vertex_project == "proj-a"
        assert router.deployments[0].vertex_location == "europe-west4"
    assert gemini.requests[-1].path == path("proj-a", "europe-west4")


def test_an_alias_and_its_name_with_one_value_are_one_setting(gemini, bare):
    """The same value under both names (a project number as an integer under one) loads, as the
    same deployment, with the same id, as the name alone gives."""
    both = entry(gemini, api_key=TOKEN, vertex_project="123456789012")
    both["litellm_params"]["vertex_ai_project"] = 123456789012
    alias = entry(gemini, api_key=TOKEN, vertex_ai_project="123456789012")
    name = entry(gemini, api_key=TOKEN, vertex_project="123456789012")
    ids = set()
    for listed in (both, alias, name):
        with Router([listed]) as router:
            ids.add(router.deployments[0].id)
            assert router.deployments[0].id == deployment_id(listed)
    assert len(ids) == 1


@pytest.mark.parametrize(
    ("alias", "name", "values"),
    [
        ("vertex_ai_project", "vertex_project", ("proj-a", "proj-b")),
        ("vertex_ai_location", "vertex_location", ("us-central1", "europe-west4")),
    ],
)
def test_an_alias_beside_its_name_with_another_value_is_refused(gemini, bare, alias, name, values):
    listed = entry(gemini, api_key=TOKEN, vertex_project="proj-a", **{alias: values[1]})
    listed["litellm_params"][name] = values[0]
    with pytest.raises(ConfigurationError) as caught:
        Router([listed]).close()
    message = caught.value.message
    assert message.startswith(f"model_list[0]: litellm_params.{alias} {values[1]!r}")
    assert f"litellm_params.{name} {values[0]!r}" in message


@pytest.mark.parametrize("alias", ["vertex_ai_project", "vertex_ai_location"])
@pytest.mark.parametrize("value", ["a/b", "https://evil.example", "My-Project"])
def test_a_hostile_alias_value_is_refused_named_as_written(gemini, bare, alias, value):
    with pytest.raises(ConfigurationError) as caught:
        Router([entry(gemini, api_key=TOKEN, vertex_project="proj-a", **{alias: value})]).close()
    assert f"model_list[0]: litellm_params.{alias}: expected a Google Cloud" in caught.value.message
    document = {"model_list": [entry(api_key=TOKEN, **{alias: value})]}
    with pytest.raises(ConfigurationError) as in_config:
        parse_config(document, environ={})
    assert f"litellm_params.{alias}: expected a Google Cloud" in in_config.value.message


def test_an_alias_on_another_providers_model_is_refused(gemini, bare):
    listed = entry(gemini, api_key=TOKEN, vertex_ai_location="us-central1")
    listed["litellm_params"]["model"] = "gemini/gemini-3.1-flash-image"
    with pytest.raises(ConfigurationError) as caught:
        Router([listed]).close()
    assert "vertex_ai/" in caught.value.message


def test_the_alias_names_are_read_by_the_proxys_config_without_a_warning():
    config = parse_config(
        {"model_list": [entry(api_key=TOKEN, vertex_ai_project="p-1234", vertex_ai_location="us")]},
        environ={},
    )
    assert not [w for w in config.warnings if "vertex_" in w]


def test_through_the_proxy_the_alias_names_reach_the_url(gemini, bare, tmp_path):
    """``tracking serve`` with ``os.environ/`` references under the alias names and nothing in
    VERTEXAI_*: the call the proxy answers reached the deployment's project and multi-region."""
    listed = [
        entry(
            gemini,
            api_key="os.environ/TEAM_TOKEN",
            vertex_ai_project="os.environ/TEAM_PROJECT",
            vertex_ai_location="eu",
        )
    ]
    env = {"TEAM_TOKEN": TOKEN, "TEAM_PROJECT": "team-project"}
    with ProxyProcess(proxy_config(tmp_path, listed), env=env) as proxy:
        answer = proxy_edit(proxy)
        log = proxy.log()
    assert answer.status_code == 200, answer.text
    assert gemini.requests[-1].path == path("team-project", "eu")
    assert "vertex_ai_project" not in log and "vertex_ai_location" not in log
