"""Every ModelConfig flag is honoured through TRL's own helpers, or refused with a message."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aria.settings import Settings
from training.config import (
    MODEL_FLAGS_REFUSED,
    MODEL_FLAGS_USED,
    lora_config,
    parse_sft_args,
    quantization_config,
)


def model_args(*flags: str):
    return parse_sft_args(list(flags), settings=Settings(_env_file=None))[2]


def test_every_trl_model_flag_is_used_or_refused():
    """A flag TRL adds must be classified here before the recipes accept it."""
    from trl import ModelConfig

    names = {f.name for f in dataclasses.fields(ModelConfig)}
    assert names == set(MODEL_FLAGS_USED) | set(MODEL_FLAGS_REFUSED)


def test_dora_rslora_and_target_parameters_reach_the_adapter():
    peft = lora_config(
        model_args(
            *("--use_dora", "true", "--use_rslora", "true"),
            *("--lora_target_parameters", "mlp.experts.gate_up_proj"),
        )
    )
    assert peft.use_dora and peft.use_rslora
    assert peft.target_parameters == ["mlp.experts.gate_up_proj"]
    # Still the language model's linear layers only, never the vision tower's.
    assert "vision_tower" in peft.target_modules and "q_proj" in peft.target_modules


def test_quant_storage_and_double_quant_reach_bitsandbytes():
    args = model_args("--bnb_4bit_quant_storage", "bfloat16")
    config = quantization_config(args, torch.float32)
    assert config.bnb_4bit_quant_storage == torch.bfloat16
    assert config.bnb_4bit_use_double_quant == args.use_bnb_nested_quant
    assert config.bnb_4bit_compute_dtype == torch.float32


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--load_in_8bit", "true", "--load_in_4bit", "false"), "load_in_8bit is refused"),
        (("--lora_modules_to_save", "lm_head"), "vLLM cannot serve"),
        (("--lora_task_type", "SEQ_CLS"), "lora_task_type=SEQ_CLS is refused"),
        (("--use_peft", "false"), "use_peft must be true"),
    ],
)
def test_a_flag_the_recipes_cannot_honour_is_refused(flags, message):
    with pytest.raises(SystemExit, match=message):
        model_args(*flags)


def test_the_revision_reaches_the_loaders(monkeypatch):
    """model_revision is passed to the 4-bit load and the tokenizer, not dropped."""
    import transformers

    seen = {}

    def record(kind):
        def load(name, **kwargs):
            seen[kind] = kwargs.get("revision")
            raise RuntimeError("stop here")

        return load

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    from training.stages import load_tokenizer_and_model

    args = model_args("--model_revision", "0123abc")
    with pytest.raises(RuntimeError, match="stop here"):
        load_tokenizer_and_model("tiny/base", args, None)
    assert seen == {"tokenizer": "0123abc"}
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record("model"))
    from training.stages import load_quantized

    with pytest.raises(RuntimeError, match="stop here"):
        load_quantized("tiny/base", args, None)
    assert seen["model"] == "0123abc"
