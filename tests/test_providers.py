"""Azure OpenAI and OpenAI-compatible providers against the fake, and the provider registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.recorder import record_events
from tracking import providers
from tracking.providers.openai import OpenAIProvider
from tracking.request import split_provider
from tracking.testing import FakeOpenAI

PNG = make_png(64, 64)
API_VERSION = "2025-04-01-preview"


@pytest.fixture
def azure(fake) -> dict[str, str]:
    """The keyword arguments that point an Azure call at the fake's deployment route."""
    return {"api_base": fake.base_url, "api_key": API_KEY, "api_version": API_VERSION}


@pytest.fixture(scope="module")
def local_server() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible server as many local ones are: its own model names, no key."""
    with FakeOpenAI(extra_models=["my-local-model"], require_key=False) as server:
        yield server


@pytest.fixture
def no_azure_env(monkeypatch):
    for name in ("AZURE_API_KEY", "AZURE_API_BASE", "AZURE_API_VERSION"):
        monkeypatch.delenv(name, raising=False)


# -- Azure -------------------------------------------------------------------------------------


def test_azure_posts_to_the_deployment_with_api_key_and_version(monkeypatch, fake, azure):
    events = record_events(monkeypatch)
    response = tracking.image_edit(
        image=PNG, prompt="a hat", model="azure/my-deployment", size="1024x1024", **azure
    )
    assert response.images_returned == 1
    sent = fake.requests[-1]
    assert sent.path == "/openai/deployments/my-deployment/images/edits"
    assert sent.query == {"api-version": API_VERSION}
    assert sent.headers["api-key"] == API_KEY
    assert "Authorization" not in sent.headers
    assert sent.fields["model"] == "my-deployment"  # as the official AzureOpenAI client sends
    event = events.last
    assert (event.provider, event.model, event.resolved_model) == (
        "azure",
        "azure/my-deployment",
        "my-deployment",
    )
    assert event.api_base == f"127.0.0.1:{fake.port}"


def test_azure_settings_come_from_the_environment(monkeypatch, fake):
    monkeypatch.setenv("AZURE_API_KEY", API_KEY)
    monkeypatch.setenv("AZURE_API_BASE", fake.base_url + "/")
    monkeypatch.setenv("AZURE_API_VERSION", "2024-10-21")
    response = tracking.image_edit(image=PNG, prompt="p", model="azure/env-deployment")
    assert response.images_returned == 1
    assert fake.requests[-1].query == {"api-version": "2024-10-21"}
    assert fake.requests[-1].path == "/openai/deployments/env-deployment/images/edits"


async def test_azure_on_the_async_path(fake, azure):
    response = await tracking.aimage_edit(image=PNG, prompt="p", model="azure/async-dep", **azure)
    assert response.images_returned == 1
    assert fake.requests[-1].headers["api-key"] == API_KEY


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("api_key", "AZURE_API_KEY"),
        ("api_base", "AZURE_API_BASE"),
        ("api_version", "AZURE_API_VERSION"),
    ],
)
def test_azure_names_the_missing_setting(no_azure_env, azure, missing, variable):
    settings = {k: v for k, v in azure.items() if k != missing}
    with pytest.raises(tracking.ConfigurationError) as caught:
        tracking.image_edit(image=PNG, prompt="p", model="azure/dep", **settings)
    assert (
        str(caught.value) == f"{missing}: not set for Azure; pass {missing}=... or set {variable}"
    )


def test_azure_wrong_key_echoed_back_is_masked(azure):
    secret = "azure-key-THIS-IS-SECRET-0042"
    with pytest.raises(tracking.AuthenticationError) as caught:
        tracking.image_edit(
            image=PNG, prompt="p", model="azure/dep", **{**azure, "api_key": secret}
        )
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert "Incorrect API key" in str(caught.value)


def test_an_azure_deployment_named_after_a_model_gets_its_rules(fake, azure):
    before = fake.hits
    with pytest.raises(tracking.ValidationError, match="size: gpt-image-1 takes"):
        tracking.image_edit(
            image=PNG, prompt="p", model="azure/gpt-image-1", size="512x512", **azure
        )
    assert fake.hits == before


def test_an_azure_deployment_of_any_other_name_gets_only_generic_checks(fake, azure):
    tracking.image_edit(image=PNG, prompt="p", model="azure/prod-images", size="777x333", **azure)
    assert fake.requests[-1].fields["size"] == "777x333"


def test_a_deployment_name_is_quoted_into_the_path(azure):
    from tracking.request import parse_call

    request, options = parse_call(image=PNG, prompt="p", model="azure/team a/images", **azure)
    prepared = providers.get_provider("azure").prepare(request, options)
    assert prepared.url == (
        f"{azure['api_base']}/openai/deployments/team%20a%2Fimages/images/edits"
        f"?api-version={API_VERSION}"
    )
    assert prepared.secrets == (API_KEY,)


def test_the_fake_refuses_an_azure_call_without_api_version(fake):
    import httpx

    answer = httpx.post(
        f"{fake.base_url}/openai/deployments/dep/images/edits",
        headers={"api-key": API_KEY},
        files={"image": ("i.png", PNG, "image/png")},
        data={"prompt": "p"},
    )
    assert answer.status_code == 404
    assert "api-version" in answer.json()["error"]["message"]


# -- OpenAI-compatible servers -----------------------------------------------------------------


def test_compatible_provider_without_a_key_sends_no_authorization(monkeypatch, local_server):
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    events = record_events(monkeypatch)
    response = tracking.image_edit(
        image=PNG,
        prompt="p",
        model="openai_compatible/my-local-model",
        api_base=local_server.url,
        size="333x777",  # unknown model: generic checks only, so its own sizes pass
        quality="ultra",
    )
    assert response.images_returned == 1
    sent = local_server.requests[-1]
    assert sent.path == "/v1/images/edits"
    assert "Authorization" not in sent.headers
    assert (sent.fields["model"], sent.fields["size"], sent.fields["quality"]) == (
        "my-local-model",
        "333x777",
        "ultra",
    )
    assert events.last.provider == "openai_compatible"


def test_compatible_provider_sends_a_key_when_given(local_server):
    tracking.image_edit(
        image=PNG,
        prompt="p",
        model="openai_compatible/my-local-model",
        api_base=local_server.url,
        api_key="local-key-123456",
    )
    assert local_server.requests[-1].headers["Authorization"] == "Bearer local-key-123456"


def test_compatible_provider_reads_its_environment(monkeypatch, local_server):
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_BASE", local_server.url)
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "env-key-987654")
    tracking.image_edit(image=PNG, prompt="p", model="openai_compatible/my-local-model")
    assert local_server.requests[-1].headers["Authorization"] == "Bearer env-key-987654"


def test_compatible_provider_never_defaults_to_openai(monkeypatch):
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_BASE", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # ignored: not this provider
    with pytest.raises(tracking.ConfigurationError, match="OPENAI_COMPATIBLE_API_BASE"):
        tracking.image_edit(image=PNG, prompt="p", model="openai_compatible/my-local-model")


def test_any_api_base_with_the_openai_provider_reaches_a_compatible_server(local_server):
    response = asyncio.run(
        tracking.aimage_edit(
            image=PNG, prompt="p", model="my-local-model", api_base=local_server.url, api_key="k"
        )
    )
    assert response.images_returned == 1
    assert local_server.requests[-1].fields["model"] == "my-local-model"


def test_a_model_name_with_slashes_goes_whole_to_a_compatible_server(local_server):
    """An unknown prefix is part of the model name, as servers like vLLM name models."""
    local = FakeOpenAI(extra_models=["org/model-x"], require_key=False)
    with local:
        tracking.image_edit(
            image=PNG, prompt="p", model="org/model-x", api_base=local.url, api_key="k"
        )
        assert local.requests[-1].fields["model"] == "org/model-x"


def test_the_fake_refuses_models_it_does_not_serve(local_server):
    with pytest.raises(tracking.NotFoundError, match="does not exist"):
        tracking.image_edit(
            image=PNG, prompt="p", model="openai_compatible/other", api_base=local_server.url
        )


# -- the registry ------------------------------------------------------------------------------


def test_choosing_a_provider_is_a_registry_lookup():
    assert split_provider("azure/dep") == ("azure", "dep")
    assert split_provider("openai_compatible/m") == ("openai_compatible", "m")
    assert split_provider("openai/gpt-image-1") == ("openai", "gpt-image-1")
    assert split_provider("gpt-image-1") == ("openai", "gpt-image-1")
    assert split_provider("org/model-x") == ("openai", "org/model-x")
    assert providers.get_provider("azure").name == "azure"
    assert providers.get_provider("openai_compatible").name == "openai_compatible"
    assert {"azure", "openai", "openai_compatible"} <= set(providers.provider_names())


def test_an_unknown_provider_lists_the_known_ones():
    with pytest.raises(tracking.ConfigurationError) as caught:
        providers.get_provider("nope")
    known = providers.provider_names()
    assert {"azure", "gemini", "openai", "openai_compatible", "stability"} <= set(known)
    assert str(caught.value) == f"unknown provider 'nope'; known providers: {', '.join(known)}"


class TaggingProvider(OpenAIProvider):
    """A real provider of a user's own: OpenAI's request plus a header of its own."""

    name = "tagging"

    def prepare(self, request, options):
        prepared = super().prepare(request, options)
        prepared.headers["x-tagged"] = request.upstream_model
        return prepared


def test_a_registered_provider_is_chosen_by_its_prefix(monkeypatch, fake, upstream):
    monkeypatch.setitem(providers._INSTANCES, "tagging", TaggingProvider())
    response = tracking.image_edit(image=PNG, prompt="p", model="tagging/gpt-image-1", **upstream)
    assert response.images_returned == 1
    assert fake.requests[-1].headers["x-tagged"] == "gpt-image-1"


class CarelessProvider(OpenAIProvider):
    """A provider of a user's own whose parser has a bug: it raises on every answer."""

    name = "careless"

    def parse(self, status, headers, body):
        return {}["data"]


def test_a_parser_fault_on_a_success_answer_is_an_estimated_unreadable_answer(
    monkeypatch, fake, upstream
):
    """The upstream answered 200 (and billed): the call failed with the parser's KeyError and
    was recorded at $0 as not billed."""
    monkeypatch.setitem(providers._INSTANCES, "careless", CarelessProvider())
    events = record_events(monkeypatch)
    sent = len(fake.requests)
    with pytest.raises(tracking.APIResponseError, match="KeyError in the careless provider") as e:
        tracking.image_edit(
            image=PNG, prompt="p", model="careless/gpt-image-2", quality="low", **upstream
        )
    assert isinstance(e.value.__cause__, KeyError)  # the fault is kept for whoever debugs it
    assert e.value.status_code == 200
    assert len(fake.requests) == sent + 1  # not retried: a retry would be billed again
    event = events.last
    assert (event.status, event.error_type, event.http_status) == (
        "failure",
        "invalid_response",
        200,
    )
    assert event.cost_source == "estimate" and event.cost_usd is not None
    assert event.cost_usd > 0


def test_a_provider_name_may_not_contain_a_slash():
    with pytest.raises(tracking.ConfigurationError, match="without '/'"):
        providers.register_provider("a/b", TaggingProvider())
