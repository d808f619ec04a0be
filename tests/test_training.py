"""Training: recipes, typed configs, guards (pure), and the real engines on the tiny model (engine).

Engine tests share the session's tiny base and one 4-step SFT run (tests/fixtures_training.py).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from aria.domain import MEASUREMENT_KEYS
from aria.files import DataError
from aria.settings import Settings, get_settings
from training.config import (
    LANGUAGE_MODEL_LINEAR,
    RECIPES_DIR,
    language_model_lora_targets,
    parse_dpo_args,
    parse_sft_args,
    recipe_path,
)

RECIPES = sorted(RECIPES_DIR.glob("*/*.yaml"))
CPU_FLAGS = ["--use_cpu", "true"]  # GPU recipes ask for bf16 mixed precision; validate them on CPU


# --- recipes and typed configs (pure)


def test_every_profile_has_both_recipes():
    assert {(p.parent.name, p.stem) for p in RECIPES} == {
        ("tiny", "sft"),
        ("tiny", "dpo"),
        ("medgemma", "sft"),
        ("medgemma", "dpo"),
    }


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_every_recipe_loads_into_typed_configs(path: Path):
    parse = parse_sft_args if path.stem == "sft" else parse_dpo_args
    script_args, training_args, model_args = parse(
        ["--config", str(path), *CPU_FLAGS], settings=get_settings()
    )
    assert model_args.load_in_4bit and model_args.bnb_4bit_quant_type == "nf4"
    assert model_args.use_bnb_nested_quant and model_args.use_peft
    assert model_args.attn_implementation == "eager"
    assert not model_args.lora_modules_to_save
    assert set(model_args.lora_target_modules) == set(LANGUAGE_MODEL_LINEAR)
    assert "tensorboard" in training_args.report_to
    assert training_args.save_steps > 0 and training_args.eval_strategy == "steps"
    assert script_args.eval_size > 0 and script_args.parity_tolerance > 0
    if path.stem == "sft":
        assert training_args.completion_only_loss is True


def test_medgemma_recipes_are_the_seed_recipe():
    _, sft, sft_model = parse_sft_args(
        ["--config", str(recipe_path("sft", "medgemma")), *CPU_FLAGS], settings=get_settings()
    )
    assert (sft_model.lora_r, sft_model.lora_alpha) == (32, 64)
    assert sft.learning_rate == pytest.approx(2e-4) and sft.max_steps == 560
    assert sft_model.dtype == "bfloat16"
    _, dpo, dpo_model = parse_dpo_args(
        ["--config", str(recipe_path("dpo", "medgemma")), *CPU_FLAGS], settings=get_settings()
    )
    assert (dpo_model.lora_r, dpo_model.lora_alpha) == (16, 32)
    assert dpo.learning_rate == pytest.approx(2e-5) and dpo.max_steps == 135
    assert dpo.beta == pytest.approx(0.2)


def test_cli_flag_overrides_the_recipe():
    path = str(recipe_path("sft", "tiny"))
    _, training_args, model_args = parse_sft_args(
        ["--config", path, "--learning_rate", "0.123", "--lora_r", "4"], settings=get_settings()
    )
    assert training_args.learning_rate == pytest.approx(0.123)
    assert model_args.lora_r == 4


def test_no_config_flag_loads_the_active_profiles_recipe(monkeypatch):
    monkeypatch.setenv("ARIA_PROFILE", "tiny")
    monkeypatch.setenv("ARIA_DATA_DIR", "/nowhere/data")
    get_settings.cache_clear()
    try:
        script_args, training_args, model_args = parse_sft_args(
            ["--max_steps", "3"], settings=get_settings()
        )
    finally:
        get_settings.cache_clear()
    assert training_args.max_steps == 3
    assert training_args.learning_rate == pytest.approx(2e-3)  # from tiny/sft.yaml
    # Paths come from the settings, not from the recipe.
    assert model_args.model_name_or_path == "/nowhere/data/models/tiny/base"
    # The tiny recipe trains on the extended set (sft.jsonl plus fresh draws).
    assert script_args.sft_path == "/nowhere/data/training/sft_extended.jsonl"
    assert script_args.merged_dir == "/nowhere/data/models/tiny/aria-ft-sft"
    assert training_args.output_dir == "/nowhere/data/checkpoints/tiny/sft"


def test_settings_passed_in_give_the_recipe_and_the_paths(monkeypatch):
    # An entry point resolves the settings once; the parser must not read the environment again.
    monkeypatch.setenv("ARIA_PROFILE", "medgemma")
    monkeypatch.setenv("ARIA_DATA_DIR", "/elsewhere")
    get_settings.cache_clear()
    try:
        settings = Settings(aria_profile="tiny", aria_data_dir=Path("/given"))
        _, dpo, dpo_model = parse_dpo_args(["--max_steps", "2"], settings=settings)
    finally:
        get_settings.cache_clear()
    assert dpo.output_dir == "/given/checkpoints/tiny/dpo"
    assert dpo_model.model_name_or_path == "/given/models/tiny/aria-ft-sft"
    assert dpo_model.dtype == "float32"  # tiny/dpo.yaml (medgemma/dpo.yaml: bf16)


def test_modules_to_save_is_refused():
    path = str(recipe_path("sft", "tiny"))
    with pytest.raises(SystemExit, match="modules_to_save"):
        parse_sft_args(
            ["--config", path, "--lora_modules_to_save", "lm_head"], settings=get_settings()
        )


def test_lora_targets_the_language_model_only():
    pattern = language_model_lora_targets(list(LANGUAGE_MODEL_LINEAR))
    assert re.fullmatch(pattern, "model.layers.0.self_attn.q_proj")
    assert re.fullmatch(pattern, "model.language_model.layers.3.mlp.down_proj")
    assert not re.fullmatch(pattern, "model.vision_tower.encoder.layers.0.self_attn.q_proj")
    assert not re.fullmatch(pattern, "model.multi_modal_projector.mm_input_projection")
    assert not re.fullmatch(pattern, "lm_head")


@pytest.mark.parametrize(
    ("recipe_dtype", "kept"), [("float32", "float32"), ("bfloat16", "bfloat16")]
)
def test_adapter_follows_an_fp32_compute_dtype_only(recipe_dtype: str, kept: str):
    from types import SimpleNamespace

    import torch

    from training.stages import adapter_in_compute_dtype

    model = torch.nn.Linear(4, 4)
    model.weight.data = model.weight.data.to(torch.bfloat16)  # what TRL does to a QLoRA adapter
    model.bias.requires_grad_(False)
    model.bias.data = model.bias.data.to(torch.bfloat16)
    adapter_in_compute_dtype(model, SimpleNamespace(dtype=recipe_dtype))
    assert str(model.weight.dtype) == f"torch.{kept}"
    assert model.bias.dtype == torch.bfloat16  # frozen weights are left alone


# --- data and guards (pure)


def test_sft_records_keep_only_prompt_and_completion(tmp_path: Path):
    from training.train_sft import sft_record

    record = {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
        "profile": {},
        "label": "x",
        "kind": "diagnostic",
        "slice": "clear",
    }
    assert set(sft_record(record)) == {"prompt", "completion"}


def test_batches_by_kind_keeps_reports_apart_in_a_seeded_order():
    from training.train_sft import batches_by_kind, is_report

    diagnostic = {"completion": [{"role": "assistant", "content": '{"pathologie":"x"}'}]}
    report = {"completion": [{"role": "assistant", "content": "Rapport : ..."}]}
    assert (is_report(diagnostic), is_report(report)) == (False, True)
    kinds = [i % 3 == 0 for i in range(100)]  # 34 reports, 66 diagnostics
    order = batches_by_kind(kinds, 8, seed=1)
    assert sorted(order) == list(range(100))  # every row once
    batches = [order[i : i + 8] for i in range(0, 100, 8)]
    full = batches[: 34 // 8 + 66 // 8]  # the full batches come first, the two partial ones last
    assert all(len({kinds[i] for i in b}) == 1 for b in full)
    assert [kinds[b[0]] for b in full] != sorted(kinds[b[0]] for b in full)  # batches shuffled
    assert order == batches_by_kind(kinds, 8, seed=1)
    assert order != batches_by_kind(kinds, 8, seed=2)


def test_bad_sft_line_names_file_and_line(tmp_path: Path):
    from training.stages import load_splits
    from training.train_sft import sft_record

    good = {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": []}) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:2:"):
        load_splits(path, sft_record, eval_size=0, seed=0)
    no_content = {**good, "completion": [{"role": "assistant"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(no_content) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:2: .*'content' string"):
        load_splits(path, sft_record, eval_size=0, seed=0)


def test_missing_dataset_names_make_datasets(tmp_path: Path):
    from training.preflight import require_dataset

    with pytest.raises(SystemExit, match="make datasets"):
        require_dataset(tmp_path / "sft.jsonl")


def test_missing_extended_set_names_both_fixes(tmp_path: Path, monkeypatch):
    # The tiny recipe trains on sft_extended.jsonl, which imported datasets do not have.
    from training.train_sft import main

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    monkeypatch.setenv("ARIA_PROFILE", "tiny")
    monkeypatch.setenv("ARIA_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        settings = get_settings()
        args = parse_sft_args(["--model_name_or_path", str(tmp_path / "base")], settings=settings)
        with pytest.raises(SystemExit, match=r"make datasets.*--sft_file sft\.jsonl"):
            main(*args, settings)
    finally:
        get_settings.cache_clear()


def test_missing_models_name_their_make_target(tmp_path: Path, monkeypatch):
    # The fix is the given settings' profile's, whatever the environment says (medgemma here).
    from training.preflight import require_model

    monkeypatch.setenv("ARIA_PROFILE", "medgemma")
    get_settings.cache_clear()
    try:
        tiny, medgemma = Settings(aria_profile="tiny"), Settings(aria_profile="medgemma")
        with pytest.raises(SystemExit, match="make tiny-model"):
            require_model(str(tmp_path / "base"), "base", tiny)
        with pytest.raises(SystemExit, match="make convert-base"):
            require_model(str(tmp_path / "base"), "base", medgemma)
        with pytest.raises(SystemExit, match="make train-sft"):
            require_model(str(tmp_path / "aria-ft-sft"), "aria-ft-sft", tiny)
    finally:
        get_settings.cache_clear()


def test_hub_base_without_token_names_hf_token(monkeypatch):
    from training.preflight import require_model

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match="HF_TOKEN"):
            require_model("google/medgemma-4b-it-not-cached", "base", get_settings())
    finally:
        get_settings.cache_clear()


def test_vllm_pid_file_is_detected_in_the_given_settings_data_folder(tmp_path: Path, monkeypatch):
    # A deep check reads the Settings it is given, not the environment's (another folder here).
    import os

    from training.preflight import running_vllm_servers

    monkeypatch.setenv("ARIA_DATA_DIR", str(tmp_path / "environment"))
    get_settings.cache_clear()
    try:
        (tmp_path / "given" / "run").mkdir(parents=True)
        (tmp_path / "given" / "run" / "vllm-8001.pid").write_text(str(os.getpid()))
        given = Settings(aria_data_dir=tmp_path / "given")
        assert any("vllm-8001.pid" in s for s in running_vllm_servers(given))
        assert not any("vllm-8001.pid" in s for s in running_vllm_servers(get_settings()))
    finally:
        get_settings.cache_clear()


def test_merge_refuses_a_quantized_base(tmp_path: Path):
    from training.model_files import refuse_quantized_base

    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "gemma3_text", "quantization_config": {"quant_method": "bitsandbytes"}}
        )
    )
    with pytest.raises(SystemExit, match="quantized"):
        refuse_quantized_base(str(tmp_path))


def test_quick_reports_asks_the_benchmarks_report_runners(dataset_dir: Path):
    """The first N report runners alternate eval.jsonl and outside.jsonl by seeded rank, as the
    benchmark's report pass takes them, and a larger N extends a smaller one."""
    from tiny.quick_reports import report_runners

    eval_path = dataset_dir / "eval" / "eval.jsonl"
    six = report_runners(eval_path, 6, seed=0)
    assert [(it.set, it.rank) for it in six] == [
        (name, rank) for rank in range(3) for name in ("eval", "outside")
    ]
    assert [it.id for it in report_runners(eval_path, 10, seed=0)][:6] == [it.id for it in six]
    assert [it.id for it in report_runners(eval_path, 6, seed=1)] != [it.id for it in six]


