"""Merge the last SFT adapter into the bf16 base again, with the parity check, as aria-ft-sft.

    python -m scripts.merge_sft                      # make merge-sft
    python -m scripts.merge_sft --adapter data/checkpoints/tiny/sft --out /tmp/aria-ft-sft

`make train-sft` already merges; this re-runs only the merge (after an interrupted merge, or to
publish an adapter trained elsewhere). The previous aria-ft-sft stays untouched unless the new
merge passes parity; the parity numbers go to merge_parity.json next to the model.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from aria.files import read_jsonl


@dataclass
class MergeConfig:
    """Which base and adapter to merge, where to publish, and the parity tolerance."""

    base: str | None = None  # default: the profile's base model
    adapter: Path | None = None  # default: data/checkpoints/<profile>/sft
    out: Path | None = None  # default: data/models/<profile>/aria-ft-sft
    probes_from: Path | None = None  # default: data/training/sft.jsonl (its first prompts)
    n_probes: int = 4
    tolerance: float = 0.5


def main(cfg: MergeConfig) -> dict:
    """Merge, check parity, publish atomically; exit non-zero with the numbers on drift."""
    from aria.settings import get_settings
    from training.config import checkpoints_dir
    from training.merge import MergeParityError, merge_adapter
    from training.preflight import hub_token, require_dataset, require_model

    settings = get_settings()
    base = require_model(cfg.base or settings.stage_model("base"), "base")
    adapter = cfg.adapter or checkpoints_dir("sft")
    out = cfg.out or settings.model_dir("aria-ft-sft")
    probes_path = require_dataset(cfg.probes_from or settings.training_dir / "sft.jsonl")
    probes = [r["prompt"] for r in read_jsonl(probes_path)[: cfg.n_probes]]
    try:
        report = merge_adapter(
            base, Path(adapter), Path(out), probes, cfg.tolerance, token=hub_token()
        )
    except MergeParityError as error:
        raise SystemExit(str(error)) from None
    print(f"merged {adapter} into {base} → {out}")
    print(
        f"parity: greedy token agreement {report['greedy_token_agreement']}, decisive flips "
        f"{report['decisive_flips']}, max |logit diff| {report['max_abs_logit_diff']} "
        f"(tolerance {report['tolerance']})"
    )
    print(json.dumps(report))
    return report


def parse_args(argv: list[str] | None = None) -> MergeConfig:
    """Command-line flags → MergeConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="bf16 base model (folder or Hub id)")
    parser.add_argument(
        "--adapter", type=Path, default=None, help="folder with adapter_config.json"
    )
    parser.add_argument("--out", type=Path, default=None, help="where the merged model goes")
    parser.add_argument("--probes-from", type=Path, default=None, help="JSONL with 'prompt' lists")
    parser.add_argument("--n-probes", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=0.5, help="max |logit diff| allowed")
    a = parser.parse_args(argv)
    return MergeConfig(a.base, a.adapter, a.out, a.probes_from, a.n_probes, a.tolerance)


if __name__ == "__main__":
    main(parse_args())
