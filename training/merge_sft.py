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
import sys
from pathlib import Path

from aria.settings import Settings, get_settings
from training.config import parse_sft_args
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


def main(argv: list[str] | None = None, settings: Settings | None = None) -> dict:
    """Merge the last SFT adapter again as the recipe's merge does: its base, adapter, output
    folder, parity tolerance and eval-split probes. Exit non-zero, naming the cause, on failure.
    `argv`: train-sft's flags (default sys.argv); `settings`: the environment's
    (aria.settings.get_settings()) unless given."""
    # The merge trains nothing: bf16 mixed precision (refused on a CPU by the Trainer) is moot.
    settings = settings or get_settings()
    args = list(sys.argv[1:] if argv is None else argv)
    script_args, training_args, model_args = parse_sft_args(
        [*args, "--bf16", "false"], settings=settings
    )
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
    print(f"merged {adapter} into {base} → {out} (on {report['device']})")
    print(
        f"parity: greedy token agreement {report['greedy_token_agreement']}, decisive flips "
        f"{report['decisive_flips']}, max |logit diff| {report['max_abs_logit_diff']} = "
        f"{report['relative_logit_diff']:.2%} of {report['logit_scale']} "
        f"(tolerance {report['tolerance']:.2%})"
    )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    settings = get_settings()
    main(sys.argv[1:], settings)
