"""Does a base copy a measured value from its prompt? A probe, and a short copy pretraining to try.

    python -m tiny.copy_probe --base data/models/tiny/base                      # probe only
    python -m tiny.copy_probe --base data/models/tiny/base --steps 400 --out /tmp/copy-base
    python -m tiny.copy_probe --base tiny/base --steps 800 --rank-share 0.5 \
        --seed 1 --out /tmp/rank-base                                  # copying and ranking

Issue 18's grounding bar needs the model to write a measured value exactly as the prompt shows it.
A pretrained base (MedGemma) copies from its context; a random tiny base does not, and LoRA did
not teach it to copy within the CPU budget (docs/training.md, "The tiny profile's base"). This
module measures that ability and, with `--steps`, trains it into a copy of the
base with full-parameter updates, so that `train_sft --model_name_or_path <out>` can test whether
a base that copies grounds its justifications. `make tiny-pretrain` builds the committed tiny
base with this pretraining in it (`tiny.build`), and `make tiny-model` installs it.

The task knows no label, threshold or rule: the seven measurements with random values over their
physical ranges, in the lines the diagnostic prompt writes (`render_measurements`) but in the
table's order (the prompts rank them; the committed base learnt this order, and its rebuild
keeps it), then the answer `Valeurs : key value ; key value.` for 1 to 4 keys in random order; the loss is on the
answer only. The probe writes `Valeurs : <key>` into the model's turn and reads the value the
model writes greedily; `copy_exact` is the share written exactly as the prompt shows it.

`--rank-share` mixes in a second task, numeracy: the same table (values drawn around a common
percent of threshold, so that several are close) and the answer `Ordre : key > key > ...`, the
seven keys from the largest percent of threshold to the smallest. It knows no label and no rule
(the Achilles rule's minimum of two, the ties, the confidence are the SFT's to teach); it is the
comparison of two written numbers that a pretrained base (MedGemma) brings and a random one
lacks. `rank_first` is the share of held-out tables whose first key the model gets right.

`--describe-share` mixes in a third, language: the same ranking table and the answer `Lecture :`
then one sentence per measurement, in the ranking's order, `key mesure value, au-dessus de (or
sous) son seuil de threshold.` No pathology, no count of fired rules; it is the prose about a
table of values that a pretrained base brings and the reports need (a base pretrained on the two
short answers alone wrote broken reports; docs/training.md, "The tiny profile's base").
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aria.domain import MEASUREMENT_KEYS, MEASUREMENTS, THRESHOLD_BY_KEY, format_value
from aria.files import atomic_dir
from aria.logs import setup_logging
from aria.prompts import render_measurements

log = logging.getLogger(__name__)

ANSWER_LEAD = "Valeurs :"
INSTRUCTION = "Recopie quelques valeurs."
PROBES = 60  # held-out tables the probe asks: one value each
RANK_LEAD = "Ordre :"
RANK_INSTRUCTION = "Range les mesures du plus grand au plus petit pourcentage du seuil."
RANK_PROBES = 100  # held-out tables whose first key the ranking probe asks
DESCRIBE_LEAD = "Lecture :"
DESCRIBE_INSTRUCTION = "Décris chaque mesure par rapport à son seuil."


@dataclass
class CopyProbeConfig:
    """Which base to probe, and how long to pretrain it on copying (0: probe only)."""

    base: Path
    out: Path | None = None  # where the pretrained base goes (required with steps > 0)
    steps: int = 0
    learning_rate: float = 1e-3
    batch_size: int = 16
    probes: int = PROBES
    seed: int = 0
    rank_share: float = 0.0  # share of the pretraining's examples that rank instead of copy
    describe_share: float = 0.0  # share that describe the table in sentences (drawn first)


def random_runner(rng: random.Random) -> dict[str, float]:
    """Seven values drawn uniformly over each measurement's physical range, as the prompt
    rounds them (no population, no label)."""
    runner = {}
    for m in MEASUREMENTS:
        step = 10**-m.decimals
        lowest = m.low + step if m.low_exclusive else m.low
        runner[m.key] = float(format_value(m.key, rng.uniform(lowest, m.high)))
    return runner


def copy_example(rng: random.Random) -> tuple[str, str, dict[str, float]]:
    """(user prompt, answer, runner) of one copy task."""
    runner = random_runner(rng)
    keys = rng.sample(MEASUREMENT_KEYS, rng.randint(1, 4))
    answer = " ; ".join(f"{key} {format_value(key, runner[key])}" for key in keys)
    prompt = f"Mesures :\n{render_measurements(runner, ranked=False)}\n{INSTRUCTION}"
    return prompt, f"{ANSWER_LEAD} {answer}.", runner


def rank_runner(rng: random.Random) -> dict[str, float]:
    """Seven values around one common percent of threshold (normal, sd 30 points), one in five
    anywhere from 5 to 250 %, kept in the physical ranges and rounded as the prompt writes them."""
    runner = {}
    centre = rng.uniform(50, 150)
    for m in MEASUREMENTS:
        percent = rng.uniform(5, 250) if rng.random() < 0.2 else rng.gauss(centre, 30)
        step = 10**-m.decimals
        lowest = m.low + step if m.low_exclusive else m.low
        value = min(max(percent / 100 * THRESHOLD_BY_KEY[m.key], lowest), m.high)
        runner[m.key] = float(format_value(m.key, value))
    return runner


def rank_order(runner: Mapping[str, float]) -> list[str]:
    """The seven keys from the largest value over threshold to the smallest (ties: table order)."""
    return sorted(MEASUREMENT_KEYS, key=lambda key: -runner[key] / THRESHOLD_BY_KEY[key])


def rank_example(rng: random.Random) -> tuple[str, str, dict[str, float]]:
    """(user prompt, answer, runner) of one ranking task."""
    runner = rank_runner(rng)
    prompt = f"Mesures :\n{render_measurements(runner, ranked=False)}\n{RANK_INSTRUCTION}"
    return prompt, f"{RANK_LEAD} " + " > ".join(rank_order(runner)) + ".", runner


def describe_example(rng: random.Random) -> tuple[str, str, dict[str, float]]:
    """(user prompt, answer, runner) of one description: a sentence per measurement, from the
    largest percent of threshold to the smallest, with its value, threshold and side of it."""
    runner = rank_runner(rng)
    sentences = []
    for key in rank_order(runner):
        threshold = THRESHOLD_BY_KEY[key]
        side = "au-dessus de" if runner[key] > threshold else "sous"
        sentences.append(
            f"{key} mesure {format_value(key, runner[key])}, {side} son seuil de "
            f"{format_value(key, threshold)}."
        )
    prompt = f"Mesures :\n{render_measurements(runner, ranked=False)}\n{DESCRIBE_INSTRUCTION}"
    return prompt, f"{DESCRIBE_LEAD} " + " ".join(sentences), runner


def pretraining_example(
    rng: random.Random, rank_share: float = 0.0, describe_share: float = 0.0
) -> tuple[str, str, dict[str, float]]:
    """One example of the pretraining: a description for `describe_share` of the draws, else a
    ranking one for `rank_share` of the rest, else a copy one. With neither the draws are exactly
    the copy task's (and with no description, the ranking mix's), so earlier bases rebuild."""
    if describe_share and rng.random() < describe_share:
        return describe_example(rng)
    if rank_share and rng.random() < rank_share:
        return rank_example(rng)
    return copy_example(rng)


def probe_rank(model, tokenizer, n: int, seed: int) -> float:
    """Share of `n` held-out tables whose first key (the largest percent) the model names."""
    import torch

    rng = random.Random(seed + 20_000)  # never the pretraining's draws
    hits = 0
    for _ in range(n):
        prompt, _, runner = rank_example(rng)
        text = _chat(tokenizer, prompt) + RANK_LEAD
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
        hits += tokenizer.decode([int(logits.argmax())]).strip() == rank_order(runner)[0]
    return hits / n


def copied_value(generated: str) -> str:
    """The value the model wrote after the forced key: its first word, without punctuation."""
    words = generated.split()
    return words[0].rstrip(".;,") if words else ""


def probe(model, tokenizer, n: int, seed: int) -> float:
    """Share of `n` held-out tables whose value, asked by key, the model copies exactly."""
    import torch

    rng = random.Random(seed + 10_000)  # never the pretraining's draws
    hits = 0
    for _ in range(n):
        prompt, _, runner = copy_example(rng)
        key = rng.choice(MEASUREMENT_KEYS)
        text = _chat(tokenizer, prompt) + f"{ANSWER_LEAD} {key}"
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **inputs, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id
            )
        generated = tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        hits += copied_value(generated) == format_value(key, runner[key])
    return hits / n


def _chat(tokenizer, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _batch(tokenizer, examples: list[tuple[str, str, Mapping]]):
    """Right-padded ids and labels, the loss on the answer (and its end of turn) only."""
    import torch

    ids, labels = [], []
    for prompt, answer, _ in examples:
        head = tokenizer(_chat(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        tail = tokenizer(answer + "<end_of_turn>", add_special_tokens=False)["input_ids"]
        ids.append(head + tail)
        labels.append([-100] * len(head) + tail)
    length = max(map(len, ids))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([x + [pad] * (length - len(x)) for x in ids])
    label_ids = torch.tensor([y + [-100] * (length - len(y)) for y in labels])
    mask = torch.tensor([[1] * len(x) + [0] * (length - len(x)) for x in ids])
    return input_ids, label_ids, mask


def pretrain(
    model,
    tokenizer,
    steps: int,
    *,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    rank_share: float = 0.0,
    describe_share: float = 0.0,
) -> list[float]:
    """Full-parameter AdamW on the copy task (and the ranking task for `rank_share` of the
    examples), 20 warm-up steps then a linear decay; the losses."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, (step + 1) / 20) * (1 - step / steps)
        examples = [pretraining_example(rng, rank_share, describe_share) for _ in range(batch_size)]
        input_ids, labels, mask = _batch(tokenizer, examples)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log.info("step %4d  loss %.3f", step, losses[-1])
    model.eval()
    return losses


