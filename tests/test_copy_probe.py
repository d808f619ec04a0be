"""The copy probe of issue 18: its task cites only the prompt's values, and it runs on the tiny base."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import pytest

from aria.domain import MEASUREMENT_KEYS, PATHOLOGIES, THRESHOLD_BY_KEY, format_value
from aria.prompts import render_measurements
from tiny.copy_probe import (
    ANSWER_LEAD,
    DESCRIBE_LEAD,
    RANK_LEAD,
    CopyProbeConfig,
    copied_value,
    copy_example,
    describe_example,
    main,
    parse_args,
    pretraining_example,
    rank_example,
)


def test_copy_answers_cite_the_prompts_values_and_no_label():
    rng = random.Random(3)
    for _ in range(200):
        prompt, answer, runner = copy_example(rng)
        assert answer.startswith(ANSWER_LEAD + " ") and answer.endswith(".")
        clauses = answer[len(ANSWER_LEAD) + 1 : -1].split(" ; ")
        keys = [clause.split()[0] for clause in clauses]
        assert 1 <= len(keys) <= 4 and len(set(keys)) == len(keys)
        for clause in clauses:
            key, value = clause.split()
            assert key in MEASUREMENT_KEYS
            assert value == format_value(key, runner[key])
            assert f"- {key} : {value}" in prompt  # the prompt line the value is copied from
        assert "signal d'alerte" not in answer and "Lombalgie" not in prompt


def test_rank_answers_order_the_prompts_percents_and_name_no_label():
    rng = random.Random(4)
    close = 0
    for _ in range(200):
        prompt, answer, runner = rank_example(rng)
        assert render_measurements(runner, ranked=False) in prompt
        assert answer.startswith(RANK_LEAD + " ") and answer.endswith(".")
        keys = answer[len(RANK_LEAD) + 1 : -1].split(" > ")
        assert sorted(keys) == sorted(MEASUREMENT_KEYS)
        ratios = [runner[key] / THRESHOLD_BY_KEY[key] for key in keys]
        assert ratios == sorted(ratios, reverse=True)
        close += ratios[0] - ratios[1] < 0.05
        assert not any(pathology in prompt + answer for pathology in PATHOLOGIES)
    assert close > 20  # the top two are often within 5 points: the task is the comparison


def test_pretraining_mixes_ranking_at_its_share_and_copies_alone_without_it():
    rng = random.Random(5)
    answers = [pretraining_example(rng, 0.7)[1] for _ in range(1000)]
    ranking = sum(answer.startswith(RANK_LEAD) for answer in answers)
    assert 640 < ranking < 760
    assert all(a.startswith((RANK_LEAD, ANSWER_LEAD)) for a in answers)
    # No ranking: the very draws of the copy task, which `make tiny-pretrain` replays.
    mixed, alone = random.Random(6), random.Random(6)
    for _ in range(50):
        assert pretraining_example(mixed) == copy_example(alone)


def test_descriptions_cite_each_value_and_threshold_in_percent_order_and_no_label():
    rng = random.Random(7)
    for _ in range(200):
        prompt, answer, runner = describe_example(rng)
        assert render_measurements(runner, ranked=False) in prompt
        assert answer.startswith(DESCRIBE_LEAD + " ")
        sentences = answer[len(DESCRIBE_LEAD) + 1 :].split(". ")
        keys = [sentence.split()[0] for sentence in sentences]
        assert sorted(keys) == sorted(MEASUREMENT_KEYS)
        ratios = [runner[key] / THRESHOLD_BY_KEY[key] for key in keys]
        assert ratios == sorted(ratios, reverse=True)
        for key, sentence in zip(keys, sentences, strict=True):
            value, threshold = (
                format_value(key, runner[key]),
                format_value(key, THRESHOLD_BY_KEY[key]),
            )
            side = "au-dessus de" if runner[key] > THRESHOLD_BY_KEY[key] else "sous"
            assert sentence.rstrip(".") == f"{key} mesure {value}, {side} son seuil de {threshold}"
        assert not any(pathology in prompt + answer for pathology in PATHOLOGIES)


def test_descriptions_take_their_share_and_leave_the_ranking_mix_as_it_was():
    rng = random.Random(8)
    answers = [pretraining_example(rng, 0.5, 0.4)[1] for _ in range(1000)]
    described = sum(answer.startswith(DESCRIBE_LEAD) for answer in answers)
    ranked = sum(answer.startswith(RANK_LEAD) for answer in answers)
    assert 340 < described < 460 and 240 < ranked < 360  # 0.4, then half of the other 0.6
    # No description: the very draws of the ranking mix, so the ranking bases rebuild.
    mixed, alone = random.Random(9), random.Random(9)
    for _ in range(50):
        assert pretraining_example(mixed, 0.7, 0.0) == pretraining_example(alone, 0.7)


def test_copied_value_reads_the_first_word():
    assert copied_value(" 14.2 ; valgus_genou 3.1.") == "14.2"
    assert copied_value(" -0.5.") == "-0.5"
    assert copied_value("") == ""


def test_steps_without_an_output_folder_are_refused(tmp_path: Path):
    with pytest.raises(SystemExit, match="--out"):
        main(CopyProbeConfig(base=tmp_path, steps=2))
    assert parse_args(["--base", "b", "--steps", "3"]).steps == 3


@pytest.mark.parametrize(
    "flags",
    [
        ["--steps", "-1"],
        ["--batch-size", "0"],
        ["--probes", "0"],
        ["--learning-rate", "0"],
        ["--rank-share", "1.5"],
        ["--describe-share", "-0.1"],
    ],
)
def test_nonsense_copy_probe_flags_are_refused(flags, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--base", "b", *flags])
    assert flags[0] in capsys.readouterr().err  # the message names the flag


@pytest.mark.engine
def test_copy_pretraining_writes_a_base_that_loads(tiny_base_model: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "copy-base"
    result = main(CopyProbeConfig(base=tiny_base_model, out=out, steps=3, probes=2, batch_size=4))
    assert 0.0 <= result["copy_exact_after"] <= 1.0 and result["final_loss"] > 0
    assert json.loads((out / "copy_probe.json").read_text())["steps"] == 3
    model = AutoModelForCausalLM.from_pretrained(out)
    before = AutoModelForCausalLM.from_pretrained(tiny_base_model)
    changed = model.get_input_embeddings().weight != before.get_input_embeddings().weight
    assert bool(changed.any())  # full-parameter: the embedding moved too


@pytest.mark.engine
def test_rank_pretraining_probes_the_ranking_too(tiny_base_model: Path, tmp_path: Path):
    out = tmp_path / "rank-base"
    config = CopyProbeConfig(
        base=tiny_base_model, out=out, steps=2, probes=2, batch_size=4, rank_share=0.5
    )
    result = main(config)
    assert 0.0 <= result["rank_first_before"] <= 1.0 and 0.0 <= result["rank_first_after"] <= 1.0
    assert result["rank_share"] == 0.5
    assert "rank_first_after" not in main(CopyProbeConfig(base=tiny_base_model, probes=2))


def test_negative_copy_steps_are_refused():
    from tiny.build import parse_args as tiny_args

    assert tiny_args(["--scratch", "--copy-steps", "5"]).copy_steps == 5
    assert tiny_args(["--scratch"]).copy_steps == 0
    with pytest.raises(SystemExit):
        tiny_args(["--scratch", "--copy-steps", "-1"])


@pytest.mark.parametrize(
    "flags", [["--copy-steps", "5"], ["--sft-path", "x.jsonl"], ["--seed", "0"]]
)
def test_build_flags_without_scratch_are_refused(flags, capsys):
    from tiny.build import parse_args as tiny_args

    with pytest.raises(SystemExit):
        tiny_args(flags)
    assert "--scratch" in capsys.readouterr().err
    assert tiny_args([]).scratch is False  # plain `make tiny-model` installs the committed base


def test_pretrain_rebuilds_the_committed_base_with_its_stages():
    from tiny.build import PRETRAINED_DIR
    from tiny.build import parse_args as tiny_args
    from tiny.pretraining import PRETRAIN_COPY_STEPS, PRETRAIN_STAGES

    cfg = tiny_args(["--pretrain"])
    assert cfg.scratch and cfg.pretrain and cfg.out_dir == PRETRAINED_DIR
    # Copying alone comes first (the build's seed), ranking and describing after it.
    first, *later = PRETRAIN_STAGES
    assert first.steps == PRETRAIN_COPY_STEPS and not (first.rank_share or first.describe_share)
    assert later and all(stage.rank_share for stage in later)
    assert tiny_args(["--pretrain", "--seed", "1"]).seed == 1
    with pytest.raises(SystemExit):
        tiny_args(["--pretrain", "--copy-steps", "5"])


@pytest.mark.engine
def test_the_committed_tiny_base_installs_and_copies(tmp_path: Path, caplog):
    """`make tiny-model`: the committed base is installed as it is, and it copies a measured
    value asked by its key from held-out tables (the ability the recipe's grounding rests on)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from aria.settings import get_settings
    from tiny.build import CHECKED_FILES, PRETRAINED_DIR, TinyModelConfig
    from tiny.build import main as build_main
    from tiny.copy_probe import probe
    from tiny.pretraining import PRETRAIN_COPY_STEPS

    caplog.set_level(logging.INFO, logger="tiny.build")
    out = Path(build_main(TinyModelConfig(out_dir=tmp_path / "base"), get_settings())["path"])
    assert "installed from" in caplog.text
    for name in CHECKED_FILES:
        assert (out / name).read_bytes() == (PRETRAINED_DIR / name).read_bytes()
    build = json.loads((out / "aria_build.json").read_text())
    assert build["copy_steps"] == PRETRAIN_COPY_STEPS and build["copy_exact"] >= 0.95
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert probe(model, tokenizer, 20, seed=7) >= 0.9  # tables the build's probe never drew
    eos = GenerationConfig.from_pretrained(out).eos_token_id
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in eos


def test_a_damaged_committed_base_is_refused_and_nothing_is_installed(tmp_path: Path):
    import shutil

    from tiny.build import PRETRAINED_DIR, install_pretrained

    source = tmp_path / "tiny_base"
    shutil.copytree(PRETRAINED_DIR, source)
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # a truncated checkout
    with pytest.raises(SystemExit, match=r"model\.safetensors does not match.*make tiny-pretrain"):
        install_pretrained(tmp_path / "base", source)
    assert not (tmp_path / "base").exists()
    manifest = json.loads((source / "aria_build.json").read_text())
    del manifest["sha256"]["tokenizer.json"]  # a manifest that checks less than it should
    (source / "aria_build.json").write_text(json.dumps(manifest))
    weights.write_bytes((PRETRAINED_DIR / "model.safetensors").read_bytes())
    with pytest.raises(SystemExit, match=r"tokenizer\.json does not match"):
        install_pretrained(tmp_path / "base", source)
    (source / "aria_build.json").unlink()
    with pytest.raises(SystemExit, match=r"aria_build\.json is missing"):
        install_pretrained(tmp_path / "base", source)


@pytest.mark.engine
def test_tiny_base_built_with_copy_pretraining(
    tiny_base_model: Path, dataset_dir: Path, tmp_path: Path
):
    from safetensors.torch import load_file

    from tiny.build import build_tiny_model

    out = build_tiny_model(tmp_path / "base", dataset_dir / "training" / "sft.jsonl", 0, 2)
    build = json.loads((out / "aria_build.json").read_text())
    assert build["copy_steps"] == 2 and 0.0 <= build["copy_exact"] <= 1.0
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert build["sha256"]["model.safetensors"] == digest  # what `make tiny-model` checks
    plain = json.loads((tiny_base_model / "aria_build.json").read_text())
    assert "copy_steps" not in plain and build["parameters"] == plain["parameters"]
    pretrained = load_file(out / "model.safetensors")
    random_init = load_file(tiny_base_model / "model.safetensors")
    assert pretrained.keys() == random_init.keys()
    assert any(not (pretrained[k] == random_init[k]).all() for k in pretrained)


@pytest.mark.engine
def test_tiny_base_built_in_stages_records_each(dataset_dir: Path, tmp_path: Path):
    from tiny.build import build_tiny_model
    from tiny.pretraining import PretrainStage

    stages = (
        PretrainStage(2, seed=5),
        PretrainStage(2, seed=1, rank_share=0.5, describe_share=0.5),
    )
    out = build_tiny_model(tmp_path / "base", dataset_dir / "training" / "sft.jsonl", 0, 0, stages)
    build = json.loads((out / "aria_build.json").read_text())
    first, second = build["stages"]
    assert first["seed"] == 0 and "rank_first" not in first  # the build's seed, copying alone
    assert second["describe_share"] == 0.5 and 0.0 <= second["rank_first"] <= 1.0
    assert build["copy_steps"] == 2 and build["copy_exact"] == second["copy_exact"]
    with pytest.raises(ValueError, match="give one of them"):
        build_tiny_model(tmp_path / "other", dataset_dir / "training" / "sft.jsonl", 0, 2, stages)
    assert not (tmp_path / "other").exists()
