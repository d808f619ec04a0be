"""Merge the last SFT adapter into its bf16 base again, parity checked, as train-sft's merge does.

    python -m training.merge_sft                     # make merge-sft (recipe of ARIA_PROFILE)
    python -m training.merge_sft --merged_dir /tmp/aria-ft-sft

The arguments are train-sft's (the profile's sft.yaml, command-line flags on top): its base, its
adapter (output_dir), its merged folder, its parity tolerance and the probes of its eval split.
The new folder keeps the training files of the one it replaces (training_metrics.json, with the
new parity report, loss.png, the TensorBoard runs, the model card). The merge library is
training/merge.py.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from training.config import SFTScriptArguments, parse_sft_args
from training.merge import (
    AdapterKeyError,
    MergeParityError,
    keep_training_files,
    merge_adapter,
    parity_probes,
)
from training.preflight import hub_access, hub_token, local_model, require_dataset, require_model
from training.stages import load_splits
from training.train_sft import sft_record

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None, *, settings: Settings):
    """train-sft's (script args, SFTConfig, ModelConfig) from its recipe and `argv` (default
    sys.argv), without bf16 mixed precision: the merge trains nothing, and the Trainer refuses
    bf16 on a CPU."""
    args = list(sys.argv[1:] if argv is None else argv)
    return parse_sft_args([*args, "--bf16", "false"], settings=settings)


def main(script_args: SFTScriptArguments, training_args, model_args, settings: Settings) -> dict:
    """Merge the last SFT adapter again as the recipe's merge does: its base, adapter, output
    folder, parity tolerance and eval-split probes; returns the parity report. Exit non-zero,
    naming the cause, on failure. `settings` are the ones the arguments were parsed with."""
    base = require_model(model_args.model_name_or_path, "base", settings)
    base = local_model(base, settings, model_args.model_revision)
    adapter, out = Path(training_args.output_dir), Path(script_args.merged_dir)
    sft_path = require_dataset(Path(script_args.sft_path))
    train_set, eval_set = load_splits(
        sft_path, sft_record, script_args.eval_size, training_args.seed
    )
    probes = parity_probes(eval_set if eval_set is not None else train_set)
    try:
        with hub_access(base, settings):
            report = merge_adapter(
                base,
                adapter,
                out,
                probes,
                script_args.parity_tolerance,
                keep_training_files(out),
                hub_token(settings),
                model_args.model_revision,
            )
    except (MergeParityError, AdapterKeyError) as error:
        raise SystemExit(str(error)) from None
    log.info("merged %s into %s → %s (on %s)", adapter, base, out, report["device"])
    log.info(
        "parity: greedy token agreement %s, decisive flips %s, max |logit diff| %s = %.2f%% of %s "
        "(tolerance %.2f%%)",
        report["greedy_token_agreement"],
        report["decisive_flips"],
        report["max_abs_logit_diff"],
        100 * report["relative_logit_diff"],
        report["logit_scale"],
        100 * report["tolerance"],
    )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(*parse_args(settings=settings), settings)
