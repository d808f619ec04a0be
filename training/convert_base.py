"""Convert MedGemma (Gemma3ForConditionalGeneration) into the text-only Gemma3ForCausalLM base.

    python -m training.convert_base                  # make convert-base (ARIA_PROFILE=medgemma)
    ARIA_PROFILE=medgemma ARIA_BASE_SOURCE=/models/medgemma-4b-it make convert-base

ARIA sends no images, so SFT, the merges, DPO and serving all run on one model class, the one
the tiny profile exercises in CI: Gemma 3's causal language model. This keeps the language
model's weights as they are (the vision tower and the projector are left out), the tokenizer
with its chat template, and a generation config whose EOS ids include `<end_of_turn>`. Before
the folder is published, the multimodal model and the converted one, both in float32, score the
same text prompts: the max |logit difference| must be at most 1e-3 (conversion.json holds the
figure). The source is ARIA_BASE_SOURCE (default: google/medgemma-4b-it), a Hub id or a local
folder; the result is the profile's base, data/models/<profile>/base.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from aria.files import atomic_dir, atomic_write_json
from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from training.model_files import (
    compute_device,
    model_config_dict,
    release_memory,
    serving_generation_config,
)

log = logging.getLogger(__name__)

CONVERSION_FILE = "conversion.json"
PARITY_MAX_ABS_DIFF = 1e-3  # float32: the same weights through the same layers
# Measurements whose prompts (diagnostic, report) and a plain sentence probe the conversion.
PROBE_MEASUREMENTS = {
    "inclinaison_tronc": 8.4,
    "valgus_genou": 6.2,
    "adduction_hanche": 9.1,
    "longueur_foulee": 1.21,
    "pronation_pied": 4.0,
    "heel_strike_index": 0.55,
    "dorsiflexion_max": 12.0,
}
PROBE_TEXT = "Le coureur ressent une douleur au genou après dix kilomètres."
README = """# {name}: MedGemma's language model, text only

Converted by `make convert-base` (training/convert_base.py) from `{source}`, a
`Gemma3ForConditionalGeneration`, into a `Gemma3ForCausalLM`: the language model's weights
unchanged, the tokenizer with its chat template, a generation config that stops on
`<end_of_turn>`.

The SigLIP vision tower and the multimodal projector were left out ({dropped:,} parameters):
ARIA sends no image, the weights are smaller, the server profiles no image input at start, and
SFT, the merges, DPO and serving all run on the one model class the tiny profile tests on a CPU.
Text prompts give the same logits as the multimodal model: max |difference| {max_diff:.2e} in
float32 on {positions} positions ({name}/conversion.json).
"""


class ConversionParityError(RuntimeError):
    """The converted model does not score text like the multimodal one; nothing was published."""


@dataclass
class ConvertConfig:
    """Which multimodal checkpoint to convert and where the text-only base goes."""

    source: str | None = None  # default: ARIA_BASE_SOURCE (google/medgemma-4b-it)
    out_dir: Path | None = None  # default: data/models/<profile>/base


def probe_messages() -> list[list[dict]]:
    """The chat prompts the parity check scores: ARIA's two calls and one plain sentence."""
    from aria.prompts import diagnostic_messages, report_messages

    return [
        diagnostic_messages(PROBE_MEASUREMENTS),
        report_messages(PROBE_MEASUREMENTS),
        [{"role": "user", "content": PROBE_TEXT}],
    ]


def refuse_non_multimodal(config: dict, source: str) -> None:
    """SystemExit unless `config` is a multimodal Gemma 3 (what MedGemma 4B-it is)."""
    if config.get("model_type") != "gemma3" or "text_config" not in config:
        raise SystemExit(
            f"{source} is not a multimodal Gemma 3 (model_type {config.get('model_type')!r}): "
            "convert-base reads a Gemma3ForConditionalGeneration such as google/medgemma-4b-it; "
            "a text-only Gemma 3 is a base already (point the stage folder at it)"
        )


def stored_dtype_name(config: dict) -> str:
    """The dtype the checkpoint is stored in (MedGemma: bfloat16), kept by the conversion."""
    for where in (config, config.get("text_config") or {}):
        for key in ("dtype", "torch_dtype"):
            if isinstance(where.get(key), str) and where[key] != "auto":
                return where[key]
    return "bfloat16"