def test_findings_pathology_reads_the_measurement_a_report_picks():
    """The pathology of the first key on the report's findings line, which a report that names
    the wrong pathology usually follows (docs/training.md, "What the answers teach")."""
    from aria.domain import EXAMPLE_MEASUREMENTS, label
    from aria.references import reference_report
    from tiny.quick_reports import findings_pathology

    report = reference_report(EXAMPLE_MEASUREMENTS)
    assert findings_pathology(report) == label(EXAMPLE_MEASUREMENTS)[0]
    achilles = (
        "Constats : heel_strike_index 0.80 (seuil 0.70) et dorsiflexion_max 16.0.\nvalgus_genou"
    )
    assert findings_pathology(achilles) == "Tendinite Achille"
    assert findings_pathology("Constats : rien.\nadduction_hanche 9.0") is None


def test_quick_scores_refuse_a_folder_that_is_not_a_model(dataset_dir: Path, tmp_path: Path):
    from tiny.quick_reports import QuickReportsConfig, quick_reports
    from training.quick_eval import quick_eval

    eval_path = dataset_dir / "eval" / "eval.jsonl"
    with pytest.raises(SystemExit, match=r"not a model folder .*make train-all"):
        quick_eval(tmp_path / "missing", eval_path, limit=1)
    with pytest.raises(SystemExit, match="not a model folder"):
        quick_reports(QuickReportsConfig(tmp_path, eval_path, reports=1))


