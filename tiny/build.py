"""Build the tiny Gemma 3 base model and its tokenizer, locally, with no download.

    python -m training.build_tiny_model            # make tiny-model → data/models/tiny/base
    python -m training.build_tiny_model --pretrain # make tiny-pretrain: rebuild training/tiny_base
    python -m training.build_tiny_model --scratch  # a random base (what the test suite trains on)

The tiny profile runs the whole chain (SFT, merge, DPO, serving, benchmark) on a CPU in minutes.
Like MedGemma, its base comes pretrained: `make tiny-model` installs the committed
`training/tiny_base`, after checking the sha256 of its weights and tokenizer against its
aria_build.json. That base was built by `make tiny-pretrain`: random weights, then the
full-parameter stages of PRETRAIN_STAGES on `training.copy_probe`'s tasks (copy a measured value
asked by its key, then also rank the measurements by percent of threshold and describe them in
sentences; no label or rule), which teach what a pretrained model brings and LoRA cannot teach a
random one within the chain's budget: copying a number from the prompt, comparing numbers and
writing about a table. It takes longer than the whole chain, hence committed (docs/training.md,
"Copying", "Ranking", "Describing").

Its architecture is a Gemma 3 with small dimensions (hidden 256, 4 layers; the parameter count follows the
learned vocabulary: the build prints it and writes it to aria_build.json), randomly
initialised from a fixed seed and saved in bf16 safetensors; its tokenizer is a byte-level BPE
(every text encodes) trained with `tokenizers` on our own dataset text, with digits split one per
token so that numbers are read digit by digit, each measurement key one token, Gemma's special
tokens and Gemma 3's chat template.
generation_config.json stops on `<eos>` and `<end_of_turn>`, as MedGemma's does.

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
import time
from dataclasses import dataclass
from pathlib import Path

from aria.files import DataError, atomic_dir, read_jsonl
from training.model_files import END_OF_TURN

# Gemma's special tokens, with Gemma's ids for pad/eos/bos/unk (the Gemma 3 config defaults).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    END_OF_TURN,
)
VOCAB_SIZE = 2048
# The pre-tokenizer's word split: GPT-2's regular expression with `_` counted as a letter.
WORD_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}_]+| ?\p{N}+| ?[^\s\p{L}\p{N}_]+|\s+(?!\S)|\s+"
# Serving defaults to VLLM_MAX_MODEL_LEN=4096; vLLM refuses a length above the model's positions.
MAX_POSITIONS = 4096
# The pretrained tiny base, committed: `make tiny-model` installs it, `make tiny-pretrain`
# rebuilds it (random weights, then PRETRAIN_STAGES of full-parameter pretraining).
PRETRAINED_DIR = Path(__file__).resolve().parent / "tiny_base"
PRETRAIN_COPY_STEPS = 1000


@dataclass(frozen=True)
class PretrainStage:
    """One run of `training.copy_probe`'s pretraining: its steps, seed and task mix (the shares
    of descriptions, then of ranking among the rest; the others copy). Each stage reloads the
    bf16 weights the previous one saved, as `python -m training.copy_probe` does."""

    steps: int
    seed: int
    rank_share: float = 0.0
    describe_share: float = 0.0


# `make tiny-pretrain`: copying alone (the seed is the build's), then ranking, then ranking and
# descriptions; each stage is the `python -m training.copy_probe` command of docs/training.md
# ("Describing"), which measured it.
PRETRAIN_STAGES = (
    PretrainStage(PRETRAIN_COPY_STEPS, seed=0),
    PretrainStage(800, seed=1, rank_share=0.5),
    PretrainStage(1000, seed=1, rank_share=0.7),
    PretrainStage(400, seed=3, rank_share=0.7, describe_share=0.4),
)
# The files whose sha256 the build records in aria_build.json and the install checks.
CHECKED_FILES = ("model.safetensors", "tokenizer.json")
# Std of the (tied) embedding at init. LoRA never trains it, so it bounds the output logits:
# at Gemma's 0.02 the largest reachable logit gap is ~5 (loss floor ~2.2 nats) and SFT stalls.
EMBEDDING_INIT_STD = 0.1

# Gemma 3's chat template, as shipped with transformers' Gemma 3 tokenizers (text parts only).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)


@dataclass
class TinyModelConfig:
    """Where the tiny base goes, what text its tokenizer learns from, and the seed of its weights."""

    out_dir: Path | None = None  # default: data/models/tiny/base
    sft_path: Path | None = None  # default: data/training/sft.jsonl
    seed: int = 0
    copy_steps: int = 0  # full-parameter copy pretraining steps (training/copy_probe.py); 0: none
    pretrain: bool = False  # with scratch: PRETRAIN_STAGES instead of copy_steps
    scratch: bool = False  # build from random weights instead of installing the committed base


def dataset_texts(sft_path: Path) -> list[str]:
    """Every message text of the SFT dataset (prompts and completions): the tokenizer's corpus."""
    if not Path(sft_path).exists():
        raise SystemExit(
            f"{sft_path} does not exist: the tokenizer is trained on our dataset text; "
            "run `make datasets` first"
        )
    texts: list[str] = []
    for record in read_jsonl(sft_path):
        for field in ("prompt", "completion", "messages"):
            for message in record.get(field) or []:
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    raise DataError(f"{sft_path}: '{field}' must be a list of chat messages")
                texts.append(message["content"])
    if not texts:
        raise DataError(f"{sft_path}: no prompt/completion text to train the tokenizer on")
    return texts


