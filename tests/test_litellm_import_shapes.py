"""``tracking prices import`` of LiteLLM price maps: the shapes it missed.

* A model priced per image whatever its size, keyed by its name alone (LiteLLM's
  ``"recraft/recraftv3": {"mode": "image_generation", "output_cost_per_image": 0.04}``), was
  dropped: the import said "imported 0 model(s)" and wrote no entry. It is now
  ``{"standard": {"any": ...}}``, as the packaged table prices such models, and bills a call of
  any size and quality.
* An image entry the import reads no price from is named in a ``warning:`` line, not dropped
  without a word; a per-image price beside token prices (LiteLLM's Gemini entries) likewise.
* A ``mode`` of another type than text (a list) ended the command with a ``TypeError``
  traceback; it is no image mode.
"""

from __future__ import annotations

import json
import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

from tests.proxy_support import tracking_command
from tracking.pricing.litellm_import import from_litellm, is_litellm_document
from tracking.pricing.table import load_price_file, per_image_price

TODAY = date(2026, 12, 7)
SOURCE = "https://e.test/map.json"


def _import(tmp_path: Path, litellm: object) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "map.json"
    source.write_text(json.dumps(litellm))
    return subprocess.run(
        [*tracking_command(), "prices", "import", str(source), "--out", str(tmp_path / "p.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_a_model_priced_per_image_whatever_its_size_is_imported(tmp_path: Path) -> None:
    litellm = {
        "recraft/recraftv3": {
            "litellm_provider": "recraft",
            "mode": "image_generation",
            "output_cost_per_image": 0.04,
        }
    }
    done = _import(tmp_path, litellm)
    assert done.returncode == 0, done.stderr
    assert "imported 1 model(s)" in done.stdout and "recraft/recraftv3" in done.stdout
    (entry,) = load_price_file(tmp_path / "p.json")["recraft/recraftv3"]
    assert entry.per_image == {"standard": {"any": Decimal("0.04")}}
    assert not entry.tokens
    for size, quality in (("1024x1024", "high"), ("1536x1024", "low"), ("2048x2048", None)):
        assert per_image_price(entry.per_image, size, quality) == Decimal("0.04")


def test_a_per_image_price_beside_token_prices_is_left_out_with_a_warning() -> None:
    warnings: list[str] = []
    document = from_litellm(
        {
            "gemini-x-image": {
                "mode": "image_generation",
                "input_cost_per_token": 3e-07,
                "output_cost_per_image_token": 3e-05,
                "output_cost_per_image": 0.039,
            }
        },
        source=SOURCE,
        today=TODAY,
        warnings=warnings,
    )
    (entry,) = document["entries"]
    assert entry["per_image"] == {}
    assert set(entry["tokens_per_million"]) == {"input_text", "output_image"}
    assert len(warnings) == 1 and "gemini-x-image" in warnings[0]
    assert "per-image price is not imported" in warnings[0]


def test_an_image_entry_with_no_price_it_reads_is_named_in_a_warning(tmp_path: Path) -> None:
    litellm = {
        "acme-image": {"mode": "image_generation", "input_cost_per_pixel": 1e-08},
        "acme-edit": {"mode": "image_edit", "output_cost_per_image": 0.02},
    }
    done = _import(tmp_path, litellm)
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stderr and "acme-image" in done.stderr
    assert "no price this import reads" in done.stderr
    assert "imported 1 model(s)" in done.stdout and "acme-edit" in done.stdout


def test_a_mode_of_another_type_is_no_image_mode_and_no_traceback(tmp_path: Path) -> None:
    litellm = {"acme": {"mode": ["image_generation"], "output_cost_per_image": 0.04}}
    assert is_litellm_document(litellm) is False
    done = _import(tmp_path, litellm)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert "neither a tracking prices file nor a LiteLLM price map" in done.stderr
    # beside an image entry, it is skipped as any other entry of another mode
    mixed = {**litellm, "acme-2": {"mode": "image_generation", "output_cost_per_image": 0.05}}
    assert is_litellm_document(mixed) is True
    (entry,) = from_litellm(mixed, source=SOURCE, today=TODAY)["entries"]
    assert entry["model"] == "acme-2"
