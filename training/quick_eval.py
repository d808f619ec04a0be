"""Greedy in-process evaluation of a model folder on the eval set (no server, no guided decoding).

    python -m training.quick_eval --model data/models/tiny/aria-ft-dpo

Generates greedily with transformers (batched, left padding) for each eval.jsonl runner and
reports the JSON-valid rate, the exact match of `pathologie` and `confiance` (and of
`pathologie` per eval slice) and the share of grounded justifications. `--eval-path
data/eval/outside.jsonl` scores the runners the project never generated. The answer starts with the seed's opening `{"pathologie":"`, as
guided decoding of the seed's body forces it (DOMAIN.md), so the label is scored label-first,
the way ARIA's middle service asks for it. Training runs it
after each merge and writes the numbers into the model's training_metrics.json. The release
benchmark (vLLM, guided JSON, latency) is `make benchmark`.
"""

from __future__ import annotations

import argparse
import json
import time
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from aria import metrics
from aria.domain import CONFIDENCES, label, ranked_pathologies
from aria.files import read_jsonl
from aria.logs import setup_logging
from aria.prompts import DIAGNOSTIC_MAX_TOKENS, diagnostic_messages
from aria.schema import FIELD_ORDER, GUIDED_SEPARATORS, Diagnostic, parse_diagnostic
from aria.settings import Settings, get_settings
from aria.verdicts import justification_verdict
from training.model_files import compute_device, eos_ids_with_end_of_turn, load_bf16

# Bounds of the top-two gap buckets (the label's exceedance minus the runner-up's; 0.03 is three
# points of the prompt's percent): docs/training.md ("Judging a change in process").
GAP_BOUNDS: tuple[float, ...] = (0.03, 0.07, 0.15)

# What guided decoding of the seed's schema writes before the model chooses anything.
SEED_ANSWER_PREFIX = '{"' + FIELD_ORDER[0] + '"' + GUIDED_SEPARATORS[1] + '"'


@dataclass
class QuickEvalConfig:
    """Which model to score, on which set, how many examples and how many per batch."""

    model: Path
    eval_path: Path | None = None  # default: data/eval/eval.jsonl
    limit: int = 0  # 0: the whole eval set
    batch_size: int = 64
    max_new_tokens: int = DIAGNOSTIC_MAX_TOKENS


def eval_example(record: dict) -> tuple[list[dict], str, str]:
    """(prompt messages, expected pathology, expected confidence) of one eval.jsonl record.

    The record carries a `profile` (the prompt is rebuilt and the label recomputed by the rule),
    or a conversational `prompt` with a `completion` holding the reference JSON.
    """
    measurements = record.get("profile")
    prompt = record.get("prompt") or record.get("messages")
    if isinstance(prompt, list):
        prompt = [m for m in prompt if m.get("role") != "assistant"]
    if measurements is not None:
        pathology, confiance = label(measurements)
        return prompt or diagnostic_messages(measurements), pathology, confiance
    if prompt and record.get("completion"):
        reference = parse_diagnostic(record["completion"][-1]["content"])
        return prompt, reference.pathologie, reference.confiance
    raise ValueError("an eval record needs a 'profile' or a 'prompt' with a 'completion'")


def _confidence_rank(name: str) -> int:
    return CONFIDENCES.index(name) if name in CONFIDENCES else len(CONFIDENCES)


def _parsed(text: str) -> Diagnostic | None:
    """The answer as a Diagnostic, None when it is not one (cut, not JSON, off the schema)."""
    try:
        return parse_diagnostic(text.strip())
    except ValueError:
        return None


def confidences_answered(
    expected: list[str], parsed: list[Diagnostic | None]
) -> dict[str, dict[str, int]]:
    """{expected confidence: {answered confidence (`null`: no valid answer): count}}, both in
    the domain's order."""
    answered: dict[str, dict[str, int]] = {}
    for confiance, diagnostic in zip(expected, parsed, strict=True):
        row = answered.setdefault(confiance, {})
        name = diagnostic.confiance if diagnostic else "null"
        row[name] = row.get(name, 0) + 1
    return {
        expected: dict(sorted(row.items(), key=lambda item: _confidence_rank(item[0])))
        for expected, row in sorted(answered.items(), key=lambda i: _confidence_rank(i[0]))
    }


