"""A model folder (or Hub id) as the training stages read and write it: its config.json, its
bf16 weights on the compute device, the generation config a served model ships.

    >>> from training.model_files import load_bf16, compute_device
    >>> model = load_bf16("data/models/tiny/aria-ft-sft", device=compute_device())

The merge (training/merge.py), the base conversion, the quick eval, the training stages and the
tiny model's build share these; torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path

END_OF_TURN = "<end_of_turn>"


def model_config_dict(name_or_path: str, token: str | None = None) -> dict:
    """The raw config.json of a local folder or a Hub id (fetched with `token`: gated repos)."""
    local = Path(name_or_path) / "config.json"
    if local.exists():
        return json.loads(local.read_text())
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(name_or_path, token=token).to_dict()


def refuse_quantized_base(name_or_path: str, token: str | None = None) -> None:
    """SystemExit when the base is stored quantized: LoRA must merge into bf16 weights."""
    quant = model_config_dict(name_or_path, token).get("quantization_config")
    if quant:
        method = quant.get("quant_method", "quantized")
        raise SystemExit(
            f"refusing to merge into {name_or_path}: it is a {method} (quantized) model. Merge the "
            "adapter into the bf16 base (the model the adapter was trained on, loaded unquantized)"
        )


def is_multimodal(name_or_path: str, token: str | None = None) -> bool:
    """True for Gemma3ForConditionalGeneration-style models (a vision tower next to the LM)."""
    return "vision_config" in model_config_dict(name_or_path, token)


def compute_device() -> str:
    """Where merges, parity checks and quick evals run: "cuda" on a GPU with bf16, else "cpu".

    A GPU without bf16 (T4, V100) would emulate the bf16 merge or overflow in fp16; the CPU
    computes it exactly (slower), so those GPUs merge on the CPU.
    """
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "cuda"
    return "cpu"


def release_memory() -> None:
    """Give back the memory of models whose last reference was just dropped, GPU included.

    accelerate's bf16 autocast wraps `model.forward` in a reference cycle, so `del model` alone
    frees nothing until the garbage collector runs; then CUDA's cache returns the blocks.
    """
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_bf16(
    name_or_path: str, token: str | None = None, device: str | None = None, revision: str = "main"
):
    """The model in bf16 with eager attention (Gemma 3's recommended attention for training),
    placed on `device` (default: `compute_device()`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    multimodal = is_multimodal(name_or_path, token)
    auto = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
    return auto.from_pretrained(
        name_or_path,
        revision=revision,
        dtype=torch.bfloat16,
        attn_implementation="eager",
        token=token,
        device_map=device or compute_device(),
    )


def eos_ids_with_end_of_turn(tokenizer, generation_config) -> list[int]:
    """The generation config's EOS ids plus <end_of_turn>, so chat answers stop at the turn end."""
    ids = generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    for token in (tokenizer.eos_token, END_OF_TURN):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids


def serving_generation_config(tokenizer, generation_config):
    """The generation config a served model ships: its token ids only, the EOS ids extended with
    <end_of_turn>. vLLM applies a model's generation_config.json sampling values (Gemma 3 ships
    do_sample, top_k 64, top_p 0.95) as request defaults, so the requests alone decide sampling."""
    from transformers import GenerationConfig

    ids = {k: v for k, v in generation_config.to_dict().items() if k.endswith("token_id")}
    ids["eos_token_id"] = eos_ids_with_end_of_turn(tokenizer, generation_config)
    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None})