def language_model_weights(model) -> dict:
    """The language model's tensors under Gemma3ForCausalLM's names (`model.*`; lm_head tied)."""
    return {f"model.{k}": v for k, v in model.model.language_model.state_dict().items()}


def text_logits(model, tokenizer, messages: list[list[dict]], device: str) -> list:
    """Float32 logits of each chat prompt, one prompt at a time (no padding), on the CPU."""
    import torch

    out = []
    for chat in messages:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.no_grad():
            out.append(model(**ids).logits.float().cpu())
    return out


def generation_config_with_end_of_turn(source: str, tokenizer, model_config, token: str | None):
    """The source's token ids (EOS extended with <end_of_turn>) without its sampling defaults
    (MedGemma ships do_sample, top_k 64, top_p 0.95, which vLLM would apply to every request)."""
    from transformers import GenerationConfig

    try:
        generation_config = GenerationConfig.from_pretrained(source, token=token)
    except OSError:
        generation_config = GenerationConfig.from_model_config(model_config)
    return serving_generation_config(tokenizer, generation_config)


def convert_base(
    source: str, out_dir: Path, token: str | None = None, source_name: str | None = None
) -> dict:
    """Write the text-only base of `source` into `out_dir` (atomically) if parity holds.
    `source_name` (default `source`): what the report and README call it (the Hub id of a snapshot).

    Returns the conversion report (also written to conversion.json). Raises
    ConversionParityError, leaving `out_dir` untouched, when a text prompt's logits differ by more
    than PARITY_MAX_ABS_DIFF.
    """
    import torch
    from huggingface_hub import save_torch_state_dict

    config = model_config_dict(source, token)
    refuse_non_multimodal(config, source)
    device = compute_device()
    tokenizer = chat_tokenizer(source, token)
    multimodal = load_multimodal(source, device, token)
    messages = probe_messages()
    reference = text_logits(multimodal, tokenizer, messages, device)
    stored_dtype = getattr(torch, stored_dtype_name(config))
    weights = {k: v.to(stored_dtype).cpu() for k, v in language_model_weights(multimodal).items()}
    total = sum(p.numel() for p in multimodal.parameters())
    text_config = text_only_config(multimodal.config, stored_dtype)
    generation_config = generation_config_with_end_of_turn(
        source, tokenizer, multimodal.config, token
    )
    del multimodal
    release_memory()

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        save_torch_state_dict(weights, tmp, max_shard_size="5GB")
        kept = sum(v.numel() for v in weights.values())
        del weights
        save_text_only_files(tmp, text_config, tokenizer, generation_config)
        logits = converted_logits(tmp, tokenizer, messages, device)
        report = conversion_report(
            source_name or source, stored_dtype, kept, total, reference, logits, device
        )
        report["eos_token_id"] = generation_config.eos_token_id
        refuse_failed_parity(report, out_dir)
        atomic_write_json(tmp / CONVERSION_FILE, report)
        (tmp / "README.md").write_text(readme(out_dir.name, source_name or source, report))
    return report


def chat_tokenizer(source: str, token: str | None):
    """The source's tokenizer; SystemExit when it has no chat template (ARIA's prompts need one)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, token=token)
    if not tokenizer.chat_template:
        raise SystemExit(f"{source}'s tokenizer has no chat template: ARIA's prompts need one")
    return tokenizer


def load_multimodal(source: str, device: str, token: str | None):
    """The multimodal checkpoint in float32 with eager attention (the parity reference)."""
    import torch
    from transformers import Gemma3ForConditionalGeneration

    return Gemma3ForConditionalGeneration.from_pretrained(
        source, dtype=torch.float32, attn_implementation="eager", device_map=device, token=token
    ).eval()


def text_only_config(multimodal_config, stored_dtype):
    """The language model's config, declared a Gemma3ForCausalLM in the stored dtype."""
    text_config = multimodal_config.text_config
    text_config.architectures = ["Gemma3ForCausalLM"]
    text_config.dtype = stored_dtype
    return text_config


def save_text_only_files(tmp: Path, text_config, tokenizer, generation_config) -> None:
    """Write the config, the tokenizer (without a processor class) and the generation config."""
    text_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    strip_processor_class(tmp)
    generation_config.save_pretrained(tmp)


