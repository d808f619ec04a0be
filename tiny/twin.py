"""Build a tiny random multimodal Gemma 3 saved the way the Hub's MedGemma 4B-it is (a CPU twin).

    python -m tiny.twin --out-dir /tmp/medgemma-twin      # seconds, on a CPU

The twin is a `Gemma3ForConditionalGeneration` (SigLIP vision tower, projector, Gemma 3 language
model) with MedGemma's layout at toy sizes: config.json with a `vision_config` and a
`text_config`, the Hub's weight names (`language_model.model.*`, `vision_tower.vision_model.*`,
`multi_modal_projector.*`; transformers renames them on load and back on save), a tokenizer with
the chat template and the image tokens (`<start_of_image>`, `<image_soft_token>`,
`<end_of_image>`), the processor's files and a generation config. Its language model takes the
tiny base's tokenizer and weights (`make tiny-model`), so the ARIA datasets tokenize as they do
there and its logits have a trained model's scale rather than a random init's. It lets
`make convert-base` and the medgemma profile's recipes run on a CPU (tests/test_convert_base.py).
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

log = logging.getLogger(__name__)

# The Hub's MedGemma 4B-it image tokens (tokenizer_config.json), in its order.
IMAGE_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}
# The Hub's MedGemma 4B-it weight names (model.safetensors.index.json), by prefix.
HUB_VISION_PREFIX = "vision_tower.vision_model."
HUB_WEIGHT_PREFIXES = ("language_model.model.", HUB_VISION_PREFIX, "multi_modal_projector.")
IMAGE_SIZE = 56  # pixels; 4 x 4 patches of 14, pooled to 2 x 2 = 4 image tokens
PATCH_SIZE = 14
MM_TOKENS_PER_IMAGE = 4


@dataclass
class TwinConfig:
    """Where the twin goes, which text base lends it its tokenizer, dimensions and weights, the
    seed of the vision tower and the image tokens' rows."""

    out_dir: Path
    text_base: Path | None = None  # default: data/models/tiny/base
    seed: int = 0


# google/medgemma-4b-it's generation_config.json, less its token ids.
MEDGEMMA_SAMPLING = {"do_sample": True, "top_k": 64, "top_p": 0.95}


def twin_tokenizer(text_base: Path):
    """The text base's tokenizer with MedGemma's three image tokens added as special tokens."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(text_base)
    tokenizer.add_tokens(
        [AddedToken(t, special=True) for t in IMAGE_TOKENS.values()], special_tokens=True
    )
    return tokenizer


def name_image_tokens(folder: Path) -> None:
    """Name the image tokens in tokenizer_config.json as the Hub's MedGemma does (`boi_token`,
    `eoi_token`, `image_token`: the attributes Gemma3Processor reads)."""
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(IMAGE_TOKENS, processor_class="Gemma3Processor")
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def twin_config(text_base: Path, tokenizer):
    """A Gemma3Config: the text base's language model dimensions, a two-layer SigLIP tower."""
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    text = json.loads((Path(text_base) / "config.json").read_text())
    for key in ("architectures", "model_type", "transformers_version", "dtype", "torch_dtype"):
        text.pop(key, None)
    text["vocab_size"] = len(tokenizer)
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        vision_use_head=False,  # as MedGemma: the projector reads the patch embeddings
    )
    ids = {name: tokenizer.convert_tokens_to_ids(t) for name, t in IMAGE_TOKENS.items()}
    return Gemma3Config(
        text_config=Gemma3TextConfig(**text),
        vision_config=vision,
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"],
        image_token_index=ids["image_token"],
        dtype="bfloat16",
    )


def processor_files() -> dict[str, dict]:
    """processor_config.json and preprocessor_config.json as MedGemma's, at the twin's size."""
    processor = {"image_seq_length": MM_TOKENS_PER_IMAGE, "processor_class": "Gemma3Processor"}
    preprocessor = {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_pan_and_scan": None,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "Gemma3ImageProcessor",
        "image_seq_length": MM_TOKENS_PER_IMAGE,
        "image_std": [0.5, 0.5, 0.5],
        "pan_and_scan_max_num_crops": None,
        "pan_and_scan_min_crop_size": None,
        "pan_and_scan_min_ratio_to_activate": None,
        "processor_class": "Gemma3Processor",
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }
    return {"processor_config.json": processor, "preprocessor_config.json": preprocessor}


