"""Vertex AI's Google Cloud project and location per deployment and per call: LiteLLM's
``litellm_params.vertex_project`` / ``vertex_location`` (and the SDK's ``vertex_project=`` /
``vertex_location=``) choose the URL a ``vertex_ai/`` call is sent to, ``os.environ/NAME``
references resolved; the environment (``VERTEXAI_PROJECT``, ``VERTEXAI_LOCATION``) is the
fallback. Before, both keys were named at start as not read and every deployment went to the
environment's one project. A value that is not a project's or a location's shape (a ``/``,
``..``, a space, a URL) is refused: it is written into the URL. A deployment with neither its own
project nor the environment's is refused at load (every call would fail).

Everything is sent over HTTP to the fake Gemini upstream (``api_base`` points at it, so the path
carries the project and location)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import tracking
from tests.conftest import make_png
from tests.forward_proxy import ForwardProxy
from tests.gemini_support import VERTEX_MODEL as MODEL
from tests.gemini_support import VERTEX_TOKEN as TOKEN
from tests.gemini_support import vertex_path as path
from tests.gemini_support import without_vertex_settings
from tests.proxy_support import ProxyProcess, write_config
from tracking import Router
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.router.deployments import deployment_id
from tracking.testing import recording
from tracking.testing.fake_gemini import FakeGemini

PROMPT = "add a red hat"
#: Values a project or a location may never be: each would change where the request goes.
HOSTILE = [
    "a/b",
    "../other-project",
    "my..project",
    "my project",
    "https://evil.example",
    "evil.example#",
    "us-central1/../x",
    "",
    "My-Project",
]

DEPLOYMENT = {"model_name": "nano", "litellm_params": {"model": MODEL, "api_key": "token-1"}}


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[TOKEN]) as server:
        yield server


@pytest.fixture
def no_project(monkeypatch: pytest.MonkeyPatch) -> None:
    without_vertex_settings(monkeypatch)


@pytest.fixture
def env_project(monkeypatch: pytest.MonkeyPatch, no_project: None) -> None:
    monkeypatch.setenv("VERTEXAI_PROJECT", "env-project")
    monkeypatch.setenv("VERTEXAI_LOCATION", "us-east5")


def deployment(gemini: FakeGemini, name: str = "nano", **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": MODEL, "api_key": TOKEN, "api_base": gemini.url, **params},
    }


def edit(router: Router) -> None:
    router.image_edit(model="nano", image=make_png(64, 64), prompt=PROMPT)


def sdk_edit(gemini: FakeGemini, **params: Any) -> None:
    """One SDK edit of ``MODEL`` sent to the fake (``params`` add to or replace its own)."""
    call = {"model": MODEL, "api_key": TOKEN, "api_base": gemini.url, **params}
    tracking.image_edit(image=make_png(64, 64), prompt=PROMPT, **call)


# -- per deployment, the environment as fallback -------------------------------------------


ENVIRONMENT = {"VERTEXAI_PROJECT": "env-project", "VERTEXAI_LOCATION": "us-east5"}


@pytest.mark.parametrize(
    ("environment", "params", "expected"),
    [
        # the deployment's own, over the environment's
        (ENVIRONMENT, {"vertex_project": "proj-a", "vertex_location": "europe-west4"},
         ("proj-a", "europe-west4")),
        (ENVIRONMENT, {"vertex_project": "proj-a"}, ("proj-a", "us-east5")),
        (ENVIRONMENT, {"vertex_location": "europe-west4"}, ("env-project", "europe-west4")),
        # the environment as fallback; GOOGLE_CLOUD_* after VERTEXAI_*
        (ENVIRONMENT, {}, ("env-project", "us-east5")),
        ({"GOOGLE_CLOUD_PROJECT": "gc-project", "GOOGLE_CLOUD_LOCATION": "asia-east1"}, {},
         ("gc-project", "asia-east1")),
        # no location anywhere: Google's global one
        ({}, {"vertex_project": "proj-a"}, ("proj-a", "global")),
    ],
)  # fmt: skip
def test_a_deployments_project_and_location_reach_the_url(
    gemini, no_project, monkeypatch, environment, params, expected
):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with Router([deployment(gemini, **params)]) as router:
        edit(router)
    assert gemini.requests[-1].path == path(*expected)


def test_os_environ_references_are_resolved(gemini, no_project, monkeypatch):
    monkeypatch.setenv("TEAM_A_PROJECT", "team-a-project")
    monkeypatch.setenv("TEAM_A_LOCATION", "asia-northeast1")
    params = {
        "vertex_project": "os.environ/TEAM_A_PROJECT",
        "vertex_location": "os.environ/TEAM_A_LOCATION",
    }
    with Router([deployment(gemini, **params)]) as r:
        edit(r)
    assert gemini.requests[-1].path == path("team-a-project", "asia-northeast1")


def test_an_unset_os_environ_reference_is_refused_at_load(gemini, no_project):
    with pytest.raises(ConfigurationError) as caught:
        Router([deployment(gemini, vertex_project="os.environ/NO_SUCH_PROJECT")]).close()
    assert "NO_SUCH_PROJECT" in caught.value.message


def test_two_deployments_of_one_model_each_send_to_their_own_project(gemini, env_project):
    """Load balancing: the same model name in two projects and locations; each call goes to
    the URL of the deployment the router chose for it, never the other's or the environment's."""
    listed = [
        deployment(gemini, vertex_project="proj-a", vertex_location="europe-west4"),
        deployment(gemini, vertex_project="proj-b", vertex_location="us-central1"),
    ]
    expected = {}
    with Router(listed) as router, recording() as recorder:
        for d in router.deployments:
            expected[d.id] = path(str(d.vertex_project), str(d.vertex_location))
        seen: dict[str, str] = {}
        for _ in range(200):  # random choice: both are chosen long before (2**-199 otherwise)
            edit(router)
            seen[recorder.events[-1].deployment_id or ""] = gemini.requests[-1].path
            if len(seen) == 2:
                break
    assert len(expected) == 2  # two ids: the project is part of the deployment's id
    assert seen == expected


def test_a_project_number_yaml_reads_as_an_integer_is_its_text(gemini, no_project):
    """``vertex_project: 123456789012`` in a YAML config is an integer: a project number."""
    config = parse_config(
        {"model_list": [deployment(gemini, vertex_project=123456789012)]}, environ={}
    )
    listed = [
        {"model_name": d.model_name, "litellm_params": d.litellm_params} for d in config.model_list
    ]
    with Router(listed) as router:
        edit(router)
        # the id the proxy names the deployment's own prices by is the router's, and the text's
        as_text = deployment(gemini, vertex_project="123456789012")
        assert router.deployments[0].id == deployment_id(listed[0]) == deployment_id(as_text)
    assert gemini.requests[-1].path == path("123456789012", "global")


def test_a_deployments_id_without_a_project_is_unchanged(gemini, no_project):
    """The id (shared cooldowns and usage in Redis are keyed by it) of a deployment without
    vertex_project or vertex_location is what it was before they were read (computed by the
    code before this change), and the router gives it the same."""
    entry = {
        "model_name": "nano",
        "litellm_params": {"model": MODEL, "api_key": "k", "api_base": "http://x"},
    }
    assert deployment_id(entry) == "0a099ae8a0b122fa"
    with_project = {
        **entry,
        "litellm_params": {**entry["litellm_params"], "vertex_project": "p-1234"},
    }
    with Router([with_project]) as router:
        assert router.deployments[0].id == deployment_id(with_project) != "0a099ae8a0b122fa"


def test_through_the_proxy_two_deployments_send_to_their_own_projects(gemini, no_project, tmp_path):
    """The proxy's config: two deployments of one model name, each its project and location
    from an ``os.environ/`` reference, none in VERTEXAI_*: each call the proxy answers reached
    the URL of the deployment its ledger row names; no start warning says the keys are unused."""
    listed = [
        deployment(
            gemini,
            vertex_project=f"os.environ/PROJECT_{team}",
            vertex_location=f"os.environ/LOCATION_{team}",
        )
        for team in ("A", "B")
    ]
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": listed,
            "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        },
    )
    env = {
        "PROJECT_A": "team-a-project",
        "LOCATION_A": "europe-west4",
        "PROJECT_B": "team-b-project",
        "LOCATION_B": "us-central1",
    }
    seen: set[str] = set()
    with ProxyProcess(config, env=env) as proxy:
        for _ in range(200):  # random choice: both are chosen long before (2**-199 otherwise)
            answer = httpx.post(
                f"{proxy.url}/v1/images/edits",
                data={"model": "nano", "prompt": PROMPT},
                files={"image": ("in.png", make_png(64, 64), "image/png")},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
            seen.add(gemini.requests[-1].path)
            if len(seen) == 2:
                break
        log = proxy.log()
    assert seen == {path("team-a-project", "europe-west4"), path("team-b-project", "us-central1")}
    assert "vertex_project" not in log and "vertex_location" not in log


# -- the SDK's own parameters --------------------------------------------------------------


def test_the_sdk_call_takes_vertex_project_and_location(gemini, env_project):
    sdk_edit(gemini, vertex_project="sdk-project", vertex_location="europe-west1")
    assert gemini.requests[-1].path == path("sdk-project", "europe-west1")


async def test_the_async_generation_takes_them_too(gemini, env_project):
    await tracking.aimage_generation(
        prompt=PROMPT,
        model=MODEL,
        api_key=TOKEN,
        api_base=gemini.url,
        vertex_project="123456789012",
    )
    assert gemini.requests[-1].path == path("123456789012", "us-east5")


def test_the_sdk_call_takes_litellms_other_names(gemini, env_project):
    """``vertex_ai_project`` / ``vertex_ai_location``, LiteLLM's other names, were a TypeError
    (unexpected keyword arguments) in an SDK call; they are the same settings."""
    sdk_edit(gemini, vertex_ai_project="alias-project", vertex_ai_location="europe-west4")
    assert gemini.requests[-1].path == path("alias-project", "europe-west4")
    sdk_edit(gemini, vertex_ai_project="same-project", vertex_project="same-project")
    assert gemini.requests[-1].path == path("same-project", "us-east5")


def refused_before_sending(gemini: FakeGemini, **params: Any) -> ConfigurationError:
    """The ConfigurationError of an SDK edit with ``params``, which sent nothing."""
    before = gemini.hits
    with pytest.raises(ConfigurationError) as caught:
        sdk_edit(gemini, **params)
    assert gemini.hits == before
    return caught.value


def test_both_names_with_different_values_are_refused_before_sending(gemini, env_project):
    error = refused_before_sending(
        gemini, vertex_ai_location="europe-west4", vertex_location="us-central1"
    )
    assert error.param == "vertex_location"
    assert "two names for one setting" in error.message
    assert refused_before_sending(gemini, vertex_ai_project="../evil").param == "vertex_project"


def test_another_providers_model_with_a_project_is_refused_before_sending(gemini, env_project):
    error = refused_before_sending(
        gemini, model="gemini/gemini-3.1-flash-image", vertex_project="proj-a"
    )
    assert error.param == "vertex_project"
    assert "vertex_ai/" in error.message


def test_another_providers_deployment_with_a_location_is_refused_at_load(gemini):
    entry = deployment(gemini, vertex_location="us-central1")
    entry["litellm_params"]["model"] = "gemini/gemini-3.1-flash-image"
    with pytest.raises(ConfigurationError) as caught:
        Router([entry]).close()
    assert "model_list[0]: litellm_params.vertex_location" in caught.value.message


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("europe-west4", "europe-west4-aiplatform.googleapis.com:443"),
        ("global", "aiplatform.googleapis.com:443"),
        ("us", "aiplatform.us.rep.googleapis.com:443"),
        ("eu", "aiplatform.eu.rep.googleapis.com:443"),
    ],
)
def test_without_api_base_the_location_chooses_the_host(no_project, monkeypatch, location, host):
    """Google's endpoints: ``https://{location}-aiplatform.googleapis.com`` for a region,
    ``https://aiplatform.googleapis.com`` for ``global``, and
    ``https://aiplatform.{us|eu}.rep.googleapis.com`` for the multi-regions ``us`` and ``eu``
    (before, ``us-aiplatform.googleapis.com``, which Google does not serve). The request goes to
    a forward proxy on loopback, which refuses the tunnel and says which host it was asked for."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        with pytest.raises(tracking.errors.APIConnectionError):
            tracking.image_edit(
                image=make_png(64, 64),
                prompt=PROMPT,
                model=MODEL,
                api_key=TOKEN,
                vertex_project="proj-a",
                vertex_location=location,
                max_retries=0,
            )
    assert proxy.tunnels == [host]


