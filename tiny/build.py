"""Build the tiny Gemma 3 base model and its tokenizer, locally, with no download.

    python -m tiny.build            # make tiny-model → data/models/tiny/base
    python -m tiny.build --pretrain # make tiny-pretrain: rebuild tiny/base
    python -m tiny.build --scratch  # a random base (what the test suite trains on)

The tiny profile runs the whole chain (SFT, merge, DPO, serving, benchmark) on a CPU in minutes.
Like MedGemma, its base comes pretrained: `make tiny-model` installs the committed `tiny/base`,
after checking the sha256 of its weights and tokenizer against its aria_build.json. That base was
built by `make tiny-pretrain`: random weights, then the full-parameter stages of
`tiny.pretraining.PRETRAIN_STAGES` on `tiny.copy_probe`'s tasks (copy a measured value asked by
its key, then also rank the measurements by percent of threshold and describe them in sentences;
no label or rule), which teach what a pretrained model brings and LoRA cannot teach a random one
within the chain's budget: copying a number from the prompt, comparing numbers and writing about a
table. It takes longer than the whole chain, hence committed (docs/training.md, "The tiny
profile's base").

Its architecture is a Gemma 3 with small dimensions (hidden 256, 4 layers; the parameter count follows the
learned vocabulary: the build logs it and writes it to aria_build.json), randomly
initialised from a fixed seed and saved in bf16 safetensors; its tokenizer (`tiny.tokenizer`) is a
byte-level BPE trained on our own dataset text, with Gemma's special tokens and Gemma 3's chat
template. generation_config.json stops on `<eos>` and `<end_of_turn>`, as MedGemma's does.

Two init choices make a random base learnable by LoRA alone (LoRA never trains the embedding or
the norms): a tied embedding with std 0.1 instead of 0.02 (else the output logits are capped and
the loss cannot go below ~2.2 nats), and query_pre_attn_scalar 4 (Gemma 3 RMS-normalises q and k,
so with Gemma's default the attention logits stay small and the model learns to ignore the prompt).

Why a text-only `Gemma3ForCausalLM` and not MedGemma's `Gemma3ForConditionalGeneration`:
our task is text in, JSON out, so a vision tower would only add cost and risk. A multimodal tiny
model needs a Gemma 3 processor with an image processor (its fast version needs torchvision, which
is uninstalled here because it breaks Gemma 3 imports), makes vLLM profile a dummy 896x896 image
through the SigLIP tower at every server start on CPU, and ties the chat template to image tokens
we never use. The text-only class shares the language model's code, attention pattern, chat
template and LoRA target modules (q/k/v/o/gate/up/down projections) with MedGemma, and vLLM CPU and
TRL both support it. Training code treats both alike: it targets the language model's linear
layers and excludes a vision tower when there is one.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from aria.files import atomic_dir
from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from tiny.pretraining import PRETRAIN_COPY_STEPS, PRETRAIN_STAGES, PretrainStage, pretrain_stage
from tiny.tokenizer import MAX_POSITIONS, SPECIAL_TOKENS, dataset_texts, train_tokenizer
from training.model_files import END_OF_TURN

log = logging.getLogger(__name__)

# The pretrained tiny base, committed: `make tiny-model` installs it, `make tiny-pretrain`
# rebuilds it (random weights, then PRETRAIN_STAGES of full-parameter pretraining).
PRETRAINED_DIR = Path(__file__).resolve().parent / "base"

# The files whose sha256 the build records in aria_build.json and the install checks.
CHECKED_FILES = ("model.safetensors", "tokenizer.json")
# Std of the (tied) embedding at init. LoRA never trains it, so it bounds the output logits:
# at Gemma's 0.02 the largest reachable logit gap is ~5 (loss floor ~2.2 nats) and SFT stalls.
EMBEDDING_INIT_STD = 0.1


@dataclass
class TinyModelConfig:
    """Where the tiny base goes, what text its tokenizer learns from, and the seed of its weights."""

    out_dir: Path | None = None  # default: data/models/tiny/base
    sft_path: Path | None = None  # default: data/training/sft.jsonl
    seed: int = 0
    copy_steps: int = 0  # full-parameter copy pretraining steps (tiny/copy_probe.py); 0: none
    pretrain: bool = False  # with scratch: PRETRAIN_STAGES instead of copy_steps
    scratch: bool = False  # build from random weights instead of installing the committed base


def tiny_gemma3_config(vocab_size: int, pad_id: int, eos_id: int, bos_id: int):
    """Gemma 3 text dimensions small enough to train on 2 CPU cores in minutes."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        # Eight narrow heads rather than four of 64: the same parameters, twice the attention
        # maps (SFT steps ~13 % slower on CPU), and a higher, steadier exact match across seeds
        # (docs/training.md, "The tiny profile's base").
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        # Gemma 3 RMS-normalises q and k and LoRA never trains those norms, so the attention
        # logits are capped at head_dim / sqrt(query_pre_attn_scalar): 4 lets a head attend
        # sharply to one prompt value (Gemma 3's default, 256, caps them at 2 and the model
        # ignores the prompt; 1 scored lower than 4; docs/training.md, "The tiny profile's base").
        query_pre_attn_scalar=4,
        max_position_embeddings=MAX_POSITIONS,
        sliding_window=512,
        # Gemma 3's local/global pattern, shortened: three sliding layers, then a global one.
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
        tie_word_embeddings=True,
        dtype="bfloat16",
    )