def test_quick_reports_tally_counts_each_check_per_set_and_overall():
    from tiny.quick_reports import tally

    ok = {"prose": True, "names_pathology": True, "grounded": True, "passed": True}
    wrong = ok | {"names_pathology": False, "passed": False}
    counts = tally([("eval", ok), ("outside", wrong), ("eval", wrong)])
    assert counts["eval"] == {"n": 2, "prose": 2, "names_pathology": 1, "grounded": 2, "passed": 1}
    assert counts["outside"]["passed"] == 0
    assert counts["all"] == {"n": 3, "prose": 3, "names_pathology": 1, "grounded": 3, "passed": 1}


def test_quick_eval_scores_exact_match():
    from training.quick_eval import score_answers

    good = '{"pathologie": "Tendinite Achille", "confiance": "faible", "justification": "x"}'
    wrong = '{"pathologie": "Fasciite plantaire", "confiance": "faible", "justification": "x"}'
    result = score_answers([good, wrong, "not json"], [("Tendinite Achille", "faible")] * 3)
    assert result["json_valid"] == pytest.approx(2 / 3)
    assert result["exact_match"] == pytest.approx(1 / 3)
    assert result["exact_match_confiance"] == pytest.approx(2 / 3)
    assert "exact_match_by_slice" not in result
    by_slice = score_answers(
        [good, wrong, good], [("Tendinite Achille", "faible")] * 3, ["clear", "clear", "two_rules"]
    )["exact_match_by_slice"]
    assert by_slice == {"clear": pytest.approx(0.5), "two_rules": pytest.approx(1.0)}