def main(cfg: CopyProbeConfig) -> dict:
    """Probe the base; with steps, pretrain a copy of it, probe it again and save it atomically;
    prints the result's JSON line and returns it. It reads no settings: every path is a flag."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cfg.steps and cfg.out is None:
        raise SystemExit("--steps needs --out: the folder the pretrained base is written to")
    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    model = AutoModelForCausalLM.from_pretrained(
        cfg.base, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    result = {
        "base": str(cfg.base),
        "probes": cfg.probes,
        "copy_exact_before": probe(model, tokenizer, cfg.probes, cfg.seed),
    }
    if cfg.rank_share:
        result["rank_first_before"] = probe_rank(model, tokenizer, RANK_PROBES, cfg.seed)
    if cfg.steps:
        started = time.perf_counter()
        losses = pretrain(
            model,
            tokenizer,
            cfg.steps,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            rank_share=cfg.rank_share,
            describe_share=cfg.describe_share,
        )
        result.update(
            steps=cfg.steps,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            seconds=round(time.perf_counter() - started, 1),
            final_loss=round(sum(losses[-10:]) / len(losses[-10:]), 4),
            copy_exact_after=probe(model, tokenizer, cfg.probes, cfg.seed),
            out=str(cfg.out),
        )
        if cfg.describe_share:
            result["describe_share"] = cfg.describe_share
        if cfg.rank_share:
            result.update(
                rank_share=cfg.rank_share,
                rank_first_after=probe_rank(model, tokenizer, RANK_PROBES, cfg.seed),
            )
        with atomic_dir(Path(cfg.out)) as tmp:
            model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / "copy_probe.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


def parse_args(argv: list[str] | None = None) -> CopyProbeConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a model folder")
    parser.add_argument("--out", type=Path, default=None, help="the pretrained base's folder")
    parser.add_argument("--steps", type=int, default=0, help="copy pretraining steps (0: probe)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--probes", type=int, default=PROBES, help="held-out tables to probe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rank-share", type=float, default=0.0, help="share of ranking examples (0 to 1)"
    )
    parser.add_argument(
        "--describe-share",
        type=float,
        default=0.0,
        help="share of examples that describe the table in sentences (0 to 1)",
    )
    args = parser.parse_args(argv)
    for flag, share in (
        ("--rank-share", args.rank_share),
        ("--describe-share", args.describe_share),
    ):
        if not 0 <= share <= 1:
            parser.error(f"{flag} must be between 0 and 1, got {share}")
    for flag, value, least in (
        ("--steps", args.steps, 0),
        ("--batch-size", args.batch_size, 1),
        ("--probes", args.probes, 1),
    ):
        if value < least:
            parser.error(f"{flag} must be {least} or more, got {value}")
    if not args.learning_rate > 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    return CopyProbeConfig(**vars(args))


if __name__ == "__main__":
    setup_logging()
    main(parse_args())
