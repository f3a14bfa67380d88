"""``tracking serve`` says each note about its config's prices once as it starts.

A proxy reads its config's prices several times as it starts (the config checked, then loaded
by the app and by its router): the INFO line "model_list[0] and model_list[1] price '…'
differently" was logged four times in one start, once per read, as was "model_info: … not
used". Each is now said once per process. A real ``tracking serve`` (one worker), its output
captured from start to stop.
"""

from __future__ import annotations

from pathlib import Path

from tests.proxy_support import ProxyProcess, write_config

DIFFERENTLY = "model_list[0] and model_list[1] price 'gpt-image-2' differently"
NOT_USED = "model_list[2].model_info: output_cost_per_image not used"


def test_a_start_says_each_price_note_once(tmp_path: Path) -> None:
    never, other = "http://127.0.0.1:9", "http://127.0.0.1:10"  # never called
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": [
                {
                    "model_name": "img",
                    "litellm_params": {"model": "gpt-image-2", "api_base": never, "api_key": "k"},
                    "model_info": {"output_cost_per_image": "0.04"},
                },
                {
                    "model_name": "img",
                    "litellm_params": {"model": "gpt-image-2", "api_base": other, "api_key": "k"},
                    "model_info": {"output_cost_per_image": "0.05"},
                },
                {
                    "model_name": "tokens",
                    "litellm_params": {"model": "gpt-image-1", "api_base": never, "api_key": "k"},
                    "model_info": {
                        "output_cost_per_token": "0.00004",
                        "output_cost_per_image": "0.04",
                    },
                },
            ],
            "general_settings": {"master_key": "sk-master-notes-once"},
        },
    )
    process = ProxyProcess(config).start()
    try:
        started = process.log()
    finally:
        process.stop()
    assert "Application startup complete" in started, started
    assert started.count(DIFFERENTLY) == 1, started
    assert started.count(NOT_USED) == 1, started