def converted_logits(folder: Path, tokenizer, messages: list[list[dict]], device: str) -> list:
    """Load the written folder as a Gemma3ForCausalLM in float32 and score the probes; the model
    is freed before returning. ConversionParityError when a key is missing or unexpected."""
    import torch
    from transformers import Gemma3ForCausalLM

    converted, info = Gemma3ForCausalLM.from_pretrained(
        folder,
        dtype=torch.float32,
        attn_implementation="eager",
        device_map=device,
        output_loading_info=True,
    )
    if info["missing_keys"] or info["unexpected_keys"]:
        raise ConversionParityError(
            f"the converted weights do not load into Gemma3ForCausalLM: missing "
            f"{sorted(info['missing_keys'])[:3]}, unexpected {sorted(info['unexpected_keys'])[:3]}"
        )
    logits = text_logits(converted.eval(), tokenizer, messages, device)
    del converted
    release_memory()
    return logits


def conversion_report(
    source: str, stored_dtype, kept: int, total: int, reference: list, logits: list, device: str
) -> dict:
    """conversion.json without its eos_token_id: what was kept and the float32 parity figures."""
    max_diff = max(float((a - b).abs().max()) for a, b in zip(reference, logits, strict=True))
    return {
        "source": str(source),
        "architecture": "Gemma3ForCausalLM",
        "dtype": str(stored_dtype).removeprefix("torch."),
        "parameters_kept": kept,
        "parameters_dropped": total - kept,
        "parity": {
            "prompts": len(reference),
            "positions": sum(t.shape[1] for t in reference),
            "max_abs_logit_diff": max_diff,
            "tolerance": PARITY_MAX_ABS_DIFF,
            "dtype": "float32",
            "device": device,
            "passed": max_diff <= PARITY_MAX_ABS_DIFF,
        },
    }


def refuse_failed_parity(report: dict, out_dir: Path) -> None:
    """ConversionParityError when the report's parity did not pass (nothing is published)."""
    if not report["parity"]["passed"]:
        raise ConversionParityError(
            f"conversion parity failed, nothing published to {out_dir}: max |logit diff| "
            f"{report['parity']['max_abs_logit_diff']:.3g} > {PARITY_MAX_ABS_DIFF} on text "
            "prompts (float32)"
        )


def readme(name: str, source: str, report: dict) -> str:
    """The base folder's README.md: where it comes from, what was left out, the parity figure."""
    return README.format(
        name=name,
        source=source,
        dropped=report["parameters_dropped"],
        max_diff=report["parity"]["max_abs_logit_diff"],
        positions=report["parity"]["positions"],
    )


def strip_processor_class(folder: Path) -> None:
    """Drop `processor_class` from tokenizer_config.json: the text-only base has no processor."""
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.pop("processor_class", None) is not None:
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def main(cfg: ConvertConfig, settings: Settings) -> dict:
    """Convert the settings' (or the flags') source into the profile's base; log a summary, print
    the conversion report's JSON line and return it."""
    from training.preflight import hub_access, hub_token, local_model, require_model

    source = require_model(cfg.source or settings.base_source(), "source", settings)
    out_dir = cfg.out_dir or settings.model_dir("base")
    folder = local_model(source, settings)
    try:
        with hub_access(source, settings):
            report = convert_base(folder, out_dir, hub_token(settings), source)
    except ConversionParityError as error:
        raise SystemExit(str(error)) from None
    parity = report["parity"]
    log.info("text-only base: %s (Gemma3ForCausalLM, %s) from %s", out_dir, report["dtype"], source)
    log.info(
        "kept %s parameters, left out %s (vision tower, projector); parity max |logit diff| %.2e "
        "on %s positions (tolerance %s)",
        f"{report['parameters_kept']:,}",
        f"{report['parameters_dropped']:,}",
        parity["max_abs_logit_diff"],
        parity["positions"],
        parity["tolerance"],
    )
    print(json.dumps(report))
    return report


def parse_args(argv: list[str] | None = None) -> ConvertConfig:
    """Command-line flags → ConvertConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="Hub id or folder (ARIA_BASE_SOURCE)")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: the profile's base")
    a = parser.parse_args(argv)
    return ConvertConfig(a.source, a.out_dir)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(), settings)