def test_quick_eval_tells_which_confidence_was_answered_for_which():
    from training.quick_eval import score_answers

    def answer(confiance: str) -> str:
        return json.dumps(
            {"pathologie": "Tendinite Achille", "confiance": confiance, "justification": "x"}
        )

    answers = [answer("faible"), answer("faible"), answer("élevée"), "cut {", answer("modérée")]
    expected = [
        ("Tendinite Achille", c) for c in ("élevée", "élevée", "élevée", "faible", "faible")
    ]
    table = score_answers(answers, expected)["confiance_answered"]
    assert table == {"élevée": {"élevée": 1, "faible": 2}, "faible": {"modérée": 1, "null": 1}}
    assert list(table["élevée"]) == ["élevée", "faible"]  # the domain's order, invalid last


def test_quick_eval_counts_grounded_justifications():
    from aria.domain import EXAMPLE_MEASUREMENTS
    from training.quick_eval import score_answers

    def answer(value: str) -> str:
        return (
            '{"pathologie":"Lombalgie mécanique","confiance":"élevée","justification":'
            f'"Seul signal d\'alerte : inclinaison_tronc {value} (seuil 7.0)."}}'
        )

    # 9.1 is the measured trunk lean; 9.4 is a number the input does not contain.
    answers = [answer("9.1"), answer("9.4"), "not json"]
    expected = [("Lombalgie mécanique", "élevée")] * 3
    result = score_answers(answers, expected, runners=[EXAMPLE_MEASUREMENTS] * 3)
    assert result["grounded"] == pytest.approx(1 / 3)
    # Both valid answers state one alert signal, as one rule fires for the runner.
    assert result["crossings_right"] == pytest.approx(2 / 3)
    none = answer("9.1").replace(
        "Seul signal d'alerte :", "Aucun signal d'alerte ; le plus proche :"
    )
    false = score_answers([none], expected[:1], runners=[EXAMPLE_MEASUREMENTS])
    assert (false["grounded"], false["crossings_right"]) == (1.0, 0.0)
    assert "grounded" not in score_answers(answers, expected)