# Tokens the tokenizer never forms (the merges that would make them are left out), so that the
# model writes these words in tokens that guided decoding allows. xgrammar (0.2.8, 0.2.9) leaves
# some valid tokens out of its token mask: `Ã©levÃ©e` (`élevée`, beside `Ã©e`) was never allowed,
# and the served model answered `modérée` where it meant `élevée` (`python -m serve.grammar_audit`
# finds such tokens; docs/serving.md). Without it, `élevée` is `Ã©` + `levÃ©e`, which the mask
# allows. Named by the token, not the merge: a tokenizer trained on other text may reach it by
# another pair.
UNMERGED: tuple[str, ...] = ("Ã©levÃ©e",)


def without_merges(tok, tokens: tuple[str, ...] = UNMERGED, *, missing_ok: bool = False):
    """The `tokenizers.Tokenizer` `tok` without the BPE merges that form `tokens` (its vocabulary
    and ids unchanged: those tokens stay, unused). A token no merge forms is an error, unless
    `missing_ok` (a freshly trained tokenizer need not have learnt it)."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    held = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["model"]["merges"]
    ]
    formed = {"".join(m) for m in held}
    missing = [t for t in tokens if t not in formed]
    if missing and not missing_ok:
        raise ValueError(f"no merge of the tokenizer forms {missing}: nothing to leave out")
    spec["model"]["merges"] = [list(m) for m in held if "".join(m) not in tokens]
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE with one token per digit and per key, as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            # GPT-2's word split, with `_` inside words: each measurement key (`valgus_genou`)
            # becomes one token, where the stock split made three to five. Prompts are 10 %
            # shorter.
            pre_tokenizers.Split(Regex(WORD_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 bytes are in the vocabulary, so any text (any language, any symbol) encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok = without_merges(tok, missing_ok=True)
    bos_id = tok.token_to_id("<bos>")
    # Like Gemma's tokenizer: plain encoding starts with <bos>; the chat template writes its own.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", END_OF_TURN],
        model_max_length=MAX_POSITIONS,
        padding_side="left",
    )
    wrapped.chat_template = GEMMA3_CHAT_TEMPLATE
    return wrapped


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
        # (the recipe's comment and docs/training.md give the figures).
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        # Gemma 3 RMS-normalises q and k and LoRA never trains those norms, so the attention
        # logits are capped at head_dim / sqrt(query_pre_attn_scalar): 4 lets a head attend
        # sharply to one prompt value (Gemma 3's default, 256, caps them at 2 and the model
        # ignores the prompt; 1 scored lower than 4, docs/training.md).
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
    (`training.copy_probe`, no label or threshold), the ability a pretrained base brings and LoRA
    cannot teach a random one; `stages` (instead) runs several pretraining stages in turn, the
    first with the build's `seed`: `make tiny-pretrain` builds the committed base with
    PRETRAIN_STAGES. docs/training.md ("Copying", "Ranking", "Describing") measures them.
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
            records.append(_pretrain_stage(tmp, tokenizer, stage))
            print(f"pretraining stage {i + 1}/{len(stages)}: {json.dumps(records[-1])}", flush=True)
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


def _pretrain_stage(folder: Path, tokenizer, stage: PretrainStage) -> dict:
    """Pretrain the base saved in `folder` for one stage, in place, and return what to record.

    It loads the saved bf16 weights in fp32, as `python -m training.copy_probe` does, so that both
    train the same numbers: converting the model in memory instead leaves its rotary frequencies
    rounded to bf16, and that draw had not learnt to copy by step 750 (loss 0.54 against 0.27)."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.copy_probe import PROBES, RANK_PROBES, pretrain, probe, probe_rank

    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=torch.float32,
        attn_implementation="eager",  # Gemma 3 trains with eager
    )
    started = time.perf_counter()
    losses = pretrain(
        model,
        tokenizer,
        stage.steps,
        seed=stage.seed,
        rank_share=stage.rank_share,
        describe_share=stage.describe_share,
    )
    record = {
        "steps": stage.steps,
        "seed": stage.seed,
        "rank_share": stage.rank_share,
        "describe_share": stage.describe_share,
        "seconds": round(time.perf_counter() - started),
        "loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "copy_exact": probe(model, tokenizer, PROBES, stage.seed),
    }
    if stage.rank_share:
        record["rank_first"] = probe_rank(model, tokenizer, RANK_PROBES, stage.seed)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    return record


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
            "`git checkout -- training/tiny_base`, or rebuild it with `make tiny-pretrain`"
        )
    recorded = json.loads(manifest.read_text()).get("sha256") or {}
    for name in CHECKED_FILES:
        digest = recorded.get(name)
        if digest is None or not (source / name).exists() or _sha256(source / name) != digest:
            raise SystemExit(
                f"{source / name} does not match the sha256 in {manifest}: the committed tiny "
                "base is damaged; restore it with `git checkout -- training/tiny_base`, or "
                "rebuild it with `make tiny-pretrain`"
            )
    with atomic_dir(Path(out_dir)) as tmp:
        for path in source.iterdir():
            if path.is_file():
                shutil.copy2(path, tmp / path.name)
    return Path(out_dir)