def build_tiny_model(
    out_dir: Path,
    sft_path: Path,
    seed: int = 0,
    copy_steps: int = 0,
    stages: tuple[PretrainStage, ...] = (),
) -> Path:
    """Build the tiny base (weights, tokenizer, generation config) into `out_dir`, atomically.

    The same `sft_path` and `seed` give the same tokenizer and the same weights. `copy_steps` > 0
    then pretrains the random weights on copying a measured value from the prompt
    (`tiny.copy_probe`, no label or threshold), the ability a pretrained base brings and LoRA
    cannot teach a random one; `stages` (instead) runs several pretraining stages in turn, the
    first with the build's `seed`: `make tiny-pretrain` builds the committed base with
    PRETRAIN_STAGES (docs/training.md, "The tiny profile's base").
    """
    import torch
    from transformers import Gemma3ForCausalLM, GenerationConfig

    if copy_steps and stages:
        raise ValueError("copy_steps and stages both pretrain the base: give one of them")
    if copy_steps:
        stages = (PretrainStage(copy_steps, seed),)
    tokenizer = train_tokenizer(dataset_texts(Path(sft_path)))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = tiny_gemma3_config(len(tokenizer), ids["<pad>"], ids["<eos>"], ids["<bos>"])
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, EMBEDDING_INIT_STD)
    build: dict = {"seed": seed, "sft_path": str(sft_path)}
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<bos>"],
        pad_token_id=ids["<pad>"],
        # Chat answers end with <end_of_turn>; plain text ends with <eos>. Stop on both.
        eos_token_id=[ids["<eos>"], ids[END_OF_TURN]],
    )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        records = []
        for i, stage in enumerate(stages):
            # The first stage's seed is the build's, so that --seed moves the whole build.
            stage = (
                stage
                if i
                else PretrainStage(stage.steps, seed, stage.rank_share, stage.describe_share)
            )
            records.append(pretrain_stage(tmp, tokenizer, stage))
            log.info("pretraining stage %d/%d: %s", i + 1, len(stages), json.dumps(records[-1]))
        if records:
            first = records[0]
            build |= {
                "copy_steps": first["steps"],
                "copy_seconds": first["seconds"],
                "copy_loss": first["loss"],
                "copy_exact": records[-1]["copy_exact"],
            }
            if len(records) > 1:
                build["stages"] = records
        build["parameters"] = sum(p.numel() for p in model.parameters())
        build["sha256"] = {name: _sha256(tmp / name) for name in CHECKED_FILES}
        (tmp / "aria_build.json").write_text(json.dumps(build, indent=2) + "\n")
    return out_dir


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def install_pretrained(out_dir: Path, source: Path = PRETRAINED_DIR) -> Path:
    """Copy the committed pretrained base into `out_dir`, atomically, after checking that
    its files are the ones its aria_build.json records (a truncated or hand-edited checkout would
    otherwise train on broken weights)."""
    import shutil

    source = Path(source)
    manifest = source / "aria_build.json"
    if not manifest.exists():
        raise SystemExit(
            f"{manifest} is missing: the committed tiny base is incomplete; restore it with "
            "`git checkout -- tiny/base`, or rebuild it with `make tiny-pretrain`"
        )
    recorded = json.loads(manifest.read_text()).get("sha256") or {}
    for name in CHECKED_FILES:
        digest = recorded.get(name)
        if digest is None or not (source / name).exists() or _sha256(source / name) != digest:
            raise SystemExit(
                f"{source / name} does not match the sha256 in {manifest}: the committed tiny "
                "base is damaged; restore it with `git checkout -- tiny/base`, or "
                "rebuild it with `make tiny-pretrain`"
            )
    with atomic_dir(Path(out_dir)) as tmp:
        for path in source.iterdir():
            if path.is_file():
                shutil.copy2(path, tmp / path.name)
    return Path(out_dir)


