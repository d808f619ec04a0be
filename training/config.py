"""Typed arguments of the training stages and the loading of their recipes.

    >>> from training.config import parse_sft_args
    >>> script_args, training_args, model_args = parse_sft_args(["--max_steps", "6"], settings=Settings())

A recipe is a flat YAML file per profile and stage, `training/recipes/<profile>/<stage>.yaml`;
with no `--config` flag the active profile's recipe (ARIA_PROFILE) is loaded, and any command-line
flag overrides it (TRL's TrlParser: defaults < YAML < CLI). Paths (base model, data, checkpoints,
merged model) are not in the recipes: they default from the Settings the entry point resolved
(aria.settings), so one YAML serves every machine, and flags can still set them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aria.settings import Settings
from training.merge import DEFAULT_PARITY_TOLERANCE

RECIPES_DIR = Path(__file__).parent / "recipes"
STAGE_NAMES = ("sft", "dpo")
# The linear layers LoRA adapts: every projection of Gemma 3's language model.
LANGUAGE_MODEL_LINEAR = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
# Modules of a multimodal Gemma 3 that LoRA must leave alone (SigLIP also has q/k/v_proj).
NOT_LANGUAGE_MODEL = ("vision_tower", "multi_modal_projector")


@dataclass
class PublishArguments:
    """Resume, merge, parity and quick-eval settings of both stages (SFT and DPO)."""

    merged_dir: str | None = field(
        default=None,
        metadata={"help": "where the merged bf16 model goes (default: aria-ft-sft or aria-ft-dpo)"},
    )
    resume: bool = field(
        default=True,
        metadata={"help": "resume from the last checkpoint in output_dir; false starts over"},
    )
    quick_eval_size: int = field(
        default=-1,
        metadata={"help": "eval.jsonl examples scored after merging (-1: all, 0: skip)"},
    )
    eval_path: str | None = field(
        default=None, metadata={"help": "quick-eval set (default: data/eval/eval.jsonl)"}
    )
    parity_tolerance: float = field(
        default=DEFAULT_PARITY_TOLERANCE,
        metadata={
            "help": "max |logit diff| between adapter and merge, as a share of the largest |logit| "
            "(training/merge.py)"
        },
    )


@dataclass
class SFTScriptArguments(PublishArguments):
    """Data, evaluation and publication settings of `python -m training.train_sft`."""

    sft_path: str | None = field(
        default=None, metadata={"help": "SFT JSONL (default: data/training/<sft_file>)"}
    )
    sft_file: str = field(
        default="sft.jsonl",
        metadata={
            "help": "file of data/training/ to train on when --sft_path is not given "
            "(the tiny recipe takes sft_extended.jsonl)"
        },
    )
    eval_size: int = field(
        default=100,
        metadata={"help": "examples of sft.jsonl held out for evaluation during training"},
    )
    batch_by_kind: bool = field(
        default=False,
        metadata={
            "help": "each batch holds one kind of answer (JSON diagnostics or free-text reports), "
            "batches in a seeded random order: one long report pads a whole batch of short "
            "diagnostics to its length (sets train_sampling_strategy to sequential). General: "
            "any set mixing the two kinds (sft.jsonl's 12 % of reports too); it orders rows and "
            "touches neither the model nor the vocabulary"
        },
    )
    label_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight of the pathology's tokens in the loss, in the diagnostic's JSON and "
            "in the report (1: TRL's own loss); the label comes first in the seed's order and is "
            "picked in one forward pass. General: it weighs TRL's per-token log-probabilities, "
            "no full logits, so it is safe at MedGemma's 262k vocabulary (training/label_loss.py)"
        },
    )
    confidence_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight of the confidence band's tokens in the loss, in the diagnostic's JSON "
            "and in the report (1: unweighted); the band is the second field of the seed's order. "
            "General, as label_loss_weight (training/label_loss.py)"
        },
    )


@dataclass
class DPOScriptArguments(PublishArguments):
    """Data, evaluation and publication settings of `python -m training.train_dpo`."""

    dpo_path: str | None = field(
        default=None, metadata={"help": "DPO JSONL (default: data/training/dpo.jsonl)"}
    )
    eval_size: int = field(
        default=40,
        metadata={"help": "triplets of dpo.jsonl held out for evaluation during training"},
    )


def recipe_path(stage: str, profile: str) -> Path:
    """training/recipes/<profile>/<stage>.yaml."""
    if stage not in STAGE_NAMES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_NAMES)}")
    return RECIPES_DIR / profile / f"{stage}.yaml"


def checkpoints_dir(stage: str, settings: Settings) -> Path:
    """data/checkpoints/<profile>/<stage>: adapters, checkpoints and TensorBoard runs of a stage."""
    return settings.aria_data_dir / "checkpoints" / settings.aria_profile / stage


def _parse(parser: Any, args: list[str]) -> tuple[Any, ...]:
    try:
        return parser.parse_args_and_config(args)
    except ValueError as error:
        if "bf16/gpu" not in str(error):
            raise
        recipe = args[args.index("--config") + 1] if "--config" in args else "the recipe"
        raise SystemExit(no_bf16_message(recipe)) from None


def no_bf16_message(recipe: str) -> str:
    """Why a bf16 recipe cannot train here, and the fix for this machine (GPU without bf16, CPU)."""
    import torch

    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        return (
            f"{recipe} trains in bf16 mixed precision and this GPU ({gpu}) has no bf16 (T4, V100 "
            "lack it). Gemma 3 overflows in float16, so train in float32 compute: add "
            '`ARGS="--bf16 false --dtype float32"` (slower, more memory), or use a GPU with '
            "bf16 (A10, L4, A100, H100). Merges then run on the CPU; serve with VLLM_DTYPE=float32."
        )
    return (
        f"{recipe} trains in bf16 mixed precision, which needs a GPU with bf16: run it on a GPU "
        "machine, or use ARIA_PROFILE=tiny on CPU (or add --use_cpu true to try it on CPU)"
    )


def _with_recipe(stage: str, argv: list[str] | None, profile: str) -> list[str]:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in args:
        args = ["--config", str(recipe_path(stage, profile)), *args]
    return args


def parse_sft_args(
    argv: list[str] | None = None, *, settings: Settings
) -> tuple[SFTScriptArguments, Any, Any]:
    """(script args, SFTConfig, ModelConfig) from the profile's sft.yaml (or --config) and flags
    (`argv`, default sys.argv); `settings` give the profile and the default paths."""
    from trl import ModelConfig, SFTConfig, TrlParser

    parser = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))
    parser.set_defaults(
        model_name_or_path=settings.stage_model("base"),
        output_dir=str(checkpoints_dir("sft", settings)),
        merged_dir=str(settings.model_dir("aria-ft-sft")),
        eval_path=str(settings.eval_path),
    )
    script_args, training_args, model_args = _parse(
        parser, _with_recipe("sft", argv, settings.aria_profile)
    )
    if script_args.sft_path is None:
        script_args.sft_path = str(settings.training_dir / script_args.sft_file)
    check_lora_args(model_args)
    return script_args, training_args, model_args


def parse_dpo_args(
    argv: list[str] | None = None, *, settings: Settings
) -> tuple[DPOScriptArguments, Any, Any]:
    """(script args, DPOConfig, ModelConfig) from the profile's dpo.yaml (or --config) and flags
    (`argv`, default sys.argv); `settings` give the profile and the default paths."""
    from trl import DPOConfig, ModelConfig, TrlParser

    parser = TrlParser((DPOScriptArguments, DPOConfig, ModelConfig))
    parser.set_defaults(
        model_name_or_path=settings.stage_model("aria-ft-sft"),
        output_dir=str(checkpoints_dir("dpo", settings)),
        dpo_path=str(settings.training_dir / "dpo.jsonl"),
        merged_dir=str(settings.model_dir("aria-ft-dpo")),
        eval_path=str(settings.eval_path),
    )
    script_args, training_args, model_args = _parse(
        parser, _with_recipe("dpo", argv, settings.aria_profile)
    )
    check_lora_args(model_args)
    return script_args, training_args, model_args


# Every ModelConfig flag, by what the recipes do with it: a flag in neither tuple fails a test,
# so a new TRL flag cannot be accepted and silently ignored.
MODEL_FLAGS_USED = (
    "model_name_or_path",
    "model_revision",
    "dtype",
    "attn_implementation",
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "lora_target_parameters",
    "lora_task_type",
    "use_rslora",
    "use_dora",
    "load_in_4bit",
    "bnb_4bit_quant_type",
    "use_bnb_nested_quant",
    "bnb_4bit_quant_storage",
)
MODEL_FLAGS_REFUSED = ("lora_modules_to_save", "load_in_8bit")


def check_lora_args(model_args: Any) -> None:
    """Refuse model flags the recipes cannot honour (an unservable adapter, not QLoRA), with why."""
    if model_args.lora_modules_to_save:
        raise SystemExit(
            f"lora_modules_to_save={model_args.lora_modules_to_save} is refused: modules_to_save "
            "stores full copies of those layers in the adapter, which vLLM cannot serve. "
            "Remove it from the recipe or the command line."
        )
    if not model_args.use_peft:
        raise SystemExit("use_peft must be true: the ARIA recipes train LoRA adapters (QLoRA)")
    if model_args.load_in_8bit:
        raise SystemExit(
            "load_in_8bit is refused: the ARIA recipes are QLoRA on a 4-bit NF4 base "
            "(load_in_4bit true); remove load_in_8bit from the recipe or the command line"
        )
    if not model_args.load_in_4bit:
        raise SystemExit("load_in_4bit must be true: the ARIA recipes are QLoRA (4-bit base)")
    if model_args.lora_task_type != "CAUSAL_LM":
        raise SystemExit(
            f"lora_task_type={model_args.lora_task_type} is refused: ARIA trains a causal "
            "language model (CAUSAL_LM)"
        )


def language_model_lora_targets(modules: list[str] | None) -> str:
    """A PEFT target regex: the given linear layers (default: all of them) of the language model
    only, never of a vision tower or projector."""
    names = [m for m in (modules or LANGUAGE_MODEL_LINEAR) if m != "all-linear"] or list(
        LANGUAGE_MODEL_LINEAR
    )
    excluded = "|".join(NOT_LANGUAGE_MODEL)
    wanted = "|".join(re.escape(n) for n in names)
    return rf"^(?!.*(?:{excluded})).*\.(?:{wanted})$"


def lora_config(model_args: Any):
    """TRL's `get_peft_config` of the recipe (DoRA, rsLoRA, target parameters included), its
    target modules narrowed to the language model; no modules_to_save."""
    from dataclasses import replace

    from trl import get_peft_config

    check_lora_args(model_args)
    targets = language_model_lora_targets(model_args.lora_target_modules)
    return get_peft_config(replace(model_args, lora_target_modules=targets))


def quantization_config(model_args: Any, compute_dtype: Any, quant_storage: Any = None):
    """TRL's `get_quantization_config` of the recipe (NF4, double quantization, quant storage),
    computing in `compute_dtype` (bf16, or what the hardware has).

    `quant_storage` (FSDP, ZeRO-3: the compute dtype) packs the 4-bit weights in a dtype the
    sharding can flatten with the rest, unless the recipe sets bnb_4bit_quant_storage itself.
    """
    from dataclasses import replace

    from trl import get_quantization_config

    check_lora_args(model_args)
    storage = model_args.bnb_4bit_quant_storage or quant_storage
    return get_quantization_config(
        replace(model_args, dtype=compute_dtype, bnb_4bit_quant_storage=storage)
    )


def compute_dtype(model_args: Any):
    """The 4-bit compute dtype: the recipe's `dtype` (bf16) unless the hardware lacks bf16."""
    import torch

    wanted = model_args.dtype if model_args.dtype not in (None, "auto") else "bfloat16"
    dtype = getattr(torch, wanted)
    if dtype == torch.bfloat16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return torch.float16
    return dtype