def main(cfg: TinyModelConfig) -> Path:
    """Build the tiny base where the settings say and print a short summary."""
    from aria.settings import get_settings

    settings = get_settings()
    out_dir = cfg.out_dir or settings.models_dir.parent / "tiny" / "base"
    sft_path = cfg.sft_path or settings.training_dir / "sft.jsonl"
    if cfg.scratch:
        stages = PRETRAIN_STAGES if cfg.pretrain else ()
        path = build_tiny_model(out_dir, sft_path, cfg.seed, cfg.copy_steps, stages)
    else:
        path = install_pretrained(out_dir)
    build = json.loads((path / "aria_build.json").read_text())
    origin = "built" if cfg.scratch else f"installed from {PRETRAINED_DIR}"
    print(
        f"tiny base model: {path}  ({build['parameters'] / 1e6:.2f}M parameters, "
        f"seed {build['seed']}, {origin})"
    )
    print(f"tokenizer trained on {build['sft_path']}")
    if build.get("copy_steps"):
        print(
            f"copy pretraining: {build['copy_steps']} steps, "
            f"copies {build['copy_exact']:.1%} of values"
        )
    for stage in build.get("stages", [])[1:]:
        print(
            f"then {stage['steps']} steps, ranking {stage['rank_share']:.0%} and describing "
            f"{stage['describe_share']:.0%} of examples: first key ranked right for "
            f"{stage.get('rank_first', 0):.0%} of held-out tables"
        )
    return path


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
        "ranking, describing), --out-dir training/tiny_base (make tiny-pretrain)",
    )
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="build from random weights and a tokenizer trained on --sft-path, instead of "
        "installing the committed pretrained base (training/tiny_base)",
    )
    parser.add_argument(
        "--copy-steps",
        type=int,
        default=0,
        help="with --scratch: pretrain the base on copying first (docs/training.md, Copying); "
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
    main(parse_args())