def test_quick_eval_scores_by_the_gap_between_the_top_two():
    from aria.domain import EXAMPLE_MEASUREMENTS, label
    from training.quick_eval import gap_bucket, gap_buckets, score_answers

    assert gap_buckets() == ["<0.03", "0.03-0.07", "0.07-0.15", ">=0.15"]
    # Trunk lean decides; the knee's valgus 2 % under it is a near tie, far under it is not.
    near = {**EXAMPLE_MEASUREMENTS, "inclinaison_tronc": 7.7, "valgus_genou": 10.8}
    wide = {**EXAMPLE_MEASUREMENTS, "inclinaison_tronc": 9.1, "valgus_genou": 5.0}
    assert label(near)[0] == label(wide)[0] == "Lombalgie mécanique"
    assert (gap_bucket(near), gap_bucket(wide)) == ("<0.03", ">=0.15")
    right = '{"pathologie":"Lombalgie mécanique","confiance":"faible","justification":"x"}'
    wrong = '{"pathologie":"Syndrome fémoro-patellaire","confiance":"faible","justification":"x"}'
    result = score_answers(
        [wrong, right, right], [("Lombalgie mécanique", "faible")] * 3, runners=[near, near, wide]
    )
    assert result["exact_match_by_gap"]["<0.03"] == {"n": 2, "exact_match": pytest.approx(0.5)}
    assert result["exact_match_by_gap"][">=0.15"] == {"n": 1, "exact_match": pytest.approx(1.0)}
    assert result["exact_match_by_gap"]["0.03-0.07"] == {"n": 0, "exact_match": None}


def test_quick_eval_opens_the_answer_as_the_seeds_schema_does():
    from aria.domain import EXAMPLE_MEASUREMENTS
    from aria.references import reference_diagnostic
    from aria.schema import FIELD_ORDERS
    from training.quick_eval import SEED_ANSWER_PREFIX

    # What guided decoding of the seed's body writes before the model picks the label.
    assert SEED_ANSWER_PREFIX == '{"pathologie":"'
    answer = reference_diagnostic(EXAMPLE_MEASUREMENTS)
    assert answer.to_json().startswith(SEED_ANSWER_PREFIX)
    starting = [o for o in FIELD_ORDERS if answer.to_json(o).startswith(SEED_ANSWER_PREFIX)]
    assert [o[0] for o in starting] == ["pathologie", "pathologie"]


# --- the engines on the tiny model


@pytest.mark.engine
def test_tiny_base_loads_with_its_tokenizer_and_template(tiny_base_model: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_base_model)
    assert model.config.model_type == "gemma3_text"
    assert model.config.hidden_size == 256 and model.config.num_hidden_layers == 4
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    assert tokenizer.tokenize("14.25") == ["1", "4", ".", "2", "5"]
    digit_pieces = [
        p for p in tokenizer.tokenize("valgus_genou 14.25 > 10.0") if any(c.isdigit() for c in p)
    ]
    assert digit_pieces == list("1425100")  # one token per digit, never a multi-digit piece
    for key in MEASUREMENT_KEYS:  # one token per measurement key
        assert len(tokenizer.tokenize(f"- {key} :")) == 3, key
    assert (
        tokenizer.decode(tokenizer("é ü 漢 ∆", add_special_tokens=False)["input_ids"]) == "é ü 漢 ∆"
    )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "bonjour"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<bos><start_of_turn>user\nbonjour<end_of_turn>\n<start_of_turn>model\n"
    eos = GenerationConfig.from_pretrained(tiny_base_model).eos_token_id
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in eos
    assert tokenizer.eos_token_id in eos


@pytest.mark.engine
def test_tiny_base_is_reproducible(tiny_base_model: Path, dataset_dir: Path, tmp_path: Path):
    from tiny.build import build_tiny_model

    again = build_tiny_model(tmp_path / "base", dataset_dir / "training" / "sft.jsonl", seed=0)
    assert (again / "tokenizer.json").read_bytes() == (
        tiny_base_model / "tokenizer.json"
    ).read_bytes()
    assert (again / "model.safetensors").read_bytes() == (
        tiny_base_model / "model.safetensors"
    ).read_bytes()


