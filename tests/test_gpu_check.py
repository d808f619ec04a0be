"""The GPU check's orchestration on a CPU: its stages, the 4B builder, the sampler's figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scripts import gpu_check


def test_the_stages_cover_the_medgemma_path_in_order(tmp_path):
    names = [s.name for s in gpu_check.stages(tmp_path, 20, 8, cpu=False)]
    assert names.index("twin: convert-base") < names.index("twin: SFT + merge")
    assert names.index("4B: random init") < names.index("4B: SFT + merge + parity + quick eval")
    assert names[-3:] == [
        "4B: serve (vLLM, memory plan)",
        "4B: benchmark (8 requests)",
        "4B: serve-stop",
    ]
    every = gpu_check.stages(tmp_path, 20, 8, cpu=True, serve=False)
    assert all(s.env["ARIA_PROFILE"] == "medgemma" for s in every)
    assert not any("serve" in s.name for s in every)
    sft = next(s for s in every if s.name.startswith("4B: SFT"))
    assert "--use_cpu" in sft.argv and sft.argv[sft.argv.index("--max_steps") + 1] == "20"


def test_the_4b_builder_writes_a_medgemma_base_with_a_chat_template(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    out = gpu_check.build_4b(str(tmp_path / "base"), gpu_check.SMALL_DIMS)
    config = AutoConfig.from_pretrained(out)
    assert config.vocab_size == 262_208 and config.num_hidden_layers == 2
    assert config.architectures == ["Gemma3ForCausalLM"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert "<start_of_turn>" in chat
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in eos


def test_a_stage_reports_its_time_peak_memory_and_exit_code(tmp_path):
    stage = gpu_check.Stage(
        "alloc", [sys.executable, "-c", "b = bytearray(300_000_000); import time; time.sleep(0.5)"]
    )
    row = gpu_check.run_stage(stage, gpu_check.PeakMemory(), tmp_path)
    assert row["exit_code"] == 0 and row["memory_source"] == "cpu_rss"
    assert row["peak_gb"] >= 0.3 and Path(row["log"]).exists()
    failing = gpu_check.Stage("fail", [sys.executable, "-c", "raise SystemExit(3)"])
    assert gpu_check.run_stage(failing, gpu_check.PeakMemory(), tmp_path)["exit_code"] == 3
