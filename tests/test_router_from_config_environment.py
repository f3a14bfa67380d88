"""``Router.from_config(path)`` and the file's ``environment_variables``.

``Router.from_config`` takes a ``config.yaml``'s path and reads it "as ``tracking serve``
does", but a file whose deployments name their key as ``os.environ/NAME`` with ``NAME`` set in
its own ``environment_variables:`` section (LiteLLM's documented way, which ``tracking serve``
exports first, the file winning over the shell) failed with "environment variable NAME is not
set". The section is now exported first, as the proxy does.

The session's fake OpenAI upstream over loopback, which accepts only the test key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tracking.errors import ConfigurationError

NAME = "QA20C_FROM_CONFIG_KEY"


def _config(folder: Path, api_base: str, value: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(
        "environment_variables:\n"
        f"  {NAME}: {value}\n"
        "model_list:\n"
        "  - model_name: images\n"
        f"    litellm_params: {{model: gpt-image-1, api_key: os.environ/{NAME}, "
        f"api_base: {api_base}}}\n"
    )
    return path


def test_a_key_named_in_the_files_own_environment_is_found_and_used(tmp_path, fake, monkeypatch):
    monkeypatch.setenv(NAME, "sk-the-shells-stale-key")  # the file wins, as in tracking serve
    router = tracking.Router.from_config(_config(tmp_path, fake.url, API_KEY))
    answer = router.image_edit(model="images", prompt="a hat", image=make_png(16, 16))
    assert answer.images_returned == 1  # the fake accepts only the file's key
    assert tracking.Router.from_config(str(tmp_path / "config.yaml")).groups["images"]


def test_a_fault_in_the_section_names_it(tmp_path, fake, monkeypatch):
    monkeypatch.setenv(NAME, "unused")
    path = _config(tmp_path, fake.url, "[not, text]")
    with pytest.raises(ConfigurationError, match=rf"environment_variables\.{NAME}: expected text"):
        tracking.Router.from_config(path)