@pytest.mark.engine
def test_quick_reports_samples_and_judges_the_report_call(tiny_sft_run, dataset_dir: Path):
    """Reports sampled at the report's temperature from a merged model, judged by
    aria.verdicts.report_verdict; the same seed draws the same reports."""
    from tiny.quick_reports import QuickReportsConfig, quick_reports

    cfg = QuickReportsConfig(
        tiny_sft_run.merged, dataset_dir / "eval" / "eval.jsonl", reports=2, max_new_tokens=8
    )
    first = quick_reports(cfg)
    assert first["temperature"] == 0.3
    assert first["counts"]["all"]["n"] == 2
    assert first["counts"]["eval"]["n"] == first["counts"]["outside"]["n"] == 1
    # Eight tokens are too short for a report: each fails, and says why.
    assert first["counts"]["all"]["passed"] == 0 and len(first["failures"]) == 2
    assert all(f["problems"] for f in first["failures"])
    again = quick_reports(cfg)
    assert [f["text"] for f in again["failures"]] == [f["text"] for f in first["failures"]]
    json.dumps(first)


@pytest.mark.engine
def test_short_sft_trains_and_publishes_a_bf16_merge(tiny_sft_run):
    from safetensors import safe_open

    losses = [r["loss"] for r in _log(tiny_sft_run.merged) if "loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert tiny_sft_run.metrics["global_step"] == 4
    parity = json.loads((tiny_sft_run.merged / "merge_parity.json").read_text())
    assert parity["passed"] and parity["decisive_flips"] == 0
    assert parity["relative_logit_diff"] <= parity["tolerance"]  # a share of the logits' scale
    with safe_open(tiny_sft_run.merged / "model.safetensors", "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"torch.bfloat16"}
    assert (tiny_sft_run.merged / "loss.png").stat().st_size > 0
    assert list((tiny_sft_run.merged / "runs").rglob("events.out.tfevents.*"))
    eos = json.loads((tiny_sft_run.merged / "generation_config.json").read_text())["eos_token_id"]
    end_of_turn = json.loads((tiny_sft_run.merged / "tokenizer.json").read_text())
    eot_id = next(t["id"] for t in end_of_turn["added_tokens"] if t["content"] == "<end_of_turn>")
    assert eot_id in eos
    assert not (tiny_sft_run.merged / "adapter_config.json").exists()
    # The tiny recipe computes in fp32: its adapter is trained and saved in fp32, not TRL's bf16.
    with safe_open(tiny_sft_run.checkpoints / "adapter_model.safetensors", "pt") as f:
        adapter_dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118
    assert adapter_dtypes == {"torch.float32"}


def _log(model_dir: Path) -> list[dict]:
    return json.loads((model_dir / "training_metrics.json").read_text())["log_history"]


@pytest.mark.engine
def test_interrupted_sft_resumes_from_its_checkpoint(
    tiny_sft_run, dataset_dir: Path, tmp_path: Path
):
    from tests.fixtures_training import short_sft_argv
    from training.train_sft import main

    out = tmp_path / "checkpoints"
    shutil.copytree(tiny_sft_run.checkpoints, out)  # a run stopped after step 4
    argv = short_sft_argv(tiny_sft_run.base, dataset_dir, out, tmp_path / "merged", max_steps=6)
    settings = get_settings()
    metrics = main(*parse_sft_args(argv, settings=settings), settings)
    assert metrics["resumed_from"].endswith("checkpoint-4")
    assert metrics["global_step"] == 6
    steps = [r["step"] for r in _log(tmp_path / "merged") if "loss" in r]
    assert steps[0] == 1 and steps[-1] == 6  # history carried over, no restart at step 1 after 4
    assert steps.count(1) == 1


@pytest.mark.engine
def test_merge_that_drifts_is_not_published(tiny_sft_run, tmp_path: Path, monkeypatch):
    """A merge whose weights drift (here: corrupted after merging) is refused, nothing published."""
    import torch
    from peft.tuners.lora import LoraModel

    from training.merge import MergeParityError, merge_adapter

    real_merge = LoraModel.merge_and_unload

    def drifting_merge(self, *args, **kwargs):
        merged = real_merge(self, *args, **kwargs)
        embedding = merged.get_input_embeddings().weight
        with torch.no_grad():  # token i now scores like token i-1: every greedy choice moves
            embedding.copy_(embedding.roll(1, dims=0))
        return merged

    monkeypatch.setattr(LoraModel, "merge_and_unload", drifting_merge)
    probes = [[{"role": "user", "content": "Diagnostic en JSON."}]]
    out = tmp_path / "aria-ft-sft"
    with pytest.raises(MergeParityError, match="max \\|logit diff\\|"):
        merge_adapter(str(tiny_sft_run.base), tiny_sft_run.checkpoints, out, probes)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".aria-ft-sft")]


