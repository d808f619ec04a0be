"""The datasets: determinism, balance, slices, leakage, references, DPO errors, realism, import, card.

Pure and fast: no engine. `dataset_dir` (tests/fixtures_data.py) generates the default sets once.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path

import pytest

from aria.domain import (
    CONFIDENCES,
    EXAMPLE_MEASUREMENTS,
    MEASUREMENT_KEYS,
    PATHOLOGIES,
    deciding_evidence,
    exceedances,
    fired_rules,
    label,
    runner_up,
)
from aria.files import read_jsonl
from aria.population import (
    HARD_SLICE_WEIGHTS,
    NEAR_THRESHOLD_MAX_EXCEEDANCE,
    PAIN_LOCATIONS,
    SLICES,
    balanced_plan,
    canonical_measurements,
    is_physical,
    sample_measurements,
    slice_counts,
    slice_of,
)
from aria.prompts import REPORT_TEMPLATE, render_prompt
from aria.records import (
    REJECTION_KINDS,
    VALIDATORS,
    check_no_leakage,
    dataset_stats,
    grounded_numbers,
    ungrounded_numbers,
    validate_dpo_record,
    validate_eval_record,
    validate_sft_record,
)
from aria.references import reference_justification, reference_report
from aria.schema import FIELD_ORDER, FIELD_ORDERS, parse_diagnostic
from aria.settings import Settings
from aria.verdicts import cited_numbers, grounding
from preparation import copy_datasets
from preparation.generate_dataset_card import render_dataset_card, size_category
from preparation.generate_datasets import (
    EXTENDED_REPORT_SHARE,
    GenerateConfig,
    build_datasets,
    parse_args,
)
from preparation.generate_datasets import main as generate

SETTINGS = Settings(_env_file=None)  # every call below names its out_dir
SMALL = {"n_sft": 96, "n_dpo": 48, "n_eval": 48, "n_sft_extended": 120}


def _load(data_dir: Path) -> tuple[list[dict], list[dict], list[dict]]:
    return (
        read_jsonl(data_dir / "training" / "sft.jsonl", validate_sft_record),
        read_jsonl(data_dir / "training" / "dpo.jsonl", validate_dpo_record),
        read_jsonl(data_dir / "eval" / "eval.jsonl", validate_eval_record),
    )


@pytest.fixture(scope="module")
def datasets(dataset_dir: Path) -> tuple[list[dict], list[dict], list[dict]]:
    return _load(dataset_dir)


@pytest.fixture(scope="module")
def population() -> list[dict]:
    rng = random.Random(3)
    return [sample_measurements(rng, t, s) for t, s in balanced_plan(1200)]


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    files = (
        "training/sft.jsonl",
        "training/sft_extended.jsonl",
        "training/dpo.jsonl",
        "eval/eval.jsonl",
        "eval/outside.jsonl",
        "training/stats.json",
    )
    generate(GenerateConfig(seed=5, out_dir=tmp_path / "a", **SMALL), SETTINGS)
    generate(GenerateConfig(seed=5, out_dir=tmp_path / "b", **SMALL), SETTINGS)
    generate(GenerateConfig(seed=6, out_dir=tmp_path / "c", **SMALL), SETTINGS)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / files[0]).read_bytes() != (tmp_path / "c" / files[0]).read_bytes()


def test_default_sizes(datasets) -> None:
    sft, dpo, evaluation = datasets
    assert len(sft) == 1500 and len(dpo) == 420 and len(evaluation) >= 300
    reports = sum(r["kind"] == "report" for r in sft)
    assert 0.10 <= reports / len(sft) <= 0.14


def test_extended_sft_is_sft_plus_fresh_records(tmp_path: Path) -> None:
    generate(
        GenerateConfig(seed=5, out_dir=tmp_path / "small", **{**SMALL, "n_sft_extended": 216}),
        SETTINGS,
    )
    generate(
        GenerateConfig(seed=5, out_dir=tmp_path / "none", **{**SMALL, "n_sft_extended": 0}),
        SETTINGS,
    )
    read = lambda d, f: read_jsonl(tmp_path / d / "training" / f, validate_sft_record)  # noqa: E731
    sft, extended = read("small", "sft.jsonl"), read("small", "sft_extended.jsonl")
    assert len(extended) == 216 and extended[: len(sft)] == sft
    extra = extended[len(sft) :]
    # Reports in their own share: the tiny model learns to write one from them.
    assert sum(r["kind"] == "report" for r in extra) == round(len(extra) * EXTENDED_REPORT_SHARE)
    hard = Counter(r["slice"] for r in extra)
    assert hard["two_rules"] > hard["clear"]  # HARD_SLICE_WEIGHTS
    # Its size changes nothing else, and every extra runner is new.
    for f in ("training/sft.jsonl", "training/dpo.jsonl", "eval/eval.jsonl", "eval/outside.jsonl"):
        assert (tmp_path / "small" / f).read_bytes() == (tmp_path / "none" / f).read_bytes(), f
    assert read("none", "sft_extended.jsonl") == sft
    keys = [canonical_measurements(r["profile"]) for r in extended]
    assert len(set(keys)) == len(keys)


def test_extended_report_share_changes_the_extra_runners_only(tmp_path: Path) -> None:
    base = {**SMALL, "n_sft_extended": 216}
    generate(
        GenerateConfig(seed=5, out_dir=tmp_path / "half", extended_report_share=0.5, **base),
        SETTINGS,
    )
    generate(GenerateConfig(seed=5, out_dir=tmp_path / "default", **base), SETTINGS)
    extended = read_jsonl(
        tmp_path / "half" / "training" / "sft_extended.jsonl", validate_sft_record
    )
    extra = extended[SMALL["n_sft"] :]
    assert sum(r["kind"] == "report" for r in extra) == round(len(extra) * 0.5)
    for f in ("training/sft.jsonl", "training/dpo.jsonl", "eval/eval.jsonl", "eval/outside.jsonl"):
        assert (tmp_path / "half" / f).read_bytes() == (tmp_path / "default" / f).read_bytes(), f
    stats = json.loads((tmp_path / "half" / "training" / "stats.json").read_text(encoding="utf-8"))
    assert "--extended-report-share 0.5" in stats["generation"]["command"]


def test_extended_report_share_must_be_a_share(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--extended-report-share", "24"])
    assert "(--extended-report-share) must be a share in [0, 1], got 24" in capsys.readouterr().err
    with pytest.raises(ValueError, match="extended_report_share"):
        GenerateConfig(extended_report_share=-0.1)  # from Python too, before any file is written


def test_answers_teach_every_field_order_the_seeds_most(datasets) -> None:
    sft, dpo, _ = datasets
    answers = [r["completion"][0]["content"] for r in sft if r["kind"] == "diagnostic"]
    orders = Counter(tuple(json.loads(text)) for text in answers)
    assert set(orders) == set(FIELD_ORDERS)
    assert 0.4 < orders[FIELD_ORDER] / len(answers) < 0.6  # CANONICAL_ORDER_SHARE
    for r in dpo:  # a pair shares its order: it differs in content only
        if r["rejection_kind"] != "invalid_json":
            chosen, rejected = (json.loads(r[k][0]["content"]) for k in ("chosen", "rejected"))
            assert list(chosen) == list(rejected)


def test_outside_runners_are_another_process_balanced_over_slices(tmp_path: Path) -> None:
    generate(GenerateConfig(seed=5, out_dir=tmp_path, **{**SMALL, "n_outside": 40}), SETTINGS)
    outside = read_jsonl(tmp_path / "eval" / "outside.jsonl", validate_eval_record)
    assert [r["id"] for r in outside] == [f"outside-{i:04d}" for i in range(1, 41)]
    assert Counter(r["slice"] for r in outside) == {s: 10 for s in SLICES}
    for r in outside:
        assert set(r["profile"]) == set(MEASUREMENT_KEYS)  # no context: not a drawn runner
        assert (r["label"], r["confidence"]) == label(r["profile"])
    training = read_jsonl(tmp_path / "training" / "sft_extended.jsonl")
    training += read_jsonl(tmp_path / "training" / "dpo.jsonl")
    check_no_leakage(training, outside)


# --- balance and slices --------------------------------------------------------------------


def test_labels_are_balanced_in_every_split(datasets) -> None:
    sft, dpo, evaluation = datasets
    stats = dataset_stats(sft, dpo, evaluation)
    for split, counts in stats["label"].items():
        assert set(counts) == set(PATHOLOGIES)
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)


def test_every_slice_and_confidence_is_present(datasets) -> None:
    sft, dpo, evaluation = datasets
    for records in (sft, dpo, evaluation):
        assert {r["slice"] for r in records} == set(SLICES)
        assert {r["confidence"] for r in records} == set(CONFIDENCES)
    for pathology in PATHOLOGIES:  # every label in every slice of the eval set
        slices = {r["slice"] for r in evaluation if r["label"] == pathology}
        assert slices == set(SLICES), pathology


def test_slice_counts_take_other_weights_and_refuse_bad_ones() -> None:
    assert slice_counts(100, HARD_SLICE_WEIGHTS) == {
        "clear": 20,
        "near_threshold": 25,
        "two_rules": 30,
        "none_fire": 25,
    }
    with pytest.raises(ValueError, match="summing to 1"):
        slice_counts(10, {**HARD_SLICE_WEIGHTS, "clear": 0.5})


def test_slice_counts_follow_the_weights() -> None:
    assert sum(slice_counts(61).values()) == 61
    assert slice_counts(100) == {
        "clear": 40,
        "near_threshold": 25,
        "two_rules": 20,
        "none_fire": 15,
    }


def test_slices_mean_what_they_say(datasets) -> None:
    sft, dpo, evaluation = datasets
    near_sides = set()
    for r in sft + dpo + evaluation:
        measurements, fired = r["profile"], fired_rules(r["profile"])
        top = exceedances(measurements)[r["label"]]
        if r["slice"] == "clear":
            assert fired == [r["label"]] and top > NEAR_THRESHOLD_MAX_EXCEEDANCE
        elif r["slice"] == "near_threshold":
            assert abs(top) <= NEAR_THRESHOLD_MAX_EXCEEDANCE and fired in ([], [r["label"]])
            assert r["confidence"] == "faible"
            near_sides.add(bool(fired))
        elif r["slice"] == "two_rules":
            assert len(fired) == 2 and r["label"] in fired and r["confidence"] != "élevée"
        else:
            assert fired == [] and r["confidence"] == "faible"
    assert near_sides == {True, False}  # just above and just below the threshold


# --- leakage -------------------------------------------------------------------------------


def test_no_eval_runner_in_training(datasets) -> None:
    sft, dpo, evaluation = datasets
    train = {canonical_measurements(r["profile"]) for r in sft + dpo}
    assert not any(canonical_measurements(r["profile"]) in train for r in evaluation)
    assert len({r["id"] for r in evaluation}) == len(evaluation)


def test_leakage_check_raises() -> None:
    rng = random.Random(0)
    measurements = sample_measurements(rng, PATHOLOGIES[0], "clear")
    twin = {**measurements, "age": 70}  # same measurements, other context: still the same case
    with pytest.raises(ValueError, match="leak"):
        check_no_leakage([{"profile": measurements}], [{"id": "eval-0001", "profile": twin}])


# --- references ----------------------------------------------------------------------------


def test_every_diagnostic_completion_is_the_rule(datasets) -> None:
    sft, dpo, _ = datasets
    completions = [r["completion"][0]["content"] for r in sft if r["kind"] == "diagnostic"]
    completions += [r["chosen"][0]["content"] for r in dpo]
    runners = [r["profile"] for r in sft if r["kind"] == "diagnostic"] + [r["profile"] for r in dpo]
    for text, measurements in zip(completions, runners, strict=True):
        diagnostic = parse_diagnostic(text)
        assert (diagnostic.pathologie, diagnostic.confiance) == label(measurements)
        assert not ungrounded_numbers(diagnostic.justification, measurements)


def test_prompts_are_single_user_turns_showing_the_measurements(datasets) -> None:
    sft, _, _ = datasets
    for r in sft:
        assert [m["role"] for m in r["prompt"]] == ["user"]
        assert [m["role"] for m in r["completion"]] == ["assistant"]
        assert (
            f"heel_strike_index : {r['profile']['heel_strike_index']:.2f}"
            in (r["prompt"][0]["content"])
        )


def test_reports_are_grounded_and_sized(datasets) -> None:
    sft, _, _ = datasets
    reports = [r for r in sft if r["kind"] == "report"]
    texts = {r["completion"][0]["content"] for r in reports}
    # Two runners with the same deciding value share a report (no context in it).
    assert len(texts) > 0.75 * len(reports)
    for r in reports:
        text = r["completion"][0]["content"]
        assert r["label"] in text and r["confidence"] in text
        assert 250 <= len(text) <= 600
        assert not ungrounded_numbers(text, r["profile"])
        # The only numbers are the deciding values and their thresholds: no context is copied.
        evidence = deciding_evidence(r["profile"], r["label"])
        assert set(cited_numbers(text)) <= {float(n) for e in evidence for n in e[1:]}


def test_report_names_the_label_first_then_its_findings(population) -> None:
    for measurements in population[:200]:
        report = reference_report(measurements)
        assert report == reference_report(dict(measurements))  # deterministic
        lines = report.splitlines()
        # The pathology on a line of its own, in the diagnostic's tokens (no leading space).
        pathology, confiance = label(measurements)
        assert lines[:2] == ["Pathologie probable :", f"{pathology} (confiance {confiance})."]
        # The findings are the diagnostic's justification: what the model learns there, it reuses.
        assert lines[2] == f"Constats : {reference_justification(measurements)}"
        assert [line.split(" : ", 1)[0] for line in lines[3:5]] == ["Mécanisme", "Conseils"]


# --- DPO -----------------------------------------------------------------------------------


def test_dpo_kinds_are_balanced_and_rejected_differs(datasets) -> None:
    _, dpo, _ = datasets
    counts = {k: sum(r["rejection_kind"] == k for r in dpo) for k in REJECTION_KINDS}
    assert min(counts.values()) >= len(dpo) // len(REJECTION_KINDS) - 1
    for r in dpo:
        assert r["rejected"][0]["content"] != r["chosen"][0]["content"]
        assert r["prompt"][0]["role"] == "user" and r["rejected"][0]["role"] == "assistant"


def test_invalid_json_rejections_are_invalid(datasets) -> None:
    _, dpo, _ = datasets
    broken = [r["rejected"][0]["content"] for r in dpo if r["rejection_kind"] == "invalid_json"]
    assert broken
    for text in broken:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        with pytest.raises(ValueError):
            parse_diagnostic(text)


def test_ungrounded_rejections_cite_a_number_absent_from_the_input(datasets) -> None:
    _, dpo, _ = datasets
    records = [r for r in dpo if r["rejection_kind"] == "ungrounded_value"]
    assert records
    for r in records:
        wrong = parse_diagnostic(r["rejected"][0]["content"])
        prompt_numbers = {float(n) for n in cited_numbers(r["prompt"][0]["content"])}
        absent = [n for n in cited_numbers(wrong.justification) if float(n) not in prompt_numbers]
        assert absent and set(absent) & set(ungrounded_numbers(wrong.justification, r["profile"]))
        assert (wrong.pathologie, wrong.confiance) == (r["label"], r["confidence"])


def test_wrong_pathology_is_the_runner_up_and_wrong_confidence_only_the_band(datasets) -> None:
    _, dpo, _ = datasets
    for r in dpo:
        if r["rejection_kind"] == "wrong_pathology":
            wrong = parse_diagnostic(r["rejected"][0]["content"])
            assert wrong.pathologie == runner_up(r["profile"]) != r["label"]
        if r["rejection_kind"] == "wrong_confidence":
            wrong = parse_diagnostic(r["rejected"][0]["content"])
            assert wrong.pathologie == r["label"] and wrong.confiance != r["confidence"]


# --- validators ----------------------------------------------------------------------------


def test_validators_reject_tampered_records(datasets) -> None:
    sft, dpo, evaluation = datasets
    diag = next(r for r in sft if r["kind"] == "diagnostic")
    wrong_label = next(p for p in PATHOLOGIES if p != diag["label"])
    with pytest.raises(ValueError, match="rule's label"):
        validate_sft_record({**diag, "label": wrong_label})
    with pytest.raises(ValueError, match="kind"):
        validate_sft_record({**diag, "kind": "chat"})
    report = next(r for r in sft if r["kind"] == "report")
    invented = report["completion"][0]["content"] + " Valeur 123.4."
    with pytest.raises(ValueError, match=r"123\.4"):
        validate_sft_record({**report, "completion": [{"role": "assistant", "content": invented}]})
    with pytest.raises(ValueError, match="identical"):
        validate_dpo_record({**dpo[0], "rejected": dpo[0]["chosen"]})
    with pytest.raises(ValueError, match="missing"):
        validate_eval_record({k: v for k, v in evaluation[0].items() if k != "id"})


# --- realism -------------------------------------------------------------------------------


def test_population_is_physical_and_correlated(population) -> None:
    assert all(is_physical(p) for p in population)
    assert all(18 <= p["age"] <= 70 for p in population)
    assert all(p["localisation_douleur"] in PAIN_LOCATIONS for p in population)

    def corr(a: str, b: str) -> float:
        return statistics.correlation([p[a] for p in population], [p[b] for p in population])

    assert corr("vitesse_kmh", "longueur_foulee") > 0.5
    assert corr("longueur_foulee", "heel_strike_index") > 0.2  # overstriding: heel strike
    assert corr("vitesse_kmh", "distance_hebdo_km") > 0.2
    for p in population:  # step length = speed / cadence, up to rounding
        step = p["vitesse_kmh"] * 1000 / 60 / p["cadence_pas_min"]
        assert abs(step - p["longueur_foulee"]) < 0.02
        assert 6.0 <= p["vitesse_kmh"] <= 22.0 and 148 <= p["cadence_pas_min"] <= 200

    def mean(key: str, sexe: str) -> float:
        return statistics.mean(p[key] for p in population if p["sexe"] == sexe)

    assert mean("valgus_genou", "F") > mean("valgus_genou", "M")
    assert mean("adduction_hanche", "F") > mean("adduction_hanche", "M")


def test_sample_measurements_hits_its_target_and_is_rounded() -> None:
    rng = random.Random(11)
    for target in PATHOLOGIES:
        for slice_name in SLICES:
            measurements = sample_measurements(rng, target, slice_name)
            assert label(measurements)[0] == target
            assert canonical_measurements(measurements) == tuple(
                measurements[k] for k in list(measurements)[:7]
            )
    with pytest.raises(ValueError, match="slice"):
        sample_measurements(rng, PATHOLOGIES[0], "easy")


def _correlation(runners: list[dict], a: str, b: str) -> float:
    return statistics.correlation([p[a] for p in runners], [p[b] for p in runners])


def test_independent_draws_keep_label_and_slice_and_drop_the_correlations() -> None:
    rng = random.Random(5)
    plan = [(t, s) for t, s in balanced_plan(600) if t == "Lombalgie mécanique"]
    independent = [sample_measurements(rng, t, s, independent=True) for t, s in plan]
    usual = [sample_measurements(rng, t, s) for t, s in plan]
    for (target, slice_name), measurements in zip(plan, independent, strict=True):
        assert label(measurements)[0] == target and slice_of(measurements) == slice_name
        assert is_physical(measurements)
    # Knee valgus and hip adduction go together in the population, not in independent draws.
    assert _correlation(usual, "valgus_genou", "adduction_hanche") > 0.3
    assert abs(_correlation(independent, "valgus_genou", "adduction_hanche")) < 0.2


def test_extended_set_is_independent_and_reports_come_with_and_without_context(
    tmp_path: Path,
) -> None:
    config = GenerateConfig(**{**SMALL, "n_sft_extended": 160}, n_outside=8, out_dir=tmp_path)
    _, extra, *_ = build_datasets(config)
    diagnostics = [r["profile"] for r in extra if r["kind"] == "diagnostic"]
    assert len(diagnostics) > 20
    assert _correlation(diagnostics, "valgus_genou", "adduction_hanche") < 0.3
    sft, *_ = build_datasets(GenerateConfig(n_sft=400, n_dpo=12, n_eval=12, n_sft_extended=0))
    reports = [r for r in sft if r["kind"] == "report"]
    with_context = sum("Contexte :" in r["prompt"][0]["content"] for r in reports)
    assert 0.25 * len(reports) < with_context < 0.75 * len(reports)
    for r in reports:  # the record's profile is what the prompt shows
        assert ("age" in r["profile"]) == ("Contexte :" in r["prompt"][0]["content"])


# --- copy-datasets -------------------------------------------------------------------------


def test_copy_datasets_imports_valid_files(dataset_dir: Path, tmp_path: Path) -> None:
    counts = copy_datasets.main(
        copy_datasets.CopyConfig(src=dataset_dir, out_dir=tmp_path), SETTINGS
    )
    assert counts == {"sft.jsonl": 1500, "dpo.jsonl": 420, "eval.jsonl": 360}
    assert (tmp_path / "training" / "sft.jsonl").read_bytes() == (
        dataset_dir / "training" / "sft.jsonl"
    ).read_bytes()


def test_copy_datasets_refuses_a_bad_line_and_touches_nothing(
    dataset_dir: Path, tmp_path: Path
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (dest / "training").mkdir(parents=True)
    (dest / "training" / "sft.jsonl").write_text("previous\n", encoding="utf-8")
    (src / "eval.jsonl").write_bytes((dataset_dir / "eval" / "eval.jsonl").read_bytes())
    lines = (dataset_dir / "training" / "sft.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[2])
    bad["label"] = next(p for p in PATHOLOGIES if p != bad["label"])
    lines[2] = json.dumps(bad, ensure_ascii=False)
    (src / "sft.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(SystemExit, match=r"sft\.jsonl:3: label"):
        copy_datasets.main(copy_datasets.CopyConfig(src=src, out_dir=dest), SETTINGS)
    assert (dest / "training" / "sft.jsonl").read_text(encoding="utf-8") == "previous\n"
    assert not (dest / "eval").exists()


def test_copy_datasets_explains_a_missing_or_empty_source(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="SRC="):
        copy_datasets.main(copy_datasets.CopyConfig(src=None, out_dir=tmp_path), SETTINGS)
    with pytest.raises(SystemExit, match="not a folder"):
        copy_datasets.main(
            copy_datasets.CopyConfig(src=tmp_path / "nope", out_dir=tmp_path), SETTINGS
        )
    with pytest.raises(SystemExit, match="none of"):
        copy_datasets.main(copy_datasets.CopyConfig(src=tmp_path, out_dir=tmp_path), SETTINGS)


def test_generate_and_copy_share_the_validators() -> None:
    assert VALIDATORS["sft.jsonl"] is validate_sft_record
    assert VALIDATORS["dpo.jsonl"] is validate_dpo_record
    assert VALIDATORS["eval.jsonl"] is validate_eval_record


# --- dataset card --------------------------------------------------------------------------


def test_card_renders_metadata_and_counts() -> None:
    sft, _, dpo, evaluation, _ = build_datasets(GenerateConfig(seed=2, **SMALL))
    stats = dataset_stats(sft, dpo, evaluation)
    card = render_dataset_card(stats, generation={"seed": 2, "command": "make datasets"})
    front = card.split("---")[1]
    assert "language: fr" in front and "config_name: dpo" in front
    assert "size_categories:\n- n<1K" in front
    per_label = stats["label"]["eval"][PATHOLOGIES[0]]
    assert f"| {PATHOLOGIES[0]} | {stats['label']['sft_diagnostic'][PATHOLOGIES[0]]} |" in card
    assert f"| {per_label} |" in card
    assert "pas des dispositifs médicaux" in card and "make datasets" in card
    assert size_category(2280) == "1K<n<10K"


def test_grounded_numbers_include_thresholds() -> None:
    measurements = sample_measurements(random.Random(1), PATHOLOGIES[3], "clear")
    allowed = grounded_numbers(measurements)
    assert 1.35 in allowed and 0.7 in allowed and float(measurements["cadence_pas_min"]) in allowed


def test_datasets_and_benchmark_read_numbers_alike() -> None:
    # One reader (aria.verdicts): a list marker is no citation, a French decimal comma is a point.
    text = "1. Constats\n2) Inclinaison du tronc 9,1 ° pour un seuil de 7 ; cadence 170."
    measurements = dict(EXAMPLE_MEASUREMENTS, cadence_pas_min=170)
    assert ungrounded_numbers(text, measurements) == []
    assert ungrounded_numbers("Inclinaison 9,4 °", measurements) == [9.4]
    report_prompt = render_prompt(measurements, REPORT_TEMPLATE)
    for candidate in (text, "valeur 12.5 et 130 % du seuil"):
        assert (
            ungrounded_numbers(candidate, measurements)
            == grounding(candidate, measurements, report_prompt)["ungrounded"]
        )
