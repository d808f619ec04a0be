"""The multimodal twin of MedGemma and its conversion into the text-only base (make convert-base)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny.twin import HUB_VISION_PREFIX, HUB_WEIGHT_PREFIXES, IMAGE_TOKENS


@pytest.fixture(scope="module")
def medgemma_twin(tiny_base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma3ForConditionalGeneration laid out like google/medgemma-4b-it."""
    from tiny.twin import build_twin

    return build_twin(tmp_path_factory.mktemp("twin") / "medgemma-twin", tiny_base_model, seed=0)


@pytest.fixture(scope="module")
def converted_twin(medgemma_twin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The twin converted by make convert-base's code into a text-only base."""
    from training.convert_base import convert_base

    out = tmp_path_factory.mktemp("converted") / "base"
    convert_base(str(medgemma_twin), out)
    return out


def test_twin_is_saved_like_the_hubs_medgemma(medgemma_twin: Path):
    from safetensors import safe_open
    from transformers import AutoTokenizer, Gemma3ForConditionalGeneration

    config = json.loads((medgemma_twin / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForConditionalGeneration"]
    assert config["model_type"] == "gemma3" and "vision_config" in config
    with safe_open(str(medgemma_twin / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith(HUB_WEIGHT_PREFIXES) for k in keys)
    assert any(k.startswith(HUB_VISION_PREFIX) for k in keys)
    assert any(k.startswith("language_model.model.layers.") for k in keys)
    tokenizer = AutoTokenizer.from_pretrained(medgemma_twin)
    for name, token in IMAGE_TOKENS.items():
        assert getattr(tokenizer, name) == token
        assert (
            tokenizer.convert_tokens_to_ids(token) == config[name.replace("token", "token_index")]
        )
    assert tokenizer.chat_template
    for name in ("processor_config.json", "preprocessor_config.json"):
        assert (
            json.loads((medgemma_twin / name).read_text())["processor_class"] == "Gemma3Processor"
        )
    _, info = Gemma3ForConditionalGeneration.from_pretrained(
        medgemma_twin, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_conversion_is_text_only_with_logits_parity(tiny_base_model: Path, converted_twin: Path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    report = json.loads((converted_twin / "conversion.json").read_text())
    parity = report["parity"]
    assert parity["passed"] and parity["max_abs_logit_diff"] <= 1e-3 and parity["positions"] > 100
    assert parity["dtype"] == "float32" and report["dtype"] == "bfloat16"
    config = json.loads((converted_twin / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and "vision_config" not in config
    with safe_open(str(converted_twin / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("model.") and "vision" not in k for k in keys)
    assert report["parameters_dropped"] > 0
    # The twin's language model is the tiny base's: the conversion gives it back unchanged.
    converted, text_base = (
        load_file(converted_twin / "model.safetensors"),
        load_file(tiny_base_model / "model.safetensors"),
    )
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(converted[name], text_base[name])
    embed = "model.embed_tokens.weight"
    assert torch.equal(converted[embed][: text_base[embed].shape[0]], text_base[embed])
    tokenizer = AutoTokenizer.from_pretrained(converted_twin)
    assert tokenizer.chat_template
    eos = json.loads((converted_twin / "generation_config.json").read_text())["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in eos
    assert "vision tower" in (converted_twin / "README.md").read_text()
    assert "processor_class" not in json.loads(
        (converted_twin / "tokenizer_config.json").read_text()
    )


def test_the_converted_base_carries_no_sampling_defaults_into_vllm(
    medgemma_twin: Path, converted_twin: Path
):
    """vLLM applies generation_config.json's sampling values as request defaults: MedGemma's
    do_sample / top_k 64 / top_p 0.95 must not reach the served model; the stop ids must."""
    from transformers import GenerationConfig

    from tiny.twin import MEDGEMMA_SAMPLING

    source = json.loads((medgemma_twin / "generation_config.json").read_text())
    assert {k: source[k] for k in MEDGEMMA_SAMPLING} == MEDGEMMA_SAMPLING
    converted = json.loads((converted_twin / "generation_config.json").read_text())
    assert not set(converted) & {"do_sample", "top_k", "top_p", "temperature"}
    assert set(source["eos_token_id"]) <= set(converted["eos_token_id"])
    # What vLLM reads as request defaults: the values that differ from transformers' defaults.
    diff = GenerationConfig.from_pretrained(converted_twin).to_diff_dict()
    assert not {k for k in diff if not k.endswith("token_id") and k != "transformers_version"}


def test_conversion_that_drifts_is_not_published(medgemma_twin: Path, tmp_path: Path, monkeypatch):
    from training import convert_base as module

    real = module.language_model_weights

    def drifted(model):
        weights = real(model)
        norm = "model.norm.weight"
        weights[norm] = weights[norm] + 0.05
        return weights

    monkeypatch.setattr(module, "language_model_weights", drifted)
    with pytest.raises(module.ConversionParityError, match="conversion parity failed"):
        module.convert_base(str(medgemma_twin), tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_a_text_only_source_is_refused(tiny_base_model: Path, tmp_path: Path):
    from training.convert_base import convert_base

    with pytest.raises(SystemExit, match="not a multimodal Gemma 3"):
        convert_base(str(tiny_base_model), tmp_path / "base")


def test_training_refuses_a_multimodal_base(medgemma_twin: Path):
    from aria.settings import get_settings
    from training.preflight import require_model

    with pytest.raises(SystemExit, match="make convert-base"):
        require_model(str(medgemma_twin), "base", get_settings())


def test_medgemma_base_is_the_converted_folder(monkeypatch, tmp_path: Path):
    from aria import settings as settings_module
    from training.preflight import require_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARIA_PROFILE", "medgemma")
    monkeypatch.delenv("ARIA_BASE_SOURCE", raising=False)
    settings_module.get_settings.cache_clear()
    try:
        s = settings_module.get_settings()
        assert s.stage_model("base") == "data/models/medgemma/base"
        assert s.base_source() == "google/medgemma-4b-it"
        with pytest.raises(SystemExit, match="make convert-base"):
            require_model(s.stage_model("base"), "base", s)
        monkeypatch.setenv("ARIA_BASE_SOURCE", "/models/medgemma-4b-it")
        assert settings_module.Settings().base_source() == "/models/medgemma-4b-it"
    finally:
        settings_module.get_settings.cache_clear()


def test_grammar_audit_reads_medgemmas_layout(medgemma_twin: Path):
    """The audit MedGemma needs before serving runs on its class and layout (the vocabulary size
    is in text_config there): every answer's tokens pass xgrammar's mask."""
    from serve import grammar_audit

    assert "text_config" in json.loads((medgemma_twin / "config.json").read_text())
    result = grammar_audit.audit_model(medgemma_twin)
    assert result.answers == (18 + grammar_audit.AUDIT_RUNNERS) * 7
    assert result.ok, [m.line() for m in result.masked[:5]]