@pytest.mark.engine
def test_short_dpo_on_the_sft_merge(tiny_sft_run, dataset_dir: Path, tmp_path: Path):
    from tests.fixtures_training import TINY_DPO_RECIPE
    from training.train_dpo import main

    argv = [
        "--config", str(TINY_DPO_RECIPE),
        "--model_name_or_path", str(tiny_sft_run.merged),
        "--dpo_path", str(dataset_dir / "training" / "dpo.jsonl"),
        "--output_dir", str(tmp_path / "checkpoints"),
        "--merged_dir", str(tmp_path / "aria-ft-dpo"),
        "--max_steps", "2",
        "--per_device_train_batch_size", "4",
        "--eval_size", "4",
        "--per_device_eval_batch_size", "4",
        "--eval_steps", "2",
        "--save_steps", "2",
        "--logging_steps", "1",
        "--quick_eval_size", "0",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    settings = get_settings()
    metrics = main(*parse_dpo_args(argv, settings=settings), settings)
    assert metrics["global_step"] == 2
    assert metrics["merge_parity"]["passed"]
    assert (tmp_path / "aria-ft-dpo" / "model.safetensors").exists()


@pytest.mark.engine
def test_quick_eval_runs_greedy_generation(tiny_base_model: Path, dataset_dir: Path):
    from training.quick_eval import quick_eval

    result = quick_eval(
        tiny_base_model,
        dataset_dir / "eval" / "eval.jsonl",
        limit=4,
        batch_size=4,
        max_new_tokens=8,
    )
    assert result["n"] == 4 and 0.0 <= result["exact_match"] <= 1.0


@pytest.mark.engine
def test_tiny_model_accepts_the_default_serving_length(tiny_base_model: Path) -> None:
    """vLLM refuses VLLM_MAX_MODEL_LEN above the model's positions: `make serve-ft` would fail."""
    from aria.settings import Settings

    config = json.loads((tiny_base_model / "config.json").read_text())
    assert config["max_position_embeddings"] >= Settings.model_fields["vllm_max_model_len"].default


# --- the training benchmark (training/bench_training.py)


def test_config_only_bench_model_has_medgemma_4b_text_dimensions():
    """`--config-only` builds Gemma 3 4B's language model: ~3.88B parameters, one global layer in six."""
    import torch
    from transformers import Gemma3ForCausalLM

    from training.bench_training import gemma3_4b_text_config

    config = gemma3_4b_text_config()
    with torch.device("meta"):
        model = Gemma3ForCausalLM(config)
    assert 3.85e9 < sum(p.numel() for p in model.parameters()) < 3.90e9
    assert [i + 1 for i, t in enumerate(config.layer_types) if t == "full_attention"] == [
        6, 12, 18, 24, 30
    ]  # fmt: skip


@pytest.mark.engine
def test_training_bench_times_real_qlora_steps(monkeypatch, capsys, tmp_path: Path):
    """A shrunk config-only model trains a few real NF4 + LoRA steps; the JSON line comes last."""
    import training.bench_training as bench

    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    small |= {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32}
    small |= {"query_pre_attn_scalar": 32, "vocab_size": 512}
    for key, value in small.items():
        monkeypatch.setitem(bench.GEMMA3_4B_TEXT, key, value)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    cfg = bench.BenchConfig(
        profile="tiny", steps=2, warmup=1, batch_size=2, seq_len=32, completion_len=8,
        config_only=True,
    )  # fmt: skip

    result = bench.main(cfg, get_settings())

    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert (result["steps_timed"], result["batch_size"], result["seq_len"]) == (2, 2, 32)
    assert result["tokens_per_s"] == pytest.approx(2 * 32 / result["s_per_step"])
    assert result["trainable_params"] > 0 and result["peak_memory_gib"] > 0
    assert result["quantization"].startswith("nf4 4-bit")
    assert not list(tmp_path.glob("aria-bench-*"))  # its scratch folder is gone