# -- hostile values ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vertex_project", "vertex_location"])
@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_is_refused_at_load(gemini, env_project, name, value):
    with pytest.raises(ConfigurationError) as caught:
        Router([deployment(gemini, **{name: value})]).close()
    assert f"model_list[0]: litellm_params.{name}: expected a Google Cloud" in caught.value.message


@pytest.mark.parametrize("name", ["vertex_project", "vertex_location"])
@pytest.mark.parametrize("value", ["a/b", "../x", "https://evil.example", "a b", True, 7.5, -1])
def test_a_hostile_value_fails_the_proxys_config(name, value):
    document = {"model_list": [{"model_name": "nano", "litellm_params": {"model": MODEL}}]}
    document["model_list"][0]["litellm_params"][name] = value
    with pytest.raises(ConfigurationError) as caught:
        parse_config(document, environ={})
    assert f"model_list[0].litellm_params.{name}: expected a Google Cloud" in caught.value.message


@pytest.mark.parametrize("name", ["vertex_project", "vertex_location"])
@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_of_a_call_is_refused_before_sending(gemini, env_project, name, value):
    before = gemini.hits
    with pytest.raises(ConfigurationError) as caught:
        sdk_edit(gemini, **{name: value})
    assert caught.value.param == name
    assert gemini.hits == before


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VERTEXAI_PROJECT", "a/b"),
        ("VERTEXAI_LOCATION", "evil.example/#"),
        ("VERTEXAI_LOCATION", "x y"),
    ],
)
def test_a_hostile_environment_value_is_refused_at_load_and_per_call(
    gemini, env_project, monkeypatch, variable, value
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        Router([deployment(gemini)]).close()
    assert f"(from {variable})" in caught.value.message
    before = gemini.hits
    with pytest.raises(ConfigurationError) as per_call:
        sdk_edit(gemini)
    assert f"(from {variable})" in per_call.value.message
    assert gemini.hits == before


# -- no project at all; the config's warnings ----------------------------------------------


def test_a_vertex_deployment_without_a_project_is_refused_at_load(no_project):
    with pytest.raises(ConfigurationError) as caught:
        Router([DEPLOYMENT]).close()
    assert "VERTEXAI_PROJECT" in caught.value.message
    assert "model_list[0]" in caught.value.message


def test_a_vertex_deployment_loads_with_the_project_in_the_environment(monkeypatch):
    monkeypatch.setenv("VERTEXAI_PROJECT", "my-project")
    with Router([DEPLOYMENT]) as router:
        assert [d.model for d in router.deployments] == ["vertex_ai/gemini-3.1-flash-image"]


def test_a_vertex_deployment_loads_with_its_own_project_and_no_environment(no_project):
    entry = {
        "model_name": "nano",
        "litellm_params": {**DEPLOYMENT["litellm_params"], "vertex_project": "my-project"},
    }
    with Router([entry]) as router:
        assert router.deployments[0].vertex_project == "my-project"


def test_the_vertex_keys_are_read_and_vertex_credentials_is_named_as_not_used():
    litellm_params = {
        "model": MODEL,
        "api_key": "token-1",
        "vertex_project": "my-project",
        "vertex_location": "us-central1",
        "vertex_credentials": "os.environ/SERVICE_ACCOUNT_JSON",
    }
    config = parse_config(
        {"model_list": [{"model_name": "nano", "litellm_params": litellm_params}]},
        environ={"SERVICE_ACCOUNT_JSON": '{"type": "service_account"}'},
    )
    found = [w for w in config.warnings if "vertex_" in w]
    assert len(found) == 1
    assert "vertex_credentials" in found[0] and "not used" in found[0]
    assert "service_account" not in found[0]  # never the credentials themselves
    assert config.model_list[0].litellm_params["vertex_project"] == "my-project"
