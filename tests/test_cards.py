"""The model card: real figures from a benchmark summary and recipe dicts, metadata the Hub parses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from aria.cards import (
    HAI_DEF_LICENSE_LINK,
    HAI_DEF_LICENSE_NAME,
    MODEL_TAGS,
    recipe_rows,
    render_model_card,
    stage_result,
)
from aria.settings import MEDGEMMA_HUB_ID, Settings
from aria.summary import read_summary
from publishing import generate_model_card

# The tiny demo's benchmark of 2026-11-30 (base and dpo): real figures, read as the script reads them.
FIXTURE = Path(__file__).parent / "fixtures" / "summary_v2.json"
SUMMARY = read_summary(FIXTURE)
DPO = SUMMARY.model_for("aria-ft-dpo")
BASE = SUMMARY.model_for("base")
RECIPES = {
    "sft": {"lora_r": 32, "lora_alpha": 64, "learning_rate": 2.0e-4, "max_steps": 560},
    "dpo": {"peft": {"lora_r": 16, "lora_alpha": 32}, "learning_rate": 2.0e-5, "beta": 0.2},
}


def render(**overrides) -> str:
    args = {
        "profile": "medgemma",
        "stage": "aria-ft-dpo",
        "base_model": MEDGEMMA_HUB_ID,
        "summary": SUMMARY,
        "recipes": RECIPES,
        "dataset_repo": "me/aria-datasets",
        "model_repo": "me/aria-ft-dpo",
    }
    return render_model_card(**(args | overrides))


def test_metadata_parses_back_with_the_base_licence_and_tags() -> None:
    data = ModelCard(render()).data
    assert data.base_model == MEDGEMMA_HUB_ID
    assert data.license == "other"
    assert data.license_name == HAI_DEF_LICENSE_NAME
    assert data.license_link == HAI_DEF_LICENSE_LINK
    assert data.language == ["fr"]
    assert data.tags == list(MODEL_TAGS)
    assert data.datasets == ["me/aria-datasets"]
    assert data.pipeline_tag == "image-text-to-text"


def test_model_index_carries_the_benchmark_figures_of_this_stage() -> None:
    data = ModelCard(render()).data
    assert data.model_name == "me/aria-ft-dpo"
    metrics = {r.metric_type: r.metric_value for r in data.eval_results}
    assert metrics["exact_match"] == pytest.approx(80.67)  # DPO, seed body: 242 of 300
    assert metrics["json_valid_rate"] == pytest.approx(100.0)
    assert metrics["latency_p50_ms"] == pytest.approx(DPO.primary.latency_ms.p50)
    assert metrics["latency_p99_ms"] == pytest.approx(DPO.primary.latency_ms.p99)
    assert {r.dataset_type for r in data.eval_results} == {"me/aria-datasets"}


def test_body_shows_the_figures_the_gate_and_the_limits() -> None:
    text = render()
    assert "80.7 %" in text and "| base | base | 0.0 %" in text  # both models, as percentages
    assert "**aria-ft-dpo** (this model)" in text
    assert "**failed**" in text
    assert "- [seed] justification_grounded_rate = 0.1367 misses >= 0.9 by 0.7633" in text
    assert "not a medical device" in text
    assert "Health AI Developer Foundations" in text


def test_recipe_values_appear_and_dpo_card_shows_both_recipes() -> None:
    text = render()
    assert "### SFT" in text and "### DPO" in text
    assert "| LoRA r | `lora_r` | 32 |" in text
    assert "| LoRA r | `peft.lora_r` | 16 |" in text
    assert "| DPO beta | `beta` | 0.2 |" in text
    sft_text = render(stage="aria-ft-sft")
    assert "### SFT" in sft_text and "### DPO" not in sft_text


def test_the_two_calls_are_exact_request_bodies() -> None:
    blocks = render().split("```json\n")[1:]
    diagnostic, report = (json.loads(b.split("```")[0]) for b in blocks[:2])
    assert diagnostic["temperature"] == 0.1 and diagnostic["max_tokens"] == 256
    assert diagnostic["response_format"]["json_schema"]["name"] == "diagnostic"
    assert report["temperature"] == 0.3 and "response_format" not in report
    # The bodies are the trained prompt's, its table ranked largest percentage first.
    for body in (diagnostic, report):
        content = body["messages"][0]["content"]
        ratios = [int(r) for r in re.findall(r"\((\d+) % du seuil\)", content)]
        assert len(ratios) == 7 and ratios == sorted(ratios, reverse=True)


def test_missing_summary_says_to_run_the_benchmark() -> None:
    text = render(summary=None)
    assert "No benchmark yet: run `make benchmark`" in text
    assert ModelCard(text).data.eval_results is None
    assert "model-index" not in yaml.safe_load(text.split("---")[1])


def test_missing_stage_in_summary_and_missing_recipe_are_said() -> None:
    summary = SUMMARY.model_copy(update={"models": [BASE]})
    text = render(summary=summary, recipes={"sft": RECIPES["sft"]})
    assert "no entry for `aria-ft-dpo`" in text
    assert "Recipe `dpo.yaml` not found" in text
    assert ModelCard(text).data.eval_results is None


def test_tiny_profile_has_no_hub_base_and_an_open_licence() -> None:
    data = ModelCard(render(profile="tiny", base_model="data/models/tiny/base")).data
    assert data.base_model is None
    assert data.license == "apache-2.0"
    assert data.pipeline_tag == "text-generation"


def test_stage_result_matches_name_then_role() -> None:
    assert stage_result(SUMMARY, "aria-ft-dpo") is DPO
    served = DPO.model_copy(update={"name": "aria-ft"})  # `make serve-ft` serves it as aria-ft
    summary = SUMMARY.model_copy(update={"models": [BASE, served]})
    assert stage_result(summary, "aria-ft-dpo") is served
    assert stage_result(SUMMARY, "aria-ft-sft") is None
    assert stage_result(None, "aria-ft-dpo") is None
    assert "| **aria-ft** (this model) | dpo | 80.7 % | 100.0 % |" in render(summary=summary)


def test_the_card_dates_its_figures() -> None:
    # The benchmark writes started_at / finished_at; the card once read keys it never wrote.
    text = render()
    assert "Figures measured on 2026-11-30 (benchmark run 20261130-152205" in text
    assert SUMMARY.finished_at in text


def test_tiny_card_states_the_measured_parameter_count() -> None:
    text = render(profile="tiny", base_model="data/models/tiny/base", base_parameters=2_615_296)
    assert "a 2,615,296-parameter Gemma 3" in text
    assert "a small Gemma 3" in render(profile="tiny", base_model="data/models/tiny/base")


def test_recipe_rows_put_known_keys_first_and_keep_unknown_ones() -> None:
    rows = recipe_rows({"zeta_custom": 1, "learning_rate": 1e-3, "lora_r": 8})
    assert [key for _, key, _ in rows] == ["lora_r", "learning_rate", "zeta_custom"]


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="aria-ft-dpo"):
        render(stage="base")


# --- the script around it, on a temp folder


def test_script_writes_the_card_and_names_the_missing_stage(tmp_path, caplog) -> None:
    settings = Settings(
        _env_file=None,
        aria_profile="tiny",
        aria_data_dir=tmp_path / "data",
        aria_reports_dir=tmp_path / "reports",
        hf_model_repo=None,
        hf_dataset_repo=None,
    )
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "sft.yaml").write_text("# SFT\nlora_r: 32\nlearning_rate: 2.0e-3\n")
    cfg = generate_model_card.CardConfig(recipes_dir=recipes)
    with pytest.raises(SystemExit, match="make train-sft"):
        generate_model_card.main(cfg, settings)

    settings.model_dir("aria-ft-sft").mkdir(parents=True)
    result = generate_model_card.main(cfg, settings)
    card = (settings.model_dir("aria-ft-sft") / "README.md").read_text()
    assert result["written"] == [str(settings.model_dir("aria-ft-sft") / "README.md")]
    assert result["skipped"] == ["aria-ft-dpo"]
    assert "| LoRA r | `lora_r` | 32 |" in card
    told = caplog.text  # what the script tells a person goes to the log, not stdout
    assert "no benchmark yet: run `make benchmark`" in told and "make train-dpo" in told

    summary_path = tmp_path / "reports" / "latest" / "summary.json"
    summary_path.parent.mkdir(parents=True)
    data = json.loads(FIXTURE.read_text())
    data["models"][1] |= {"name": "aria-ft-sft", "role": "sft"}
    summary_path.write_text(json.dumps(data))
    generate_model_card.main(generate_model_card.CardConfig("aria-ft-sft", None, recipes), settings)
    card = ModelCard.load(settings.model_dir("aria-ft-sft") / "README.md")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["exact_match"] == 80.67
    assert "Figures measured on 2026-11-30" in card.text

    summary_path.write_text(json.dumps(data | {"schema_version": 1}))
    with pytest.raises(SystemExit, match=r"schema_version 1.*make benchmark"):
        generate_model_card.main(cfg, settings)


def test_script_states_the_tiny_base_parameters_from_its_build_file(tmp_path) -> None:
    settings = Settings(
        _env_file=None,
        aria_profile="tiny",
        aria_data_dir=tmp_path / "data",
        aria_reports_dir=tmp_path / "reports",
    )
    assert generate_model_card.base_parameters(settings) is None
    settings.model_dir("base").mkdir(parents=True)
    (settings.model_dir("base") / "aria_build.json").write_text('{"parameters": 1234567}')
    assert generate_model_card.base_parameters(settings) == 1234567