def score_answers(
    answers: list[str],
    expected: list[tuple[str, str]],
    slices: list[str | None] | None = None,
    runners: list[Mapping[str, Any] | None] | None = None,
) -> dict:
    """JSON-valid rate and exact-match rates of pathologie and confiance (0..1), through
    aria.metrics as the benchmark computes them; an invalid answer counts as wrong.

    With the eval records' `slices`, also the pathology exact match of each slice. With their
    `runners` (measurements), also `grounded`: the share of answers whose justification cites
    only numbers of the input (an invalid answer counts as not grounded), as the release gate
    counts it (`aria.verdicts.justification_verdict`); `crossings_right`: the share whose
    justification states the input's count of alert signals (firing rules); and
    `exact_match_by_gap`: the exact match and count of each bucket of the gap between the label's exceedance and the runner-up's
    (`gap_bucket`). `confiance_answered`: for each expected confidence, how often each one was
    answered (an invalid answer counts under `null`).
    """
    parsed = [_parsed(text) for text in answers]
    pathologies, confidences = [p for p, _ in expected], [c for _, c in expected]
    predicted = [d.pathologie if d else None for d in parsed]
    hits = [p == e for p, e in zip(predicted, pathologies, strict=True)]
    result = {
        "n": len(answers),
        "json_valid": metrics.share([d is not None for d in parsed]) or 0.0,
        "exact_match": metrics.exact_match(pathologies, predicted) or 0.0,
        "exact_match_confiance": metrics.confidence_accuracy(
            confidences, [d.confiance if d else None for d in parsed]
        )
        or 0.0,
        "confiance_answered": confidences_answered(confidences, parsed),
    }
    runners = runners or [None] * len(answers)
    if any(m is not None for m in runners):
        verdicts = [
            justification_verdict(d.justification, m) if d and m is not None else {}
            for d, m in zip(parsed, runners, strict=True)
        ]
        result["grounded"] = metrics.share([bool(v.get("grounded")) for v in verdicts])
        result["crossings_right"] = metrics.share(
            [bool(v.get("crossings_right")) for v in verdicts]
        )
        result["exact_match_by_gap"] = exact_match_by_gap(hits, runners)
    named = [(s, ok) for s, ok in zip(slices or [None] * len(answers), hits, strict=True) if s]
    if named:
        by_slice = metrics.accuracy_by_group([s for s, _ in named], [ok for _, ok in named])
        result["exact_match_by_slice"] = {k: cell["accuracy"] for k, cell in by_slice.items()}
    return result


def exact_match_by_gap(
    hits: list[bool], runners: list[Mapping[str, Any] | None]
) -> dict[str, dict[str, Any]]:
    """{gap bucket: {n, exact_match}} of the answers with measurements, every bucket listed
    (exact_match None where it holds none)."""
    scored = [(gap_bucket(m), ok) for ok, m in zip(hits, runners, strict=True) if m is not None]
    cells = metrics.accuracy_by_group([b for b, _ in scored], [ok for _, ok in scored])
    return {
        name: {"n": cells[name]["n"], "exact_match": cells[name]["accuracy"]}
        if name in cells
        else {"n": 0, "exact_match": None}
        for name in gap_buckets()
    }


def gap_buckets() -> list[str]:
    """Names of the top-two gap buckets, narrowest first: `<0.03`, `0.03-0.07`, ..., `>=0.15`."""
    edges = [f"{b:g}" for b in GAP_BOUNDS]
    return [f"<{edges[0]}", *(f"{a}-{b}" for a, b in pairwise(edges)), f">={edges[-1]}"]


def gap_bucket(measurements: Mapping[str, Any]) -> str:
    """The bucket of the gap between the label's exceedance and the runner-up's: a near tie is
    where a model that reads percents loosely errs (docs/training.md, "Judging a change in
    process")."""
    ranked = ranked_pathologies(measurements)
    gap = ranked[0][1] - ranked[1][1]
    names = gap_buckets()
    return names[bisect_right(GAP_BOUNDS, gap)]


