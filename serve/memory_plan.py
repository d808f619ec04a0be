"""How a GPU server's memory is spent: weights + KV cache + overhead under a budget (no torch).

    >>> from serve.memory_plan import MEDGEMMA_4B_TEXT, plan_memory
    >>> plan = plan_memory(MEDGEMMA_4B_TEXT, budget_gb=9.5, max_num_seqs=16, max_model_len=4096)
    >>> round(plan.kv_cache_gb, 2), plan.max_tokens_in_flight
    (0.51, 3636)

vLLM reserves `--gpu-memory-utilization` of the whole card and fills what the weights leave with
KV cache (70 GB of it on an 80 GB card), so the seed's "serving VRAM < 10 GB" holds only when the KV
cache is bounded by construction: `--kv-cache-memory-bytes` = budget - weights - overhead, and
`--max-num-seqs` small enough that the sampler's warm-up (max_num_seqs x vocabulary logits) and
the CUDA graphs stay inside the overhead. The KV figure counts Gemma 3's sliding-window layers
at their window, as vLLM's hybrid allocator does. GB are 10^9 bytes, as in the seed.
`python -m serve.memory_plan --cards` prints the table of cards in docs/serving.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from training.bench_training import GEMMA3_4B_TEXT

log = logging.getLogger(__name__)

GB = 1e9
# CUDA context, cuBLAS/attention workspaces and CUDA graphs of one vLLM engine, measured on the
# order of 1 GB for a 4B model; the sampler's logits come on top (see `overhead_bytes`).
CUDA_FIXED_OVERHEAD_GB = 1.2
# The engine's limits default to the settings' (VLLM_MEMORY_BUDGET_GB, VLLM_MAX_NUM_SEQS, ...).
DEFAULT_BUDGET_GB = Settings.model_fields["vllm_memory_budget_gb"].default
DEFAULT_MAX_NUM_SEQS = Settings.model_fields["vllm_max_num_seqs"].default
DEFAULT_MAX_MODEL_LEN = Settings.model_fields["vllm_max_model_len"].default
# The seed's targets the table of cards is judged against: the release gate's own file.
GATE_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "release_gate.yaml"
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1}


@dataclass(frozen=True)
class ModelShape:
    """What serving memory depends on: layer counts, KV heads, the vocabulary, the weights."""

    name: str
    full_layers: int  # global attention: the KV cache grows with the whole sequence
    sliding_layers: int  # local attention: the KV cache stops at the window
    sliding_window: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    weights_bytes: int  # as stored (bf16)

    @property
    def embedding_bytes(self) -> int:
        """The (tied) embedding in bf16: FP8 serving leaves it unquantized."""
        return self.vocab_size * self.hidden_size * 2

    def served_weights_bytes(self, quantization: str) -> int:
        """Weights on the GPU: as stored, or FP8 linear layers beside the bf16 embedding."""
        if quantization == "fp8":
            return self.embedding_bytes + (self.weights_bytes - self.embedding_bytes) // 2
        return self.weights_bytes

    def kv_bytes_per_token_layer(self, kv_dtype: str = "bfloat16") -> int:
        """K and V of one token in one layer."""
        return 2 * self.kv_heads * self.head_dim * DTYPE_BYTES[kv_dtype]

    def sequence_kv_bytes(self, tokens: int, kv_dtype: str = "bfloat16") -> int:
        """KV cache of one sequence of `tokens` tokens (sliding layers capped at the window)."""
        per = self.kv_bytes_per_token_layer(kv_dtype)
        return per * (
            self.full_layers * tokens + self.sliding_layers * min(tokens, self.sliding_window)
        )


def shape_of_config(text: dict, name: str, weights_bytes: int) -> ModelShape:
    """The ModelShape of a Gemma 3 text config (a config.json's text_config, or the whole
    config of a text-only model) whose weights take `weights_bytes`."""
    layers = int(text["num_hidden_layers"])
    types = text.get("layer_types") or ["full_attention"] * layers
    sliding = sum(1 for t in types if t == "sliding_attention")
    heads = int(text.get("num_attention_heads", 1))
    return ModelShape(
        name=name,
        full_layers=layers - sliding,
        sliding_layers=sliding,
        sliding_window=int(text.get("sliding_window") or 0),
        kv_heads=int(text.get("num_key_value_heads", heads)),
        head_dim=int(text.get("head_dim") or text["hidden_size"] // heads),
        hidden_size=int(text["hidden_size"]),
        vocab_size=int(text["vocab_size"]),
        weights_bytes=weights_bytes,
    )


def shape_of_folder(folder: Path) -> ModelShape:
    """The ModelShape of a model folder: config.json (its text_config when multimodal) and the
    size of its safetensors files."""
    config = json.loads((Path(folder) / "config.json").read_text())
    weights = sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
    return shape_of_config(config.get("text_config") or config, Path(folder).name, weights)


# google/medgemma-4b-it's language model, the shape the dry run assumes before make convert-base
# has written the folder: Gemma 3 4B's text dimensions (training.bench_training, the one place
# they are written), every sixth layer global, 3.88e9 parameters in bf16.
MEDGEMMA_4B_TEXT = shape_of_config(
    {
        **GEMMA3_4B_TEXT,
        "layer_types": [
            "full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
            for i in range(GEMMA3_4B_TEXT["num_hidden_layers"])
        ],
    },
    "medgemma-4b-it (text)",
    7_760_000_000,
)


def overhead_bytes(shape: ModelShape, max_num_seqs: int) -> int:
    """CUDA context, workspaces and graphs, plus the sampler's float32 logits and probabilities
    for max_num_seqs sequences (vLLM's start-up warm-up allocates them)."""
    return int(CUDA_FIXED_OVERHEAD_GB * GB) + 2 * 4 * max_num_seqs * shape.vocab_size


class MemoryPlanError(ValueError):
    """The budget cannot hold the weights and one full-length sequence; names the fix."""


@dataclass(frozen=True)
class MemoryPlan:
    """The figures the launcher prints at start and passes to vLLM."""

    model: str
    quantization: str
    budget_gb: float
    weights_gb: float
    overhead_gb: float
    kv_cache_bytes: int
    max_num_seqs: int
    max_model_len: int
    max_tokens_in_flight: int  # every token in every layer (short sequences)
    full_length_sequences: int  # sequences of max_model_len the KV cache holds at once

    @property
    def kv_cache_gb(self) -> float:
        return self.kv_cache_bytes / GB

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.kv_cache_gb + self.overhead_gb

    def lines(self) -> list[str]:
        """The plan as the launcher prints it."""
        return [
            f"memory plan ({self.model}, {self.quantization} weights, budget {self.budget_gb:.1f} GB):",
            f"  weights {self.weights_gb:.2f} GB + KV cache {self.kv_cache_gb:.2f} GB + overhead "
            f"{self.overhead_gb:.2f} GB = {self.total_gb:.2f} GB",
            f"  max sequences {self.max_num_seqs} · max tokens in flight {self.max_tokens_in_flight:,} "
            f"· {self.full_length_sequences} sequence(s) of {self.max_model_len} tokens at once",
        ]

    def as_dict(self) -> dict:
        return {**asdict(self), "kv_cache_gb": self.kv_cache_gb, "total_gb": self.total_gb}


def plan_memory(
    shape: ModelShape,
    *,
    budget_gb: float = DEFAULT_BUDGET_GB,
    max_num_seqs: int,
    max_model_len: int,
    quantization: str = "none",
) -> MemoryPlan:
    """KV cache = budget - weights - overhead, and no more than max_num_seqs full-length
    sequences need. Raises MemoryPlanError when one sequence of max_model_len does not fit."""
    weights = shape.served_weights_bytes(quantization)
    overhead = overhead_bytes(shape, max_num_seqs)
    room = int(budget_gb * GB) - weights - overhead
    one = shape.sequence_kv_bytes(max_model_len)
    if room < one:
        raise MemoryPlanError(
            f"a {budget_gb:.1f} GB budget leaves {max(room, 0) / GB:.2f} GB of KV cache after "
            f"{weights / GB:.2f} GB of weights and {overhead / GB:.2f} GB of overhead, less than "
            f"one sequence of {max_model_len} tokens needs ({one / GB:.2f} GB): set "
            "VLLM_QUANTIZATION=fp8, lower VLLM_MAX_MODEL_LEN, or raise VLLM_MEMORY_BUDGET_GB"
        )
    kv = min(room, max_num_seqs * one)
    per_token = shape.kv_bytes_per_token_layer() * (shape.full_layers + shape.sliding_layers)
    return MemoryPlan(
        model=shape.name,
        quantization="fp8" if quantization == "fp8" else "bf16",
        budget_gb=budget_gb,
        weights_gb=weights / GB,
        overhead_gb=overhead / GB,
        kv_cache_bytes=kv,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
        max_tokens_in_flight=kv // per_token,
        full_length_sequences=kv // one,
    )


# --- which cards meet the seed's targets


@dataclass(frozen=True)
class Card:
    """A GPU by what the decode speed of a small batch depends on: memory and its bandwidth."""

    name: str
    memory_gb: float
    bandwidth_gbs: float  # HBM/GDDR bandwidth, GB/s (the vendor's figure)
    fp8_compute: bool  # Ada/Hopper: FP8 matmuls; Ampere runs FP8 weights as W8A16 (Marlin)


CARDS = (
    Card("L4 24 GB", 24, 300, True),
    Card("A10G 24 GB", 24, 600, False),
    Card("A100 40 GB", 40, 1555, False),
    Card("A100 80 GB", 80, 2039, False),
    Card("H100 80 GB (SXM)", 80, 3350, True),
)
# Decode reads every weight once per token; small batches reach about this share of the
# bandwidth. Prefill of the ~600-token prompt is compute-bound and adds PREFILL_S.
BANDWIDTH_EFFICIENCY = 0.75
PREFILL_S = 0.08
ANSWER_TOKENS_P50 = 60  # the diagnostic's JSON in MedGemma's tokens
ANSWER_TOKENS_P99 = 100


@dataclass(frozen=True)
class Targets:
    """The seed's P50, P99 (seconds) and serving-memory (GB) targets."""

    p50_s: float
    p99_s: float
    memory_gb: float


def seed_targets(path: Path = GATE_CONFIG) -> Targets:
    """The production targets of configs/release_gate.yaml (latency in ms there)."""
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    target = {t["metric"]: float(t["target"]) for t in [*doc["thresholds"], *doc["serving"]]}
    return Targets(
        target["latency_p50_ms"] / 1000,
        target["latency_p99_ms"] / 1000,
        target["serving_memory_gb"],
    )


def latency_s(weights_bytes: int, card: Card, tokens: int) -> float:
    """PREFILL_S + tokens x weights / (BANDWIDTH_EFFICIENCY x bandwidth)."""
    return PREFILL_S + tokens * weights_bytes / (BANDWIDTH_EFFICIENCY * card.bandwidth_gbs * GB)


def card_rows(shape: ModelShape = MEDGEMMA_4B_TEXT, targets: Targets | None = None) -> list[dict]:
    """One row per card and weight format: computed P50, P99 and serving memory under the default
    plan, each against the seed's target (`targets`: the release gate's)."""
    targets = targets or seed_targets()
    rows = []
    for card in CARDS:
        for quantization in ("none", "fp8"):
            plan = plan_memory(
                shape,
                max_num_seqs=DEFAULT_MAX_NUM_SEQS,
                max_model_len=DEFAULT_MAX_MODEL_LEN,
                quantization=quantization,
            )
            weights = shape.served_weights_bytes(quantization)
            p50 = latency_s(weights, card, ANSWER_TOKENS_P50)
            p99 = latency_s(weights, card, ANSWER_TOKENS_P99)
            rows.append(
                {
                    "card": card.name,
                    "weights": plan.quantization,
                    "p50_s": round(p50, 2),
                    "p99_s": round(p99, 2),
                    "memory_gb": round(plan.total_gb, 1),
                    "p50_ok": p50 < targets.p50_s,
                    "p99_ok": p99 < targets.p99_s,
                    "memory_ok": plan.total_gb < targets.memory_gb
                    and plan.total_gb < card.memory_gb,
                }
            )
    return rows


def cards_table(rows: list[dict], targets: Targets | None = None) -> str:
    """The rows as the Markdown table of docs/serving.md, the targets in its header."""
    t = targets or seed_targets()
    mark = {True: "✓", False: "✗"}
    lines = [
        f"| card | weights | P50 (< {t.p50_s:g} s) | P99 (< {t.p99_s:g} s) | "
        f"serving memory (< {t.memory_gb:g} GB) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['card']} | {r['weights']} | {r['p50_s']:.2f} s {mark[r['p50_ok']]} | "
            f"{r['p99_s']:.2f} s {mark[r['p99_ok']]} | {r['memory_gb']:.1f} GB {mark[r['memory_ok']]} |"
        )
    return "\n".join(lines)


@dataclass
class PlanConfig:
    """What `python -m serve.memory_plan` plans: a shape and the engine's limits, or the cards."""

    model: Path | None = None  # a model folder; default: MedGemma 4B's shape
    budget_gb: float = DEFAULT_BUDGET_GB
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    quantization: str = "none"
    cards: bool = False  # the table of cards (docs/serving.md)


def main(cfg: PlanConfig, settings: Settings) -> int:
    """Print the plan of MedGemma's text model (or a folder), or the table of cards, then its
    JSON line. The plan is the flags' alone: `settings` are not read (one entry shape)."""
    if cfg.cards:
        rows = card_rows()
        print(cards_table(rows))
        print(json.dumps(rows))
        return 0
    shape = shape_of_folder(cfg.model) if cfg.model else MEDGEMMA_4B_TEXT
    try:
        plan = plan_memory(
            shape,
            budget_gb=cfg.budget_gb,
            max_num_seqs=cfg.max_num_seqs,
            max_model_len=cfg.max_model_len,
            quantization=cfg.quantization,
        )
    except MemoryPlanError as error:
        log.error("%s", error)
        return 1
    print("\n".join(plan.lines()))
    print(json.dumps(plan.as_dict()))
    return 0


def parse_args(argv: list[str] | None = None) -> PlanConfig:
    """Command-line flags → PlanConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: MedGemma 4B's shape)")
    parser.add_argument("--budget-gb", type=float, default=PlanConfig.budget_gb)
    parser.add_argument("--max-num-seqs", type=int, default=PlanConfig.max_num_seqs)
    parser.add_argument("--max-model-len", type=int, default=PlanConfig.max_model_len)
    parser.add_argument("--quantization", choices=("none", "fp8"), default="none")
    parser.add_argument("--cards", action="store_true", help="the table of cards (docs)")
    return PlanConfig(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