def copy_text_base_weights(model, text_base: Path) -> None:
    """Give the twin's language model the text base's weights; the image tokens' embedding rows
    are drawn like the tiny base's (a random Gemma init gives near-zero logits, unlike a
    trained MedGemma). Converting the twin gives the text base back, plus those rows."""
    import torch
    from safetensors.torch import load_file

    from tiny.build import EMBEDDING_INIT_STD

    weights = load_file(Path(text_base) / "model.safetensors")
    language_model = model.model.language_model
    embed = weights.pop("model.embed_tokens.weight")
    state = {k.removeprefix("model."): v for k, v in weights.items() if k != "lm_head.weight"}
    with torch.no_grad():
        rows = language_model.embed_tokens.weight
        rows.normal_(0.0, EMBEDDING_INIT_STD)
        rows[: embed.shape[0]] = embed.to(rows.dtype)
    missing, unexpected = language_model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "embed_tokens.weight"]:
        raise RuntimeError(
            f"{text_base} is not a Gemma 3 text model: {missing[:3]} {unexpected[:3]}"
        )


def hub_weight_names(folder: Path) -> None:
    """Rename the saved weights to the Hub's MedGemma names where transformers' save differs.

    transformers 5 writes `language_model.model.*` and `multi_modal_projector.*` as the Hub does,
    but `vision_tower.*` where the Hub has `vision_tower.vision_model.*`; it loads both.
    """
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "model.safetensors"
    weights = load_file(path)
    renamed = {
        HUB_VISION_PREFIX + k.removeprefix("vision_tower.")
        if k.startswith("vision_tower.") and not k.startswith(HUB_VISION_PREFIX)
        else k: v
        for k, v in weights.items()
    }
    unknown = [k for k in renamed if not k.startswith(HUB_WEIGHT_PREFIXES)]
    if unknown:
        raise RuntimeError(f"weights outside MedGemma's layout: {unknown[:3]}")
    save_file(renamed, path, metadata={"format": "pt"})


def build_twin(out_dir: Path, text_base: Path, seed: int = 0) -> Path:
    """Write the twin into `out_dir`, atomically; the same base and seed give the same weights."""
    import torch
    from transformers import Gemma3ForConditionalGeneration, GenerationConfig

    text_base = Path(text_base)
    if not (text_base / "tokenizer.json").exists():
        raise SystemExit(f"{text_base} has no tokenizer.json: run `make tiny-model` first")
    tokenizer = twin_tokenizer(text_base)
    config = twin_config(text_base, tokenizer)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    copy_text_base_weights(model, text_base)
    model = model.to(torch.bfloat16)
    base_generation = json.loads((text_base / "generation_config.json").read_text())
    # The Hub's MedGemma stops on <eos> and <end_of_turn> too, and ships Gemma 3's sampling
    # defaults, which vLLM would apply to every request (the conversion drops them).
    model.generation_config = GenerationConfig(
        **{k: v for k, v in base_generation.items() if k.endswith("token_id")},
        **MEDGEMMA_SAMPLING,
    )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        hub_weight_names(tmp)
        tokenizer.save_pretrained(tmp)
        name_image_tokens(tmp)
        for name, content in processor_files().items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        (tmp / "aria_build.json").write_text(
            json.dumps({"twin_of": "google/medgemma-4b-it", "text_base": str(text_base),
                        "seed": seed, "parameters": n_params}, indent=2) + "\n"
        )  # fmt: skip
    return Path(out_dir)


def main(cfg: TwinConfig, settings: Settings) -> dict:
    """Build the twin (its language model: cfg.text_base, else the settings' tiny base) and log
    where it is; returns its aria_build.json with its `path`."""
    text_base = cfg.text_base or settings.models_dir.parent / "tiny" / "base"
    path = build_twin(cfg.out_dir, text_base, cfg.seed)
    build = json.loads((path / "aria_build.json").read_text())
    log.info(
        "multimodal twin: %s (%.2fM parameters, seed %s)", path, build["parameters"] / 1e6, cfg.seed
    )
    return {"path": str(path), **build}


def parse_args(argv: list[str] | None = None) -> TwinConfig:
    """Command-line flags → TwinConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--text-base", type=Path, default=None, help="default: the tiny base")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    return TwinConfig(a.out_dir, a.text_base, a.seed)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(), settings)