def generate_answers(
    model_dir: Path,
    prompts: list[list[dict]],
    batch_size: int,
    max_new_tokens: int,
    answer_prefix: str = "",
    temperature: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """Completions of chat prompts, decoded without special tokens; each answer starts with
    `answer_prefix`, written into the model's turn before it generates. Greedy, or sampled at
    `temperature` > 0 (top-p 1, torch seeded with `seed` first: the same batches give the same
    samples on one machine)."""
    if not (Path(model_dir) / "config.json").exists():
        raise SystemExit(
            f"{model_dir} is not a model folder (no config.json): pass a merged model, e.g. "
            "data/models/<profile>/aria-ft-dpo after `make train-all`"
        )
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    device = compute_device()
    model = load_bf16(str(model_dir), device=device).eval()
    if device == "cpu":
        # CPUs without AVX-512 BF16 emulate bf16 matmuls: fp32 compute of the bf16 weights
        # generated twice as fast here (tiny, 120 runners: 14.3 s against 30.2 s), same scores.
        model = model.float()
    try:
        eos_ids = eos_ids_with_end_of_turn(tokenizer, GenerationConfig.from_pretrained(model_dir))
    except OSError:
        eos_ids = eos_ids_with_end_of_turn(tokenizer, model.generation_config)
    if temperature > 0:
        torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="quick eval", unit="batch"):
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            + answer_prefix
            for p in prompts[start : start + batch_size]
        ]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(model.device)
        with torch.no_grad():
            out = model.generate(
                **inputs,
                **(sampling if temperature > 0 else {"do_sample": False}),
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        answers += [
            answer_prefix + a for a in tokenizer.batch_decode(new, skip_special_tokens=True)
        ]
    return answers


def quick_eval(
    model_dir: Path,
    eval_path: Path,
    limit: int = 0,
    batch_size: int = 64,
    max_new_tokens: int = DIAGNOSTIC_MAX_TOKENS,
) -> dict:
    """Score `model_dir` on the first `limit` examples (0: all) of `eval_path`, greedily."""
    if not Path(eval_path).exists():
        raise SystemExit(f"{eval_path} does not exist: run `make datasets` first")
    records = read_jsonl(eval_path)[: limit or None]
    examples = [eval_example(r) for r in records]
    started = time.perf_counter()
    answers = generate_answers(
        Path(model_dir), [e[0] for e in examples], batch_size, max_new_tokens, SEED_ANSWER_PREFIX
    )
    slices = [r.get("slice") for r in records]
    runners = [r.get("profile") for r in records]
    result = score_answers(answers, [(e[1], e[2]) for e in examples], slices, runners)
    result.update(
        model=str(model_dir), eval_path=str(eval_path), seconds=time.perf_counter() - started
    )
    result["sample_answer"] = answers[0] if answers else ""
    return result


def main(cfg: QuickEvalConfig, settings: Settings) -> dict:
    """Print the scores of one model (on the settings' eval set unless cfg names one) and their
    JSON line; returns them."""
    eval_path = cfg.eval_path or settings.eval_path
    result = quick_eval(cfg.model, eval_path, cfg.limit, cfg.batch_size, cfg.max_new_tokens)
    print(f"model            {result['model']}")
    print(f"examples         {result['n']}  ({result['seconds']:.1f} s)")
    print(f"JSON valid       {result['json_valid']:.1%}")
    print(f"exact match      {result['exact_match']:.1%}  (pathologie)")
    print(f"confiance match  {result['exact_match_confiance']:.1%}")
    for expected, row in result["confiance_answered"].items():
        answers = ", ".join(f"{name} {count}" for name, count in row.items())
        print(f"  {expected:<14} answered {answers}")
    if "crossings_right" in result:
        print(
            f"crossings right  {result['crossings_right']:.1%}  (justifications stating the input's "
            "count of alert signals)"
        )
    if "grounded" in result:
        print(
            f"grounded         {result['grounded']:.1%}  (justifications citing only the input's numbers)"
        )
    for slice_name, rate in result.get("exact_match_by_slice", {}).items():
        print(f"  {slice_name:<14} {rate:.1%}")
    for bucket, tally in result.get("exact_match_by_gap", {}).items():
        if tally["n"]:
            print(f"  top-two gap {bucket:<9} {tally['exact_match']:.1%} of {tally['n']}")
    print(json.dumps(result, ensure_ascii=False))
    return result


def parse_args(argv: list[str] | None = None) -> QuickEvalConfig:
    """Command-line flags → QuickEvalConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder")
    parser.add_argument("--eval-path", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=0, help="examples to score (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=DIAGNOSTIC_MAX_TOKENS)
    a = parser.parse_args(argv)
    return QuickEvalConfig(a.model, a.eval_path, a.limit, a.batch_size, a.max_new_tokens)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(), settings)