def main(cfg: TinyModelConfig, settings: Settings) -> dict:
    """Install (or build) the tiny base where the settings say and log a short summary; returns
    its aria_build.json with its `path`."""
    out_dir = cfg.out_dir or settings.models_dir.parent / "tiny" / "base"
    sft_path = cfg.sft_path or settings.training_dir / "sft.jsonl"
    if cfg.scratch:
        stages = PRETRAIN_STAGES if cfg.pretrain else ()
        path = build_tiny_model(out_dir, sft_path, cfg.seed, cfg.copy_steps, stages)
    else:
        path = install_pretrained(out_dir)
    build = json.loads((path / "aria_build.json").read_text())
    origin = "built" if cfg.scratch else f"installed from {PRETRAINED_DIR}"
    log.info(
        "tiny base model: %s  (%.2fM parameters, seed %s, %s)",
        path,
        build["parameters"] / 1e6,
        build["seed"],
        origin,
    )
    log.info("tokenizer trained on %s", build["sft_path"])
    if build.get("copy_steps"):
        log.info(
            "copy pretraining: %s steps, copies %.1f%% of values",
            build["copy_steps"],
            100 * build["copy_exact"],
        )
    for stage in build.get("stages", [])[1:]:
        log.info(
            "then %s steps, ranking %.0f%% and describing %.0f%% of examples: first key ranked "
            "right for %.0f%% of held-out tables",
            stage["steps"],
            100 * stage["rank_share"],
            100 * stage["describe_share"],
            100 * stage.get("rank_first", 0),
        )
    return {"path": str(path), **build}


def parse_args(argv: list[str] | None = None) -> TinyModelConfig:
    """Command-line flags → TinyModelConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--sft-path", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=None, help="with --scratch (default 0)")
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="rebuild the committed base: --scratch, the stages of PRETRAIN_STAGES (copying, "
        "ranking, describing), --out-dir tiny/base (make tiny-pretrain)",
    )
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="build from random weights and a tokenizer trained on --sft-path, instead of "
        "installing the committed pretrained base (tiny/base)",
    )
    parser.add_argument(
        "--copy-steps",
        type=int,
        default=0,
        help="with --scratch: pretrain the base on copying first (docs/training.md, the tiny "
        "base); "
        f"make tiny-pretrain uses {PRETRAIN_COPY_STEPS}; 0: none",
    )
    args = parser.parse_args(argv)
    if args.copy_steps < 0:
        parser.error(f"--copy-steps must be 0 or more, got {args.copy_steps}")
    if args.pretrain:
        if args.scratch or args.copy_steps or args.out_dir:
            parser.error("--pretrain sets --scratch, --copy-steps and --out-dir itself")
        args.scratch, args.out_dir = True, PRETRAINED_DIR
    if not args.scratch and (args.copy_steps or args.sft_path or args.seed is not None):
        parser.error(
            "--copy-steps, --sft-path and --seed build a base, so they need --scratch; "
            "without it the committed base is installed as it is"
        )
    return TinyModelConfig(
        out_dir=args.out_dir,
        sft_path=args.sft_path,
        seed=args.seed or 0,
        copy_steps=args.copy_steps,
        pretrain=args.pretrain,
        scratch=args.scratch,
    )


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(), settings)
